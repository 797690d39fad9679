"""Soak the gateway: minutes of steady mixed load on a fleet of real Triton servers, the gateway's RSS,
descriptors and threads sampled (tritonfleet/soak.py does the work; this starts the fleet and writes
the report).

    .venv/bin/python -m bench.soak.run --minutes 10 --out soak.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tritonfleet.soak import SoakLoad, SoakPlan, run_soak, soak_fleet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--image-rate", type=float, default=SoakLoad.image_rate)
    parser.add_argument("--cameras", type=int, default=SoakLoad.cameras)
    parser.add_argument("--camera-fps", type=float, default=SoakLoad.camera_fps)
    parser.add_argument("--out", type=Path, default=Path("soak.json"))
    args = parser.parse_args(argv)
    plan = SoakPlan(args.minutes * 60, args.warmup_minutes * 60, args.sample_s,
                    SoakLoad(image_rate=args.image_rate, cameras=args.cameras, camera_fps=args.camera_fps))

    def show(figures: dict) -> None:
        print(f"{figures['t_s']:7.1f} s  rss {figures['rss_bytes'] / 2**20:7.1f} MiB  fds {figures['fds']:4d}  "
              f"threads {figures['threads']:3d}  calls {sum(figures['calls'].values()):6d}  "
              f"errors {sum(figures['errors'].values())}", flush=True)

    with tempfile.TemporaryDirectory(prefix="tritonfleet-soak-") as workdir:
        with soak_fleet(Path(workdir), args.servers) as gateway:
            report = run_soak(gateway, plan, on_sample=show)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    growth = report["growth"]
    print(f"RSS {growth['rss_at_warmup_bytes'] / 2**20:.1f} -> {growth['rss_at_end_bytes'] / 2**20:.1f} MiB "
          f"({growth['rss_growth_percent']:+.2f} %), fds {growth['fds_at_warmup']} -> {growth['fds_at_end']}, "
          f"errors {sum(report['errors'].values())}: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
