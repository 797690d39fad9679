"""`tritonfleet render-models`: write the model repository for a deployment profile."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.profiles import MODEL_REPOSITORY, PROFILES_FILE, ProfileError, render_repository


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render-models", help="write model_repository/ with a profile of deploy/model-profiles.yaml applied",
        epilog="example:\n  tritonfleet render-models --profile gpu --out build/model_repository",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profile", required=True, help="profile name, e.g. cpu or gpu")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced)")
    parser.add_argument("--profiles", type=Path, default=PROFILES_FILE, help="profiles file (default: %(default)s)")
    parser.add_argument("--source", type=Path, default=MODEL_REPOSITORY, help="repository to render (default: %(default)s)")
    parser.set_defaults(func=cmd_render_models)


def cmd_render_models(args) -> int:
    try:
        out = render_repository(args.profile, args.out, source=args.source, profiles=args.profiles)
    except ProfileError as exc:
        print(f"render-models: {exc}", file=sys.stderr)
        return 1
    print(f"rendered profile {args.profile!r} into {out}")
    return 0
