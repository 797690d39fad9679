#!/usr/bin/env bash
# Installs the system packages the local stack uses, only where they are missing:
#   prometheus      - the real Prometheus server the local stack scrapes with
#   haproxy         - the L4 (mode tcp) proxy, what a Kubernetes Service does to gRPC: a baseline
#   libpythonX.Y    - the Triton Python-backend stub for Python X.Y links against the system libpython
#                     of that version; X.Y is the version of the interpreter given as the first
#                     argument (the venv's), or of python3
#   chromium        - headless browser that opens the HTML reports and the live dashboard in tests
# Without apt (or without root) it says what is missing and carries on: the parts that need a
# missing package are skipped by the stack and the tests, with that reason.
set -u
python="${1:-python3}"
[ -x "$python" ] || python=python3
version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
ldconfig -p 2>/dev/null | grep -qF "libpython${version}.so.1.0 " || need+=("libpython${version}")
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

echo "tritonfleet: installing system packages: ${need[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "tritonfleet: apt-get is not available; install ${need[*]} yourself. Continuing without them." >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"; } >/tmp/tritonfleet-apt.log 2>&1; then
  echo "tritonfleet: apt-get could not install ${need[*]} (see /tmp/tritonfleet-apt.log). Continuing without them." >&2
fi
# Debian starts the packaged services on install; the stack runs its own instances on loopback.
for svc in prometheus haproxy; do
  $sudo service "$svc" stop >/dev/null 2>&1
done
exit 0
