"""What a refused TLS handshake is counted as: OpenSSL's reason, grouped by what it says of the client.

The real handshakes (plaintext, no or a foreign client certificate) are in test_gateway_tls.py; here
the reasons no test client produces easily, as OpenSSL names them.
"""

from __future__ import annotations

import ssl

import pytest

from gateway.edge.tls import HANDSHAKE_FAILURES, handshake_failure


def refused(reason: str, kind=ssl.SSLError) -> ssl.SSLError:
    exc = kind(1, f"[SSL: {reason}] ...")
    exc.reason = reason
    return exc


@pytest.mark.parametrize("reason, label", [
    ("WRONG_VERSION_NUMBER", "not_tls"), ("HTTP_REQUEST", "not_tls"),
    ("NO_SHARED_CIPHER", "no_common_protocol"), ("UNSUPPORTED_PROTOCOL", "no_common_protocol"),
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "no_client_certificate"),
    ("CERTIFICATE_VERIFY_FAILED", "bad_client_certificate"),
    ("TLSV1_ALERT_UNKNOWN_CA", "refused_by_client"), ("SSLV3_ALERT_BAD_CERTIFICATE", "refused_by_client"),
    ("DECRYPTION_FAILED_OR_BAD_RECORD_MAC", "other"),
])
def test_openssls_reason_gives_the_label(reason, label):
    assert handshake_failure(refused(reason)) == label
    assert label in HANDSHAKE_FAILURES


def test_an_eof_mid_handshake_is_closed():
    assert handshake_failure(refused("UNEXPECTED_EOF_WHILE_READING", ssl.SSLEOFError)) == "closed"
