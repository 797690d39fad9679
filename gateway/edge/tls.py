"""TLS at both edges of the gateway: the server side clients meet, and the client side toward the pods.

Toward clients (`ServerTls`): TLS 1.2 or later, ALPN `h2` (gRPC clients always offer it; a client
that negotiates no ALPN is served, one that ended up with another protocol is closed), and with a
client CA, mutual TLS: a client without a certificate signed by it fails the handshake. The
certificate, key and client CA are read again from their files every `reload_interval_s`, as a
Kubernetes Secret mount (or cert-manager) replaces them: when their contents change, a new context
is built and given to the connections that arrive from then on, through the listening context's
SNI callback (called for every ClientHello, with or without a server name); open connections keep
the context they were made with. Files that fail to load leave the previous context in place, and
are logged and counted (`tritonfleet_gateway_tls_reloads_total{outcome="failed"}`) once per change.

A handshake that fails (no or a wrong client certificate, plaintext on the TLS port) ends that
connection only: the event loop's TLS layer closes it before the HTTP/2 connection exists. The loop
drops it without a word, so the listening context makes its connections' TLS objects of a class that
counts a handshake OpenSSL refuses, by reason (`tritonfleet_gateway_tls_handshake_failures_total`);
a client that goes away or stalls mid-handshake (HANDSHAKE_TIMEOUT_S) is not counted there.

Toward the pods (`UpstreamTls`): the context of the data path's HTTP/2 connections and the gRPC
channel credentials of the health checks and control calls, from the same files (Triton's
`--grpc-use-ssl`, with `--grpc-use-ssl-mutual` the gateway's client certificate).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from dataclasses import dataclass

import grpc

log = logging.getLogger("tritonfleet.gateway")

ALPN = ("h2",)
# A client that opens a connection and never finishes its handshake holds it no longer than this.
HANDSHAKE_TIMEOUT_S = 10.0


# OpenSSL's reasons for a refused server handshake, grouped by what they say about the client.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
                      "PACKET_LENGTH_TOO_LONG", "RECORD_LENGTH_MISMATCH"})
_NO_COMMON_PROTOCOL = frozenset({"NO_SHARED_CIPHER", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE",
                                 "VERSION_TOO_LOW", "NO_SUITABLE_SIGNATURE_ALGORITHM"})
_CLIENT_CERTIFICATE = {"PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_client_certificate",
                       "CERTIFICATE_VERIFY_FAILED": "bad_client_certificate"}
HANDSHAKE_FAILURES = ("not_tls", "no_common_protocol", "no_client_certificate", "bad_client_certificate",
                      "refused_by_client", "closed", "other")


def handshake_failure(exc: ssl.SSLError) -> str:
    """The reason label (one of HANDSHAKE_FAILURES) of a handshake OpenSSL refused with `exc`."""
    if isinstance(exc, ssl.SSLEOFError):
        return "closed"
    reason = exc.reason or ""
    if reason in _NOT_TLS:
        return "not_tls"
    if reason in _NO_COMMON_PROTOCOL:
        return "no_common_protocol"
    if reason in _CLIENT_CERTIFICATE:
        return _CLIENT_CERTIFICATE[reason]
    if reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_")):  # the client's alert: it refused our certificate
        return "refused_by_client"
    return "other"


def counting_handshakes(failures) -> type[ssl.SSLObject]:
    """An SSLObject class whose failed handshakes are counted in `failures` (a Counter by reason).

    The event loop's TLS layer makes one per connection through the context's `sslobject_class`
    and calls its `do_handshake` until it completes; the "want read/write" errors are not failures.
    """

    class CountedHandshakes(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                failures.labels(handshake_failure(exc)).inc()
                raise

    return CountedHandshakes


def speaks_h2(transport) -> bool:
    """Whether a client connection may carry gRPC: plaintext, or TLS with ALPN h2 or none."""
    ssl_object = transport.get_extra_info("ssl_object")
    return ssl_object is None or ssl_object.selected_alpn_protocol() in (None, "h2")


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


@dataclass(frozen=True)
class ServerFiles:
    """The PEM files of the server side: certificate chain, key, and (mutual TLS) the client CA."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in (self.cert_file, self.key_file, self.client_ca_file) if p)

    def fingerprint(self) -> str:
        """What the files hold now (a digest), so that a change, and only a change, is reloaded."""
        digest = hashlib.sha256()
        for path in self.paths:
            try:
                digest.update(hashlib.sha256(_read(path)).digest())
            except OSError as exc:  # a file missing for a moment is a state of its own, reported once
                digest.update(f"unreadable {path}: {exc.strerror}".encode())
        return digest.hexdigest()


def server_context(files: ServerFiles) -> ssl.SSLContext:
    """A server context from the files; raises OSError or ssl.SSLError when they do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(list(ALPN))
    context.load_cert_chain(files.cert_file, files.key_file)
    if files.client_ca_file:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=files.client_ca_file)
    return context


class ServerTls:
    """The context new client connections get, kept in step with its files.

    `listening` is the context the socket listens with; its SNI callback hands each new connection
    `current`. Whether clients must present a certificate is fixed at start (OpenSSL keeps the
    listening context's verify mode when a connection's context is swapped), so a reload changes
    the certificate, key and client CA, never whether mutual TLS is on.
    """

    def __init__(self, files: ServerFiles, reloads=None, handshake_failures=None):
        self.files = files
        self.reloads = reloads  # a Counter labelled by outcome, or None
        self._seen = files.fingerprint()
        # The first load raises: a gateway that cannot read its certificate does not start.
        self.current = self.listening = server_context(files)
        self.listening.sni_callback = self._hand_current
        if handshake_failures is not None:  # a Counter labelled by reason
            self.listening.sslobject_class = counting_handshakes(handshake_failures)
            for reason in HANDSHAKE_FAILURES:  # each at 0 from the start, so a rate over it is defined
                handshake_failures.labels(reason)

    def _hand_current(self, ssl_object, _server_name, listening) -> None:
        if self.current is not listening:
            ssl_object.context = self.current

    def check(self) -> str | None:
        """Reload if the files changed: 'reloaded', 'failed' (the previous context stays), or None."""
        seen = self.files.fingerprint()
        if seen == self._seen:
            return None
        self._seen = seen
        try:
            context = server_context(self.files)
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS files did not load; keeping the previous certificate",
                        extra={"files": list(self.files.paths), "error": str(exc)})
            return self._count("failed")
        self.current = context
        log.info("TLS certificate reloaded", extra={"files": list(self.files.paths)})
        return self._count("reloaded")

    def _count(self, outcome: str) -> str:
        if self.reloads is not None:
            self.reloads.labels(outcome).inc()
        return outcome

    async def run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.check()


@dataclass(frozen=True)
class UpstreamTls:
    """TLS toward the pods: the CA that signs their certificates (empty: the system's roots), the
    gateway's own certificate when they ask for one, and the name checked in theirs (empty: the
    pod's host)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(list(ALPN))
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def hostname(self, host: str) -> str:
        return self.server_name or host

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file) if self.ca_file else None,
            private_key=_read(self.key_file) if self.key_file else None,
            certificate_chain=_read(self.cert_file) if self.cert_file else None,
        )

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def server_tls(config, reloads=None, handshake_failures=None) -> ServerTls | None:
    """The server side for a gateway config (None: plaintext)."""
    if not config.tls_cert_file:
        return None
    return ServerTls(ServerFiles(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file), reloads,
                     handshake_failures)


def upstream_tls(config) -> UpstreamTls | None:
    """The client side toward the pods for a gateway config (None: plaintext)."""
    if not config.upstream_tls:
        return None
    return UpstreamTls(config.upstream_ca_file, config.upstream_cert_file, config.upstream_key_file,
                       config.upstream_server_name)


def check_files(config) -> None:
    """Load every TLS file the config names once, so that one that does not load stops the start with
    a ValueError naming its keys, before any worker runs."""
    server = ServerFiles(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
    upstream = upstream_tls(config)
    checks = []
    if config.tls_cert_file:
        checks.append(("tls_cert_file, tls_key_file, tls_client_ca_file", lambda: server_context(server)))
    if upstream is not None:
        checks.append(("upstream_ca_file, upstream_cert_file, upstream_key_file",
                       lambda: (upstream.context(), upstream.channel_credentials())))
    for keys, load in checks:
        try:
            load()
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"gateway config: {keys}: the files did not load ({exc})") from None
