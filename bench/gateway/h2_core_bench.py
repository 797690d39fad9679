"""The gateway's HTTP/2 core against python-hyper h2, side by side in one process, on the gateway's
own work as a server: parse N client calls (gRPC headers, then one message of 1 KiB or 150 KiB in
16 KiB DATA frames, as gRPC clients cut them, fed in 64 KiB reads as a socket hands them over), and
serialize N answers (headers, the message back, trailers): each answered as soon as its message is in
(the steady state), and all N open at once before any is answered (a burst of calls).

    python bench/gateway/h2_core_bench.py [--repeats 7] [--json results.json]

Both sides get the same bytes, acknowledge every received byte (manual flow control, as the gateway's
client connections do) and announce the same windows. h2 runs twice: as configured by default (it
validates and normalizes headers both ways) and with those checks off, the cheapest it goes. CPU time
(process_time) per message, the median of the repeats; ratios are h2's time over ours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack

from gateway.transport.h2 import DataReceived, H2Connection, H2Limits

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WINDOW = 1 << 24
READ = 1 << 16
FRAME = 16_384
REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
           (":authority", "gateway:8001"), ("content-type", "application/grpc"), ("te", "trailers"),
           ("grpc-accept-encoding", "identity,deflate,gzip"), ("user-agent", "grpc-python/1.85.3"),
           ("grpc-timeout", "59999m")]
RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]
TRAILERS = [("grpc-status", "0")]
# (message, calls, whether all calls are open at once before any is answered)
WORKLOADS = [("1 KiB", 1024, 1000, False), ("150 KiB", 150 * 1024, 64, False),
             ("1 KiB", 1024, 1000, True), ("150 KiB", 150 * 1024, 64, True)]


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def client_bytes(size: int, calls: int) -> list[bytes]:
    """What a gRPC client sends for `calls` calls of one `size`-byte message each, cut in reads."""
    encoder = hpack.Encoder()  # a client indexes: after the first call, headers are table references
    message = b"\0" + size.to_bytes(4, "big") + bytes(size)
    out = [PREFACE, _frame(4, 0, 0, struct.pack(">HI", 4, WINDOW)),
           _frame(8, 0, 0, (WINDOW - 65_535).to_bytes(4, "big"))]
    for stream_id in range(1, 2 * calls, 2):
        out.append(_frame(1, 0x4, stream_id, encoder.encode(REQUEST)))
        for offset in range(0, len(message), FRAME):
            piece = message[offset:offset + FRAME]
            out.append(_frame(0, 0x1 if offset + FRAME >= len(message) else 0, stream_id, piece))
    data = b"".join(out)
    return [data[offset:offset + READ] for offset in range(0, len(data), READ)]


class Ours:
    name = "ours"

    def __init__(self):
        self.connection = H2Connection(client=False, limits=H2Limits(initial_window_size=WINDOW,
                                                                     connection_window_size=WINDOW),
                                       manual_flow=True)
        self.connection.initiate_connection()
        self.connection.data_to_send()

    def parse(self, reads: list[bytes]) -> list[int]:
        connection, done = self.connection, []
        for read in reads:
            for event in connection.receive_data(read):
                if type(event) is DataReceived:
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if event.end_stream:
                        done.append(event.stream_id)
        return done

    def answer(self, stream_ids: list[int], message: bytes) -> int:
        connection = self.connection
        for stream_id in stream_ids:
            connection.send_headers(stream_id, RESPONSE)
            connection.send_data(stream_id, message)
            connection.send_headers(stream_id, TRAILERS, end_stream=True)
        return sum(len(chunk) for chunk in connection.data_to_send())


class Theirs:
    name = "h2"
    checks = True

    def __init__(self):
        checks = self.checks
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                           validate_outbound_headers=checks, validate_inbound_headers=checks,
                                           normalize_outbound_headers=checks, normalize_inbound_headers=checks)
        self.connection = h2.connection.H2Connection(config)
        self.connection.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 10_000})
        self.connection.initiate_connection()
        self.connection.increment_flow_control_window(WINDOW - 65_535)
        self.connection.data_to_send()

    def parse(self, reads: list[bytes]) -> list[int]:
        connection, done = self.connection, []
        for read in reads:
            for event in connection.receive_data(read):
                if isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if event.stream_ended is not None:
                        done.append(event.stream_id)
        return done

    def answer(self, stream_ids: list[int], message: bytes) -> int:
        connection = self.connection
        for stream_id in stream_ids:
            connection.send_headers(stream_id, RESPONSE)
            for offset in range(0, len(message), FRAME):  # h2 takes at most one frame per call
                connection.send_data(stream_id, message[offset:offset + FRAME])
            connection.send_headers(stream_id, TRAILERS, end_stream=True)
        return len(connection.data_to_send())


class TheirsWithoutChecks(Theirs):
    name = "h2, checks off"
    checks = False


def measure(implementation, reads: list[bytes], calls: int, message: bytes, at_once: bool) -> tuple[float, float]:
    """CPU µs per message to parse the calls and to serialize their answers, on a fresh connection:
    each call answered as soon as its message is in, or (`at_once`) all of them open together first."""
    side = implementation()
    parse_s = answer_s = 0.0
    done_all, written = [], 0
    clock = time.process_time
    for read in reads:
        start = clock()
        done = side.parse([read])
        parsed = clock()
        parse_s += parsed - start
        done_all += done
        if not at_once and done:
            written += side.answer(done, message)
            answer_s += clock() - parsed
    if at_once:
        start = clock()
        written = side.answer(done_all, message)
        answer_s = clock() - start
    assert len(done_all) == calls and written > len(message) * calls, (implementation.name, len(done_all), written)
    return parse_s * 1e6 / calls, answer_s * 1e6 / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    implementations = [Ours, Theirs, TheirsWithoutChecks]
    results = []
    for label, size, calls, at_once in WORKLOADS:
        reads = client_bytes(size, calls)
        message = b"\0" + size.to_bytes(4, "big") + bytes(size)
        runs = {implementation.name: [] for implementation in implementations}
        for _ in range(args.repeats):  # interleaved, so that a busy moment of the machine hits all alike
            for implementation in implementations:
                runs[implementation.name].append(measure(implementation, reads, calls, message, at_once))
        row = {"workload": label, "calls": calls, "open_at_once": at_once}
        for name, samples in runs.items():
            row[name] = {"parse_us": statistics.median(s[0] for s in samples),
                         "answer_us": statistics.median(s[1] for s in samples)}
        results.append(row)
    print(f"{'message':8} {'calls open':>10} {'side':16} {'parse µs/msg':>13} {'answer µs/msg':>14} {'total':>8} "
          f"{'h2/ours':>8}")
    for row in results:
        ours = row["ours"]["parse_us"] + row["ours"]["answer_us"]
        for implementation in implementations:
            figures = row[implementation.name]
            total = figures["parse_us"] + figures["answer_us"]
            open_together = str(row["calls"]) if row["open_at_once"] else "as they go"
            print(f"{row['workload']:8} {open_together:>10} {implementation.name:16} {figures['parse_us']:13.1f} "
                  f"{figures['answer_us']:14.1f} {total:8.1f} {total / ours:8.2f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"python": sys.version.split()[0], "h2": h2.__version__, "repeats": args.repeats,
                       "results": results}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
