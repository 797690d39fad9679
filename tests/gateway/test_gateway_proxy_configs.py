"""The shipped Envoy and HAProxy configurations are valid for the real binaries."""

import subprocess

from tritonfleet.proxies import ENVOY_CONFIG, HAPROXY_CONFIG, envoy_binary, haproxy_binary


def test_envoy_accepts_the_shipped_config():
    result = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(ENVOY_CONFIG)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and " OK" in result.stdout + result.stderr, result.stderr[-2000:]


def test_haproxy_accepts_the_shipped_config(tmp_path):
    backends = tmp_path / "backends.cfg"
    backends.write_text("backend triton\n    server triton0 127.0.0.1:8001\n")
    result = subprocess.run([str(haproxy_binary()), "-c", "-f", str(HAPROXY_CONFIG), "-f", str(backends)],
                            capture_output=True, text=True, timeout=30, env={"HAPROXY_BIND": "127.0.0.1:18001"})
    assert result.returncode == 0, result.stdout + result.stderr
