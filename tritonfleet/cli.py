"""The `tritonfleet` command: one entry point whose subcommands come from each part of the project.

Parts register their own subcommands (`register(subparsers)` in `<part>/cli.py`); this module adds
the local stack's: `servers` (just Triton servers), `up` (the whole stack until Ctrl-C) and `demo`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import signal
import sys
import threading
from pathlib import Path

from tritonfleet.paths import DEFAULT_STACK, MODEL_REPOSITORY, REPO_ROOT, RUN_DIR
from tritonfleet.prerequisites import MissingPrerequisite
from tritonfleet.stack import Stack, StackError
from tritonfleet.stack_config import StackConfigError, load_stack_config
from tritonfleet.triton_server import TritonServerError, start_fleet, stop_all

# Parts that add subcommands, in the order `--help` lists them.
PART_CLIS = ("models.cli", "gateway.cli", "loadtest.cli", "observability.cli")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (StackConfigError, StackError, TritonServerError, MissingPrerequisite) as exc:
        print(f"tritonfleet: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritonfleet", description=__doc__.splitlines()[0],
                                     epilog="example:\n  tritonfleet demo\n  tritonfleet loadtest image --help",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(metavar="COMMAND")
    _register_stack_commands(subparsers)
    for module_name in PART_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name not in (module_name, module_name.partition(".")[0]):
                raise
            continue
        module.register(subparsers)
    return parser


def version() -> str:
    try:
        return importlib.metadata.version("tritonfleet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed; run `make install`)"


def _example(text: str) -> dict:
    """add_parser keywords for an epilog with an example, kept as written."""
    return {"epilog": f"example:\n  {text}", "formatter_class": argparse.RawDescriptionHelpFormatter}


def _register_stack_commands(subparsers) -> None:
    servers = subparsers.add_parser("servers", help="start N real Triton servers on a model repository until Ctrl-C",
                                    **_example("tritonfleet servers -n 2 -- --log-verbose=1"))
    servers.add_argument("-n", "--count", type=int, default=2)
    servers.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    servers.add_argument("--workdir", type=Path, default=RUN_DIR / "servers")
    servers.add_argument("triton_args", nargs="*", help="extra tritonserver flags, after --")
    servers.set_defaults(func=cmd_servers)

    for name, func, text, example in (
        ("up", cmd_up, "run the local stack (deploy/stack.yaml) until Ctrl-C", "tritonfleet up --stack deploy/stack.yaml"),
        ("demo", cmd_demo, "start the stack, run a short load through it, print a report, stop",
         "tritonfleet demo --reports reports/"),
    ):
        sub = subparsers.add_parser(name, help=text, **_example(example))
        sub.add_argument("--stack", type=Path, default=DEFAULT_STACK, help="stack file (default: %(default)s)")
        sub.add_argument("--workdir", type=Path, default=RUN_DIR / name, help="logs and data")
        sub.set_defaults(func=func)
        if name == "demo":
            sub.add_argument("--reports", type=Path, default=REPO_ROOT / "reports", help="where the HTML reports go")
            sub.add_argument("--tls", action="store_true",
                             help="the gateway serves TLS with a throwaway CA's certificate; the demo's clients trust it")


def wait_for_signal() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so the main thread can stop in order."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_servers(args) -> int:
    stop = wait_for_signal()
    servers = start_fleet(args.count, args.model_repository, args.workdir, extra_args=args.triton_args)
    try:
        for server in servers:
            print(f"{server.name}: grpc {server.grpc_url}  http {server.http_url}  metrics {server.metrics_url}  log {server.log_path}")
        print("Ctrl-C stops them.", flush=True)
        while not stop.wait(1.0):
            dead = [s.name for s in servers if not s.is_running()]
            if dead:
                print(f"tritonfleet: {', '.join(dead)} exited; see the logs", file=sys.stderr)
                return 1
        return 0
    finally:
        stop_all(servers)


def cmd_up(args) -> int:
    config = load_stack_config(args.stack)
    stop = wait_for_signal()
    with Stack(config, args.workdir) as stack:
        for name, reason in stack.skipped.items():
            print(f"skipped {name}: {reason}")
        for key, value in stack.placeholders().items():
            print(f"{key:24} {value}")
        print("The stack is up. Ctrl-C stops it.", flush=True)
        stack.watch(stop)
    print("Stack stopped.")
    return 0


def cmd_demo(args) -> int:
    from tritonfleet.demo import run_demo

    return run_demo(load_stack_config(args.stack), args.workdir, args.reports, tls=args.tls)


if __name__ == "__main__":
    sys.exit(main())
