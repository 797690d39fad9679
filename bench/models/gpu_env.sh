#!/usr/bin/env bash
# A Python environment for the Triton 2.51 Python-backend stubs on the GPU machine.
#
#     bench/models/gpu_env.sh SITE [ENV]    then run the benchmark with ENV/bin/python3
#
# The stub ignores PYTHONPATH: it builds sys.path from the `python3` first on PATH (the launcher
# puts the running interpreter's folder there). Its pybind11 predates numpy 2 and copies BYTES
# tensors wrongly under it (every byte becomes the first one), so the stub needs numpy<2 while the
# machine's interpreter carries numpy 2. ENV is a virtual environment over the machine's Python
# whose site-packages see, through a .pth file, SITE first (the unpacked wheels: numpy 1.26.4,
# PyNvVideoCodec, PyAV, tritonclient) and then everything the machine's interpreter has (torch,
# torchvision, triton), so the stubs import the carried packages.
set -euo pipefail
site=$(realpath "${1:?usage: gpu_env.sh SITE [ENV]}")
env=${2:-/tmp/stub-env}
purelib='import sysconfig; print(sysconfig.get_paths()["purelib"])'
base=$(python3 -c "$purelib")
python3 -m venv --without-pip "$env"
target=$("$env/bin/python3" -c "$purelib")
printf '%s\n%s\n' "$site" "$base" >"$target/carried-then-machine.pth"
"$env/bin/python3" -c 'import numpy, torch; print("stub env:", numpy.__version__, numpy.__file__, "torch", torch.__version__)'
