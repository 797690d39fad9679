#!/usr/bin/env bash
# Builds the tritonfleet images daemonless (podman build, i.e. buildah) from pinned inputs:
#   1. a Debian bookworm base from Debian's packages (mmdebstrap, then podman import; no registry);
#   2. a wheelhouse on the host: every pin of requirements.lock plus the project's own wheel, so the
#      image builds install exactly the lock with --no-index;
#   3. the Triton image and the app image from deploy/docker/*.Dockerfile on that base;
#   4. one OCI archive per image in build/images/ (docker load, podman load, skopeo copy take them).
# Each image's tag is a hash of its inputs, so a second run with nothing changed builds nothing.
#
#   deploy/docker/build-images.sh [--variant cpu|gpu] [--no-archives]
# Prints the image names it made, one a line, last. Tags `localhost/tritonfleet/<image>:<variant>`
# point at the newest build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
VARIANT=cpu
ARCHIVES=1
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) VARIANT=$2; shift 2 ;;
    --no-archives) ARCHIVES=0; shift ;;
    *) echo "build-images.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$VARIANT" in
  cpu) PROFILE=cpu; TORCH=torch==2.13.0+cpu; DEPS=--no-deps ;;
  gpu) PROFILE=gpu; TORCH=torch==2.13.0; DEPS="" ;;
  *) echo "build-images.sh: --variant must be cpu or gpu" >&2; exit 2 ;;
esac
PIP=${PIP:-$ROOT/.venv/bin/pip}
OUT=$ROOT/build/images
WHEELS=$ROOT/build/wheelhouse/$VARIANT
mkdir -p "$OUT" "$WHEELS"
deploy/scripts/install-container-tools.sh

log() { echo "build-images: $*" >&2; }
hash_of() { sha256sum "$@" | sha256sum | cut -c1-12; }

# -- 1. the base. Debian's packages are not pinned by version; the tag pins the package list.
BASE_PACKAGES="python3,python3-venv,libpython3.11,ca-certificates"
BASE=localhost/tritonfleet-base:$(echo "bookworm minbase $BASE_PACKAGES" | sha256sum | cut -c1-12)
if ! podman image exists "$BASE"; then
  log "base $BASE from Debian bookworm (mmdebstrap)"
  mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" bookworm "$OUT/base-rootfs.tar"
  podman import --quiet --change 'CMD ["/bin/bash"]' "$OUT/base-rootfs.tar" "$BASE" >/dev/null
  rm -f "$OUT/base-rootfs.tar"
fi

# -- 2. the wheelhouse: the lock's pins (built here where a package has no wheel) and our own wheel.
LOCK=requirements.lock
if [ "$VARIANT" = gpu ]; then
  # torch's CUDA build and its nvidia-* wheels come from PyPI itself; this machine's pip
  # configuration points at a CPU build on disk, which a plain `torch==2.13.0` would match.
  grep -v '^torch==' requirements.lock > "$WHEELS/gpu.lock"
  echo "$TORCH" >> "$WHEELS/gpu.lock"
  LOCK=$WHEELS/gpu.lock
fi
wheel_stamp=$WHEELS/.lock-$(hash_of "$LOCK")
if [ ! -f "$wheel_stamp" ]; then
  log "wheelhouse $WHEELS from $LOCK"
  if [ "$VARIANT" = gpu ]; then
    env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$PIP" wheel -q --disable-pip-version-check \
      -w "$WHEELS" -r "$LOCK"
  else
    # torch's +cpu build is on PyTorch's own index, not PyPI: asked for only where pip's own
    # sources (this machine's wheel store, a mirror, its cache) lack it.
    "$PIP" wheel -q --disable-pip-version-check --no-deps -w "$WHEELS" -r "$LOCK" 2>/dev/null \
      || "$PIP" wheel -q --disable-pip-version-check --no-deps -w "$WHEELS" -r "$LOCK" \
           --extra-index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
  fi
  touch "$wheel_stamp"
fi
rm -f "$WHEELS"/tritonfleet-*.whl
"$PIP" wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$WHEELS" . >/dev/null
rm -rf build/lib build/bdist.*

# -- 3. the images; each tag hashes its recipe, the base, the lock and the sources it takes in.
sources_hash() {
  git ls-files -co --exclude-standard -- "$@" | grep -v __pycache__ | sort | xargs sha256sum | sha256sum | cut -c1-12
}
CODE=(pyproject.toml tritonfleet kernels models gateway loadtest observability)
build() {  # build <image> <extra inputs...>
  local image=$1; shift
  local recipe=deploy/docker/$image.Dockerfile
  local tag
  tag=$VARIANT-$(echo "$BASE $(sources_hash "$recipe" "$LOCK" "${CODE[@]}" "$@")" | sha256sum | cut -c1-12)
  local name=localhost/tritonfleet/$image:$tag
  if ! podman image exists "$name"; then
    log "image $name"
    podman build --quiet --runtime runc --network host --layers \
      -f "$recipe" --ignorefile "$recipe.dockerignore" \
      --build-arg BASE_IMAGE="$BASE" --build-arg VARIANT="$VARIANT" \
      --build-arg PROFILE="$PROFILE" --build-arg TORCH="$TORCH" --build-arg DEPS="$DEPS" \
      -t "$name" . >/dev/null
  fi
  podman tag "$name" "localhost/tritonfleet/$image:$VARIANT"
  # Older builds of this image and variant go (their shared layers stay); one still in use stays too.
  podman images --format '{{.Repository}}:{{.Tag}}' "localhost/tritonfleet/$image" \
    | grep ":$VARIANT-" | grep -v ":$tag\$" | xargs -r podman rmi >/dev/null 2>&1 || true
  if [ "$ARCHIVES" = 1 ] && [ ! -f "$OUT/$image-$tag.oci.tar" ]; then
    rm -f "$OUT/$image-$VARIANT-"*.oci.tar
    podman save --quiet --format oci-archive -o "$OUT/$image-$tag.oci.tar" "$name"
  fi
  echo "$name"
}
build triton deploy/model-profiles.yaml model_repository
build app
