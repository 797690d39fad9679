"""Throwaway certificates for the local demo and the tests: a CA (trustme) and the PEM files it issues.

Never for production: in a cluster the certificates come from a Secret (cert-manager or your own CA).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class IssuedFiles:
    """PEM files of one certificate: its chain, its key, and the CA that signed it."""

    cert_file: Path
    key_file: Path
    ca_file: Path


class LocalCA:
    """A fresh CA whose certificate is written to `directory/<name>-ca.pem`."""

    def __init__(self, directory: Path, name: str = "tritonfleet"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.authority = trustme.CA(organization_name=f"{name} throwaway CA")
        self.ca_file = self.directory / f"{name}-ca.pem"
        self.authority.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, name: str, *identities: str) -> IssuedFiles:
        """A certificate for `identities` (host names or IP addresses, server and client use both),
        written as `<name>.pem` (the chain) and `<name>-key.pem`."""
        leaf = self.authority.issue_cert(*identities)
        cert_file, key_file = self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key_file.write_bytes(leaf.private_key_pem.bytes())
        key_file.chmod(0o600)
        return IssuedFiles(cert_file, key_file, self.ca_file)
