"""The gateway's configuration: one frozen, validated object from YAML, then environment, then flags.

Later sources win: a key in the YAML file is overridden by `TRITONFLEET_GATEWAY_<KEY>` in the
environment, which is overridden by a command-line flag. Every value is checked once, here, with a
ValueError that names the key; the rest of the gateway trusts the object.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

ENV_PREFIX = "TRITONFLEET_GATEWAY_"
DISCOVERY_KINDS = ("static", "dns", "kubernetes")
# Triton names the header of a restricted protocol's key this way (its --grpc-restricted-protocol).
TRITON_RESTRICTED_HEADER_PREFIX = "triton-grpc-protocol-"
_METADATA_KEY = re.compile(r"[a-z0-9_.-]+")


@dataclass(frozen=True)
class GatewayConfig:
    # Where clients connect (host:port) and where Prometheus scrapes (0 turns metrics off).
    listen: str = "127.0.0.1:8001"
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 8002
    # Worker processes sharing the listen port through SO_REUSEPORT; one per core is the usual choice.
    workers: int = 1
    # How pods are found: a static list, the A records of a headless Service, or its EndpointSlices.
    discovery: str = "static"
    backends: tuple[str, ...] = ()
    dns_target: str = ""
    dns_interval_s: float = 5.0
    kubernetes_namespace: str = "default"
    kubernetes_service: str = ""
    kubernetes_port_name: str = "grpc"
    # Active health checks (ServerReady, then per-model readiness) and passive ejection.
    health_interval_s: float = 1.0
    health_timeout_s: float = 1.0
    eject_base_s: float = 0.5
    eject_max_s: float = 30.0
    # Keepalive on the connections to pods: a pod silent this long while calls wait on it is pinged,
    # and a ping unanswered within the timeout drops the connection (its calls go to another pod); a
    # connection that does not open within the timeout gives its calls back the same way.
    keepalive_time_s: float = 10.0
    keepalive_timeout_s: float = 5.0
    # Retries on another pod for requests that never reached a model: at most `retry_attempts` extra
    # tries per request, and overall at most `retry_budget_ratio` retries per request plus a reserve.
    retry_attempts: int = 2
    retry_budget_ratio: float = 0.2
    retry_budget_reserve: int = 10
    # Per-pod in-flight limit (0: none); a request waits at most `queue_timeout_s` for room, and when
    # `max_queued_requests` already wait (0: no limit), it is refused at once (RESOURCE_EXHAUSTED).
    max_inflight_per_backend: int = 0
    queue_timeout_s: float = 1.0
    max_queued_requests: int = 1000
    # On SIGTERM: stop accepting, let in-flight requests and streams finish within this many seconds.
    drain_grace_s: float = 10.0
    # Model load/unload, shared memory, trace and log settings are refused unless this is on.
    allow_admin: bool = False
    # API keys (gateway/edge/access.py): set, every call but grpc.health.v1.Health needs
    # `authorization: Bearer <token>` of a key in this YAML file, which limits its models, its rate and
    # its admin right. The file is looked at every reload_interval_s; one that fails to load keeps the
    # keys in force.
    api_keys_file: str = ""
    # "key=value" of Triton's --grpc-restricted-protocol=<protocols>:<key>=<value>: the gateway sends
    # `triton-grpc-protocol-<key>: <value>` (the header Triton asks for) with the admin calls and
    # repository index it sends to the pods. Empty: none.
    triton_admin_header: str = ""
    # Limits at the edge. A message larger than max_message_bytes is refused (RESOURCE_EXHAUSTED) from
    # its prefix, before its bytes are held; a worker holds at most max_buffered_bytes of request bytes,
    # plus what clients had been granted already (one 16 MiB window per connection at most): beyond it,
    # clients get no more flow-control window until calls finish; each client
    # connection may have max_concurrent_streams calls open and send header lists of
    # max_header_list_bytes (both announced in SETTINGS).
    max_message_bytes: int = 256 * 1024 * 1024
    max_buffered_bytes: int = 1024 * 1024 * 1024
    max_concurrent_streams: int = 1000
    max_header_list_bytes: int = 16 * 1024
    # Clients: one silent this long with calls open is pinged, and disconnected (its calls cancelled)
    # when the ping is unanswered within the timeout; one with no call open for client_idle_timeout_s
    # is sent GOAWAY. After max_connection_age_s a connection is sent GOAWAY, its calls given
    # max_connection_age_grace_s to finish, so that long-lived channels spread over replicas. 0: off.
    client_keepalive_time_s: float = 30.0
    client_keepalive_timeout_s: float = 10.0
    client_idle_timeout_s: float = 300.0
    max_connection_age_s: float = 0.0
    max_connection_age_grace_s: float = 30.0
    # TLS toward clients: both files set turn it on (ALPN h2, TLS 1.2+); a client CA makes it mutual.
    # These files and the API-keys file are looked at every reload_interval_s and, when they changed,
    # apply to new connections (TLS) and calls (keys).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    reload_interval_s: float = 5.0
    # TLS toward the pods (Triton's --grpc-use-ssl): their CA (empty: system roots), the gateway's
    # client certificate when they require one, and the name checked in theirs (empty: the pod's host).
    upstream_tls: bool = False
    upstream_ca_file: str = ""
    upstream_cert_file: str = ""
    upstream_key_file: str = ""
    upstream_server_name: str = ""
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def triton_admin_metadata(self) -> tuple[tuple[str, str], ...]:
        """`triton_admin_header` as the gRPC metadata Triton checks: one (key, value) pair, or none."""
        if not self.triton_admin_header:
            return ()
        key, _, value = self.triton_admin_header.partition("=")
        return ((TRITON_RESTRICTED_HEADER_PREFIX + key.strip(), value.strip()),)

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


_FIELDS = {f.name: f for f in dataclasses.fields(GatewayConfig)}


def _validate(config: GatewayConfig) -> None:
    def need(condition: bool, key: str, why: str) -> None:
        if not condition:
            raise ValueError(f"gateway config: {key} {why} (got {getattr(config, key)!r})")

    host, _, port = config.listen.rpartition(":")
    need(bool(host) and port.isdigit() and 0 <= int(port) < 65536, "listen", "must be host:port (port 0: any free port)")
    need(config.workers == 1 or not config.listen.endswith(":0"), "listen", "needs a fixed port with several workers")
    need(0 <= config.metrics_port < 65536, "metrics_port", "must be a port number or 0")
    need(1 <= config.workers <= 64, "workers", "must be between 1 and 64")
    need(config.discovery in DISCOVERY_KINDS, "discovery", f"must be one of {DISCOVERY_KINDS}")
    if config.discovery == "static":
        need(bool(config.backends), "backends", "must list at least one host:port for static discovery")
        for backend in config.backends:
            h, _, p = backend.rpartition(":")
            if not (h and p.isdigit()):
                raise ValueError(f"gateway config: backends entry {backend!r} must be host:port")
    if config.discovery == "dns":
        h, _, p = config.dns_target.rpartition(":")
        need(bool(h) and p.isdigit(), "dns_target", "must be name:port for dns discovery")
    if config.discovery == "kubernetes":
        need(bool(config.kubernetes_service), "kubernetes_service", "must name the Triton Service")
    for key in ("dns_interval_s", "health_interval_s", "health_timeout_s", "eject_base_s", "eject_max_s",
                "keepalive_time_s", "keepalive_timeout_s"):
        need(getattr(config, key) > 0, key, "must be positive")
    for key in ("queue_timeout_s", "drain_grace_s", "retry_budget_ratio", "max_connection_age_grace_s"):
        need(getattr(config, key) >= 0, key, "must not be negative")
    for key in ("client_keepalive_time_s", "client_idle_timeout_s", "max_connection_age_s"):
        need(getattr(config, key) >= 0, key, "must not be negative (0 turns it off)")
    for key in ("retry_attempts", "retry_budget_reserve", "max_inflight_per_backend", "max_queued_requests"):
        need(getattr(config, key) >= 0, key, "must not be negative")
    for key in ("max_message_bytes", "max_concurrent_streams", "max_header_list_bytes", "client_keepalive_timeout_s"):
        need(getattr(config, key) > 0, key, "must be positive")
    need(config.max_message_bytes < 1 << 31, "max_message_bytes", "must be below 2 GiB (grpcio's limit)")
    need(config.max_buffered_bytes >= config.max_message_bytes, "max_buffered_bytes",
         f"must be at least max_message_bytes ({config.max_message_bytes}), or a largest message never fits")
    need(config.max_concurrent_streams < 1 << 31, "max_concurrent_streams", "must be below 2^31")
    _validate_tls(config, need)
    if config.triton_admin_header:
        # Never echoed: the value is a secret shared with the pods.
        key, equals, value = config.triton_admin_header.partition("=")
        key, value = key.strip(), value.strip()
        if not (equals and _METADATA_KEY.fullmatch(key) and not key.startswith("grpc-") and value
                and value.isascii() and value.isprintable()):
            raise ValueError("gateway config: triton_admin_header must be key=value, the key a lowercase "
                             "gRPC metadata name (letters, digits, - _ .; not grpc-*) and the value printable "
                             "ASCII, as in Triton's --grpc-restricted-protocol=<protocols>:<key>=<value>")
    need(config.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"), "log_level", "is not a level")


def _validate_tls(config: GatewayConfig, need) -> None:
    for key, other in (("tls_cert_file", "tls_key_file"), ("tls_key_file", "tls_cert_file"),
                       ("upstream_cert_file", "upstream_key_file"), ("upstream_key_file", "upstream_cert_file")):
        need(bool(getattr(config, key)) or not getattr(config, other), key, f"must be set when {other} is")
    need(config.tls_cert_file or not config.tls_client_ca_file, "tls_client_ca_file",
         "needs tls_cert_file and tls_key_file (mutual TLS is TLS first)")
    need(config.reload_interval_s > 0, "reload_interval_s", "must be positive")
    for key in ("upstream_ca_file", "upstream_cert_file", "upstream_server_name"):
        need(config.upstream_tls or not getattr(config, key), key, "needs upstream_tls: true")


def _coerce(key: str, value: Any) -> Any:
    """Turn a YAML, environment or flag value into the field's type, or raise naming the key."""
    kind = _FIELDS[key].type
    try:
        if kind == "tuple[str, ...]":
            # A list may come as one string or as items that are themselves comma-separated
            # ("--backend a:1,b:2"), as a stack file fills in a list of addresses.
            items = [value] if isinstance(value, str) else value
            return tuple(part for item in items for part in str(item).replace(",", " ").split())
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text in ("true", "1", "yes")
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"gateway config: {key} must be of type {kind} (got {value!r})") from None


def from_mapping(values: Mapping[str, Any]) -> GatewayConfig:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ValueError(f"gateway config: unknown keys {unknown}; known keys are {sorted(_FIELDS)}")
    return GatewayConfig(**{key: _coerce(key, value) for key, value in values.items()})


def load(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> GatewayConfig:
    """YAML file (optional) < environment < overrides (flags; None values are ignored)."""
    values: dict[str, Any] = {}
    if path:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"gateway config: {path} must hold a mapping of keys to values")
        values.update(loaded)
    environ = os.environ if environ is None else environ
    for key in _FIELDS:
        env_value = environ.get(ENV_PREFIX + key.upper())
        if env_value is not None:
            values[key] = env_value
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return from_mapping(values)
