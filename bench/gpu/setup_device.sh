#!/usr/bin/env bash
# On the GPU machine: unpack what bench/gpu/build_carry.py built, make the stubs' environment and
# render the gpu model repository from the tree that travelled with this call.
#
#     bench/gpu/setup_device.sh [CARRY] [ROOT]       (defaults: .gpu-carry, /tmp/gpu)
#
# Parts unpack into ROOT/site (one site folder for everything), so a part carried by an earlier
# call on the same warm machine stays usable. The stubs' environment and the repository need the
# server and base parts (the Triton server; numpy<2, tritonclient); without them only the other parts are unpacked. Afterwards run Python as
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
if [ -d "$site/pytriton" ]; then
  bench/models/gpu_env.sh "$site" "$root/stub-env"
  PYTHONPATH="$site:." "$root/stub-env/bin/python3" -m tritonfleet.cli render-models --profile gpu --out "$root/repository"
  python=$root/stub-env/bin/python3
else
  python=python3
fi
python3 -c 'import grpc, google.protobuf as p, numpy; print("machine\x27s own: grpc", grpc.__version__, "protobuf", p.__version__, "numpy", numpy.__version__)' || true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# tritonfleet.processes starts every server through util-linux's setpriv.
echo "setpriv: $(command -v setpriv || echo 'missing: run_fleet cannot start servers')"
PYTHONPATH="$site:." "$python" - <<'EOF'
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
