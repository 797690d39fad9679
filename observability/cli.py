"""CLI: `tritonfleet dashboard` (the live page) and `tritonfleet render-dashboards` (generated files)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    live = subparsers.add_parser(
        "dashboard", help="serve the Grafana dashboards' panels live from Prometheus on a loopback page",
        epilog="example:\n  tritonfleet dashboard --prometheus http://127.0.0.1:9090 --port 8765",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    live.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    live.add_argument("--port", type=int, default=8765, help="loopback port of the page (0: any free port)")
    live.add_argument("--rate-interval", default="1m", help="window of rate() in the panels' queries")
    live.add_argument("--range", dest="range_s", type=int, default=900, help="seconds of history drawn")
    live.set_defaults(func=run_dashboard)

    render = subparsers.add_parser(
        "render-dashboards", help="write Grafana JSON, Prometheus rules and the runbook; optionally panel PNGs",
        epilog="example:\n  tritonfleet render-dashboards --check",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    render.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a generated file is missing or out of date")
    render.add_argument("--prometheus", help="with --png-dir: Prometheus to read the panels' data from")
    render.add_argument("--png-dir", type=Path, help="write PNGs of the key panels here (e.g. docs/img)")
    render.add_argument("--range", dest="range_s", type=int, default=600, help="seconds of history in PNGs")
    render.add_argument("--rate-interval", default="1m", help="window of rate() in the PNGs' queries")
    render.set_defaults(func=run_render)


def run_dashboard(args: argparse.Namespace) -> int:
    from observability.live_server import make_server

    try:
        server = make_server(args.prometheus, args.port, args.rate_interval, args.range_s)
    except (ValueError, OSError) as exc:
        print(f"tritonfleet dashboard: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"tritonfleet dashboard: http://{host}:{port}/ (Prometheus {args.prometheus}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def run_render(args: argparse.Namespace) -> int:
    from observability.render import generated_files, write_all

    if args.check:
        stale = [str(path) for path, text in generated_files().items()
                 if not path.exists() or path.read_text() != text]
        for path in stale:
            print(f"out of date: {path} (run `tritonfleet render-dashboards`)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all():
        print(f"wrote {path}")
    if args.png_dir:
        if not args.prometheus:
            print("tritonfleet render-dashboards: --png-dir needs --prometheus", file=sys.stderr)
            return 2
        from observability.png import render_key_panels
        from observability.prometheus_api import PrometheusError

        try:
            written, empty = render_key_panels(args.prometheus, args.png_dir, args.range_s, args.rate_interval)
        except PrometheusError as exc:
            print(f"tritonfleet render-dashboards: {exc}", file=sys.stderr)
            return 1
        for path in written:
            print(f"wrote {path}")
        for title in empty:
            print(f"skipped {title!r}: no data in the last {args.range_s} s")
    return 0
