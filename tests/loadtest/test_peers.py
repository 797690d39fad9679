"""Load generators that start together: the peers' names, then a shared beat on the wall clock."""

from __future__ import annotations

import pytest

from loadtest import peers
from tritonfleet.cli import main as tritonfleet_main


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_peers_that_resolve_start_on_the_next_beat_at_least_half_a_beat_away():
    clock = Clock(1_000_003.0)
    assert peers.start_together(["localhost", "127.0.0.1"], 5, 10, clock=clock, sleep=clock.sleep) == 1_000_010
    assert clock.now >= 1_000_010
    clock.now = 1_000_007.0  # closer to the beat than half of it: the one after
    assert peers.next_beat(clock.now, 10) == 1_000_020


def test_two_pods_that_see_their_peers_a_moment_apart_pick_the_same_beat():
    assert peers.next_beat(1_000_001.2, 10) == peers.next_beat(1_000_003.9, 10)


def test_a_peer_that_appears_later_is_waited_for():
    seen = {"peer-1": 0}

    def resolve(name: str) -> bool:
        if name == "peer-1":
            seen[name] += 1
            return seen[name] >= 3  # exists from the third look on
        return True

    peers.wait_for_peers(["peer-0", "peer-1"], timeout_s=30, poll_s=0, resolve=resolve)
    assert seen["peer-1"] == 3


def test_a_peer_that_never_appears_is_named(capsys):
    with pytest.raises(ValueError, match=r"1 of 2 peers did not appear within 0 s: peer-1\.invalid"):
        peers.wait_for_peers(["localhost", "peer-1.invalid"], timeout_s=0, poll_s=0)


def test_the_cli_refuses_to_start_without_its_peers(tmp_path, capsys):
    status = tritonfleet_main(["loadtest", "image", "--url", "127.0.0.1:1", "--rate", "1", "--duration", "1",
                            "--wait-for-peers", "localhost,peer-1.invalid", "--peers-timeout", "0",
                            "--output", str(tmp_path / "r.json")])
    assert status == 2
    assert "peer-1.invalid" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
