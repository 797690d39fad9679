"""API keys at the edge: who may call, which models, how often, and whether admin RPCs.

The keys come from a YAML file (`api_keys_file`, a Kubernetes Secret mounted as `keys.yaml`):

    keys:
      - name: camera-fleet          # what metrics and logs call the key; never the token
        token_sha256: 5e88...       # hex SHA-256 of the bearer token (or `token: <plaintext>`)
        models: [camera_stream]     # or ["*"]
        rate_per_s: 500             # inference requests per second per worker; 0 or absent: no limit
        burst: 1000                 # token-bucket size; default max(1, rate_per_s)
        admin: false                # model load/unload, shared memory, trace and log settings

Clients send `authorization: Bearer <token>`. A call is checked once, at the edge: its key when its
headers arrive (`AccessControl.authorize`), its model where the router learns it (`Grant.admit`).
Only the SHA-256 of a token is kept, looked up by digest and confirmed with `hmac.compare_digest`;
no token is ever logged, counted or echoed in an error (not even a malformed file's token fields).
The file is looked at every `reload_interval_s`; a changed file that does not load keeps the keys
already in force (logged, and counted in `tritonfleet_gateway_api_keys_reloads_total`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml

from gateway.metrics import GatewayMetrics

log = logging.getLogger("tritonfleet.gateway")

ALLOWED = "allowed"
UNAUTHENTICATED = "unauthenticated"
PERMISSION_DENIED = "permission_denied"
RATE_LIMITED = "rate_limited"

HEALTH_SERVICE = "/grpc.health.v1.Health/"
_ENTRY_FIELDS = frozenset({"name", "token", "token_sha256", "models", "rate_per_s", "burst", "admin"})
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([!-~]+) *")


class KeysFileError(ValueError):
    """An API-keys file that cannot be used, with what is wrong and which entry."""


@dataclass(frozen=True)
class Key:
    name: str
    digest: bytes = field(repr=False)
    models: frozenset[str] | None  # None: every model
    rate_per_s: float
    burst: float
    admin: bool

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


def digest_of(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


# ---- the file ---------------------------------------------------------------------------------------

def parse_keys(document) -> dict[bytes, Key]:
    """The keys of a parsed keys file, by token digest; KeysFileError naming the entry otherwise."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeysFileError("the API-keys file must be a mapping with a `keys:` list")
    keys: dict[bytes, Key] = {}
    names: set[str] = set()
    for index, entry in enumerate(document["keys"]):
        key = _parse_entry(index, entry)
        if key.name in names:
            raise KeysFileError(f"keys[{index}] ({key.name}): the name is used by an earlier key")
        if key.digest in keys:
            raise KeysFileError(f"keys[{index}] ({key.name}): same token as key {keys[key.digest].name!r}")
        names.add(key.name)
        keys[key.digest] = key
    return keys


def _parse_entry(index: int, entry) -> Key:
    where = f"keys[{index}]"
    if not isinstance(entry, dict):
        raise KeysFileError(f"{where}: must be a mapping with name, token_sha256 (or token) and models")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise KeysFileError(f"{where}: needs a non-empty `name`")
    where = f"{where} ({name})"
    unknown = sorted(set(entry) - _ENTRY_FIELDS)
    if unknown:
        raise KeysFileError(f"{where}: unknown fields {unknown}; known are {sorted(_ENTRY_FIELDS)}")
    # The token fields' values are never part of an error: a misplaced plaintext token stays secret.
    if ("token" in entry) == ("token_sha256" in entry):
        raise KeysFileError(f"{where}: needs exactly one of `token` and `token_sha256`")
    if "token" in entry:
        token = entry["token"]
        if not isinstance(token, str) or not _BEARER.fullmatch(f"Bearer {token}"):
            raise KeysFileError(f"{where}: `token` must be a non-empty string of visible ASCII characters")
        digest = digest_of(token)
    else:
        hexdigest = entry["token_sha256"]
        if not isinstance(hexdigest, str) or not _HEX_DIGEST.fullmatch(hexdigest):
            raise KeysFileError(f"{where}: `token_sha256` must be 64 hex digits (the SHA-256 of the token)")
        digest = bytes.fromhex(hexdigest)
    models = entry.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise KeysFileError(f"{where}: `models` must be a non-empty list of model names, or [\"*\"]")
    rate = _number(entry, "rate_per_s", 0, where)
    burst = _number(entry, "burst", max(1.0, rate), where)
    if burst < 1:
        raise KeysFileError(f"{where}: `burst` must be at least 1 (got {burst!r})")
    admin = entry.get("admin", False)
    if not isinstance(admin, bool):
        raise KeysFileError(f"{where}: `admin` must be true or false (got {admin!r})")
    return Key(name, digest, None if "*" in models else frozenset(models), rate, burst, admin)


def _number(entry: dict, field: str, default: float, where: str) -> float:
    value = entry.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise KeysFileError(f"{where}: `{field}` must be a number, 0 or more (got {value!r})")
    return float(value)


def load_keys(path: str | Path) -> dict[bytes, Key]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KeysFileError(f"cannot read the API-keys file {path}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise KeysFileError(f"the API-keys file {path} is not valid YAML{at}") from None
    try:
        return parse_keys(document)
    except KeysFileError as exc:
        raise KeysFileError(f"{path}: {exc}") from None


# ---- rate -------------------------------------------------------------------------------------------

class TokenBucket:
    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float, capacity: float):
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# ---- per call ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    message: str


class Grant:
    """A call's key, once the call's headers have passed: what it may do once its model is known."""

    __slots__ = ("access", "key")

    def __init__(self, access: "AccessControl | None", key: Key | None):
        self.access = access
        self.key = key

    def admit(self, model: str, inference: bool = True) -> Refusal | None:
        """Whether the call (or stream message) may go on with `model`; `inference` ones take a token
        of the key's rate. Counted once, as its outcome."""
        access, key = self.access, self.key
        if access is None:
            return None
        if not key.allows(model):
            access.count(key.name, PERMISSION_DENIED)
            what = f"model {model!r}" if model else "every model at once (its models are limited)"
            return Refusal(grpc.StatusCode.PERMISSION_DENIED, f"API key {key.name!r} may not use {what}")
        if inference and key.rate_per_s and not access.bucket(key).take():
            access.count(key.name, RATE_LIMITED)
            return Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"API key {key.name!r} is over its rate of {key.rate_per_s:g} requests per second")
        access.count(key.name, ALLOWED)
        return None


OPEN = Grant(None, None)  # no API keys on this gateway, or a call that needs none (health)


class AccessControl:
    """The keys in force for one worker, their rate buckets and counts, and the file they come from."""

    def __init__(self, path: str, metrics: GatewayMetrics, admin_paths: frozenset[str],
                 model_paths: frozenset[str]):
        """`admin_paths` need a key with admin: true; `model_paths` are checked by model later (by
        their handler), every other call is counted at its headers."""
        self.path = path
        self.metrics = metrics
        self.admin_paths = admin_paths
        self.model_paths = model_paths
        self.keys = load_keys(path)
        self.signature = _signature(path)
        self.buckets: dict[str, TokenBucket] = {}
        self._counters: dict[tuple[str, str], object] = {}

    def count(self, key: str, outcome: str) -> None:
        counter = self._counters.get((key, outcome))
        if counter is None:
            counter = self._counters[(key, outcome)] = self.metrics.access.labels(key, outcome)
        counter.inc()

    def bucket(self, key: Key) -> TokenBucket:
        bucket = self.buckets.get(key.name)
        if bucket is None:
            bucket = self.buckets[key.name] = TokenBucket(key.rate_per_s, key.burst)
        return bucket

    # ---- at the call's headers ------------------------------------------------------------------

    def authorize(self, path: str, authorization: str | None) -> Grant | Refusal:
        """The call's grant, or why it is refused (counted); a model-scoped call is counted later."""
        if path.startswith(HEALTH_SERVICE):
            return OPEN
        key = self.lookup(authorization)
        if isinstance(key, Refusal):
            self.count("", UNAUTHENTICATED)
            return key
        if path in self.admin_paths and not key.admin:
            self.count(key.name, PERMISSION_DENIED)
            return Refusal(grpc.StatusCode.PERMISSION_DENIED,
                           f"API key {key.name!r} may not call {path.rpartition('/')[2]} (it needs admin: true)")
        if path not in self.model_paths:
            self.count(key.name, ALLOWED)
        return Grant(self, key)

    def lookup(self, authorization: str | None) -> Key | Refusal:
        if authorization is None:
            return Refusal(grpc.StatusCode.UNAUTHENTICATED,
                           "this gateway needs an API key: send `authorization: Bearer <token>` metadata")
        match = _BEARER.fullmatch(authorization)
        if match is None:
            return Refusal(grpc.StatusCode.UNAUTHENTICATED,
                           "malformed authorization metadata: expected `Bearer <token>`")
        digest = digest_of(match.group(1))
        key = self.keys.get(digest)
        # A dict finds the candidate; what decides is a constant-time comparison of the digests.
        if key is None or not hmac.compare_digest(key.digest, digest):
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, "unknown API key")
        return key

    # ---- the file changing ----------------------------------------------------------------------

    def reload_if_changed(self) -> bool:
        """Load the file again if it changed since it was last read; whether new keys are in force."""
        signature = _signature(self.path)
        if signature == self.signature:
            return False
        self.signature = signature
        try:
            keys = load_keys(self.path)
        except KeysFileError as exc:
            self.metrics.api_keys_reloads.labels("failed").inc()
            log.warning("the API-keys file did not load; the keys in force stay", extra={"error": str(exc)})
            return False
        self.keys = keys
        names = {key.name: key for key in keys.values()}
        # A key whose rate did not change keeps its bucket (a reload does not refill it).
        self.buckets = {name: bucket for name, bucket in self.buckets.items()
                        if name in names and (bucket.rate, bucket.capacity) == (names[name].rate_per_s,
                                                                                 names[name].burst)}
        self.metrics.api_keys_reloads.labels("loaded").inc()
        log.info("API keys reloaded", extra={"keys": sorted(names)})
        return True

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.reload_if_changed()


def _signature(path: str) -> tuple | None:
    """What changes when the file does, including a Secret volume's swap of its `..data` link."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class RefusedCall:
    """A call refused at its headers (a `CallHandler`): answered trailers-only at once, so nothing of
    its request is read."""

    __slots__ = ()

    def __init__(self, stream, refusal: Refusal):
        stream.end(refusal.code, refusal.message)

    def on_message(self, message) -> None:
        """Not reached: the stream is over before any of its DATA."""

    def on_end(self) -> None:
        """Nothing is left to end."""

    def on_cancel(self) -> None:
        """Nothing is in flight."""

    def drain(self) -> None:
        """Nothing is in flight."""
