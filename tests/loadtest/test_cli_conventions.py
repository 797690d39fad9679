"""What users expect of the `tritonfleet` command: `--version`, and an example under every `--help`."""

from __future__ import annotations

import argparse
import importlib.metadata
import shlex
import subprocess
import sys

from tritonfleet.cli import build_parser


def every_command(parser: argparse.ArgumentParser, path=()):
    """(command words, parser) of the root and every subcommand, however deep."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from every_command(sub, (*path, name))


def test_version_prints_the_installed_version():
    run = subprocess.run([sys.executable, "-m", "tritonfleet.cli", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0
    assert run.stdout.strip() == f"tritonfleet {importlib.metadata.version('tritonfleet')}"


def test_every_command_help_ends_with_an_example_the_parser_accepts():
    commands = list(every_command(build_parser()))
    assert len(commands) > 12  # the root, the stack's, and each part's subcommands
    for path, parser in commands:
        help_text = parser.format_help()
        assert "example:\n  tritonfleet" in help_text, f"`tritonfleet {' '.join(path)} --help` has no example"
        for line in help_text.split("example:\n", 1)[1].splitlines():
            words = shlex.split(line.split("#", 1)[0])
            if not words or words[0] != "tritonfleet" or "--help" in words:
                continue
            # The example is a command line this very parser takes (the shell would expand globs).
            args = build_parser().parse_args(words[1:])
            assert hasattr(args, "func") or not path, line
