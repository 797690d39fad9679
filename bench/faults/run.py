"""Fault runs of issue 18: each fault on a fresh fleet (three real Triton servers, the gateway), under
open-loop load at 70% of the fleet's measured capacity, the fault injected at a fixed point.

    .venv/bin/python -m bench.faults.run --out results.json [--only NAME ...] [--duration S] [--rate R]

For each fault: the load (req/s), duration, requests sent, failed (by status), retried (the gateway's
tritonfleet_gateway_retries_total over the run), p99 before and during the fault (latency from each
request's scheduled time, open loop), the time to eject (fault -> the gateway stops counting the pod
as up) and to take back (fault lifted -> the pod up again and answering). Prints a markdown table.
Every process is stopped at the end of its fault, also on error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.faults.fleet import running_fleet
from bench.faults.load import closed_loop_rate, slow_request
from bench.faults.report import markdown_table
from bench.faults.scenarios import BASE_DELAY_MS, FAULTS

LOAD_SHARE = 0.7
CAPACITY_CONCURRENCY = 48  # 3 servers x 4 instances of `slow`, four times over: the servers are the limit
CAPACITY_SECONDS = 4.0


def measure_capacity(workdir: Path) -> float:
    """Answers a second through the gateway with the servers saturated (closed loop)."""
    with running_fleet(workdir) as fleet:
        body = slow_request(BASE_DELAY_MS)
        asyncio.run(closed_loop_rate(fleet.gateway.url, body, 12, 1.0))  # warm every model instance
        return asyncio.run(closed_loop_rate(fleet.gateway.url, body, CAPACITY_CONCURRENCY, CAPACITY_SECONDS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where the JSON results go")
    parser.add_argument("--only", action="append", choices=sorted(FAULTS), help="run only this fault (repeatable)")
    parser.add_argument("--duration", type=float, help="hold each fault about this long (s) instead of its default")
    parser.add_argument("--rate", type=float, help="a fixed load in req/s instead of 70%% of the measured capacity")
    parser.add_argument("--workdir", type=Path, help="keep the servers' and the gateway's logs here (default: a"
                        " temporary folder, removed at the end)")
    args = parser.parse_args(argv)
    names = args.only or list(FAULTS)
    runs, errors = [], {}
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        workdir = args.workdir or Path(tmp)
        capacity = None
        if args.rate is None:
            capacity = measure_capacity(workdir / "capacity")
        rate = args.rate or round(LOAD_SHARE * capacity)
        print(f"capacity {capacity and round(capacity)} req/s, load {rate} req/s", flush=True)
        for name in names:
            started = time.monotonic()
            try:
                record = FAULTS[name](workdir / name, rate, args.duration)
            except Exception:  # noqa: BLE001 - one fault's error is reported, the others still run
                errors[name] = traceback.format_exc()
                print(f"{name}: ERROR\n{errors[name]}", file=sys.stderr, flush=True)
                continue
            record["wall_s"] = round(time.monotonic() - started, 1)
            runs.append(record)
            print(f"{name}: {json.dumps(record)}", flush=True)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
              "command": " ".join(["python -m bench.faults.run", *(argv if argv is not None else sys.argv[1:])]),
              "capacity_rps": capacity, "load_share": LOAD_SHARE if capacity else None, "base_delay_ms": BASE_DELAY_MS,
              "runs": runs, "errors": errors}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(runs))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
