#!/usr/bin/env bash
# Installs the daemonless container tools `make images` and the run-the-chart test use, only where
# they are missing, and the containers.conf drop-in they need on this kind of VM:
#   podman, buildah, runc  - build and run OCI images without a Docker daemon
#   mmdebstrap             - the base image's root filesystem from Debian's packages (no registry pull)
#   skopeo                 - copy the OCI archives to a registry
# crun refuses the hybrid cgroup layout here and podman's default ulimits exceed the VM's hard
# limits (20000 open files), so the drop-in picks runc and ulimits that fit.
# Exits 1 when a tool is still missing afterwards, with what to install.
set -u
need=()
for tool in podman buildah runc mmdebstrap skopeo; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
if [ ${#need[@]} -gt 0 ]; then
  echo "tritonfleet: installing container tools: ${need[*]}"
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" uidmap; } \
      >/tmp/tritonfleet-apt-containers.log 2>&1 \
      || echo "tritonfleet: apt-get failed (see /tmp/tritonfleet-apt-containers.log)" >&2
  fi
fi
dropin=/etc/containers/containers.conf.d/50-tritonfleet.conf
if [ ! -f "$dropin" ] && [ -d /etc/containers ]; then
  $sudo mkdir -p "$(dirname "$dropin")"
  printf '%s\n' '# Written by tritonfleet deploy/scripts/install-container-tools.sh.' \
    '[containers]' 'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]' \
    '[engine]' 'runtime = "runc"' | $sudo tee "$dropin" >/dev/null
fi
missing=()
for tool in podman buildah runc mmdebstrap skopeo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "tritonfleet: missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" >&2
  exit 1
fi
