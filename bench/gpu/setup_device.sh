#!/usr/bin/env bash
# On the GPU machine: unpack what bench/gpu/build_carry.py built, make the stubs' environment and
# render the gpu model repository from the tree that travelled with this call.
#
#     bench/gpu/setup_device.sh [CARRY] [ROOT]       (defaults: .gpu-carry, /tmp/gpu)
#
# Parts unpack into ROOT/site (one site folder for everything), so a part carried by an earlier
# call on the same warm machine stays usable. Afterwards run Python as
#     PYTHONPATH=ROOT/site:. ROOT/stub-env/bin/python3 ...
# (bench/gpu/run_fleet.py does). Prints what the machine has, for the record.
set -euo pipefail
carry=${1:-.gpu-carry}
root=${2:-/tmp/gpu}
site=$root/site
mkdir -p "$site"
for archive in "$carry"/*/*.tar.xz; do
  [ -e "$archive" ] || continue
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' "$archive" "$site"
  echo "unpacked $archive"
done
bench/models/gpu_env.sh "$site" "$root/stub-env"
PYTHONPATH="$site:." "$root/stub-env/bin/python3" -m tritonfleet.cli render-models --profile gpu --out "$root/repository"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
PYTHONPATH="$site:." "$root/stub-env/bin/python3" - <<'EOF'
import importlib, platform
versions = {"python": platform.python_version()}
for name in ("numpy", "torch", "torchvision", "triton", "grpc", "google.protobuf", "tritonclient", "av", "PyNvVideoCodec"):
    try:
        module = importlib.import_module(name)
        versions[name] = getattr(module, "__version__", "?")
    except Exception as exc:  # recorded: a missing piece shows here, not mid-run
        versions[name] = f"missing ({type(exc).__name__}: {exc})"
print("device packages:", versions)
EOF
