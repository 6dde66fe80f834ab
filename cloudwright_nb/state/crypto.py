"""Master keys, per-application data keys, sealed records and keyed record ids.

Each master key yields, per application, two keys through HKDF-SHA256: a data key for
AES-256-GCM and an id key for HMAC-SHA256 record ids. A sealed record is

    version (1 byte) | master key fingerprint (8 bytes) | nonce (12 bytes) | ciphertext + tag

and its plaintext carries the key name, so listing works although stores only see ids. The
associated data binds the store namespace and the record id, and the namespace embeds the
application, so a record copied onto another key, run or application fails to open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import MasterKeyError, StateDecryptionError

log = logging.getLogger("cloudwright_nb")

RECORD_VERSION = 1
KEY_BYTES = 32
_FINGERPRINT_BYTES = 8
_NONCE_BYTES = 12
_HEADER = struct.Struct(f">B{_FINGERPRINT_BYTES}s{_NONCE_BYTES}s")
# Nonces drawn from the OS per call to os.urandom.
_NONCES_PER_DRAW = 4096
_NAME_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class MasterKey:
    secret: bytes = b""

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise MasterKeyError(
                f"a master key must be {KEY_BYTES} bytes, got {len(self.secret)}; "
                "create one with `cloudwright keys generate`"
            )

    def __repr__(self) -> str:
        return f"MasterKey(fingerprint={self.fingerprint})"

    @cached_property
    def fingerprint_bytes(self) -> bytes:
        digest = hmac.digest(self.secret, b"cloudwright-nb master key fingerprint", "sha256")
        return digest[:_FINGERPRINT_BYTES]

    @property
    def fingerprint(self) -> str:
        return self.fingerprint_bytes.hex()

    def derive(self, purpose: str, app: str = "") -> bytes:
        info = f"cloudwright-nb/v1\0{purpose}\0{app}".encode()
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(
            self.secret
        )


def generate_master_key() -> str:
    """Return a new random master key, base64 encoded as `CLOUDWRIGHT_MASTER_KEY` expects."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def parse_master_keys(text: str, source: str) -> list[MasterKey]:
    """Parse comma-separated base64 keys: the first encrypts, any of them decrypts."""
    keys = []
    for position, part in enumerate(text.split(","), start=1):
        part = part.strip()
        try:
            secret = base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError):
            raise MasterKeyError(
                f"master key {position} in {source} is not valid base64; "
                "create one with `cloudwright keys generate`"
            ) from None
        if len(secret) != KEY_BYTES:
            raise MasterKeyError(
                f"master key {position} in {source} decodes to {len(secret)} bytes instead of "
                f"{KEY_BYTES}; create one with `cloudwright keys generate`"
            )
        keys.append(MasterKey(secret))
    return keys


def load_master_keys(env_value: str | None, key_file: Path, *, may_create: bool) -> list[MasterKey]:
    """Read the master keys from the environment value, else from the key file.

    The key file is created (mode 0600) only when `may_create` is true, which it never is in a
    deployed function: a function that made its own key would write data no one else can read.
    """
    if env_value and env_value.strip():
        return parse_master_keys(env_value, "CLOUDWRIGHT_MASTER_KEY")

    try:
        return parse_master_keys(key_file.read_text().strip(), str(key_file))
    except FileNotFoundError:
        if not may_create:
            raise MasterKeyError(
                "no master key: set CLOUDWRIGHT_MASTER_KEY to the key your notebook uses "
                f"(see `cloudwright keys generate`), or provide the key file {key_file}"
            ) from None

    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it between our read and our open; use theirs.
        return parse_master_keys(key_file.read_text().strip(), str(key_file))
    with os.fdopen(descriptor, "w") as handle:
        handle.write(generate_master_key() + "\n")
    log.info(
        "created master key file %s (mode 0600); back it up to keep your data readable", key_file
    )
    return parse_master_keys(key_file.read_text().strip(), str(key_file))


class _DerivedKey:
    """The data key and id key one master key yields for one application."""

    def __init__(self, master: MasterKey, app: str) -> None:
        self.master = master
        self.aead = AESGCM(master.derive("data key", app))
        self.id_key = master.derive("id key", app)


class _NoncePool:
    """Random AES-GCM nonces, drawn from the OS thousands at a time.

    Every nonce is still twelve fresh bytes from os.urandom; only the system call is shared.
    That call releases the GIL, and on an event loop sealing thousands of runs a second, each
    release let another thread take the GIL and keep the loop waiting for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drawn = b""
        self._used = 0

    def take(self) -> bytes:
        with self._lock:
            if self._used == len(self._drawn):
                self._drawn = os.urandom(_NONCE_BYTES * _NONCES_PER_DRAW)
                self._used = 0
            start = self._used
            self._used += _NONCE_BYTES
            return self._drawn[start : self._used]

    def forget(self) -> None:
        """Drop the undrawn nonces, which a forked child shares with its parent."""
        self._lock = threading.Lock()
        self._drawn = b""
        self._used = 0


_NONCES = _NoncePool()
os.register_at_fork(after_in_child=_NONCES.forget)


class AppCipher:
    """Seals and opens one application's records under its master keys."""

    def __init__(self, app: str, master_keys: Sequence[MasterKey]) -> None:
        if not master_keys:
            raise MasterKeyError("no master key configured")
        self.app = app
        self.keys = [_DerivedKey(master, app) for master in master_keys]
        self._by_fingerprint = {key.master.fingerprint_bytes: key for key in self.keys}

    @property
    def fingerprints(self) -> list[str]:
        return [key.master.fingerprint for key in self.keys]

    def record_id(self, namespace: str, name: str, key_index: int = 0) -> str:
        message = f"{namespace}\0{name}".encode("utf-8", "surrogatepass")
        return hmac.digest(self.keys[key_index].id_key, message, "sha256").hex()

    def seal(self, namespace: str, record_id: str, name: str, payload: bytes) -> bytes:
        key = self.keys[0]
        nonce = _NONCES.take()
        encoded_name = name.encode("utf-8", "surrogatepass")
        plaintext = struct.pack(">I", len(encoded_name)) + encoded_name + payload
        header = _HEADER.pack(RECORD_VERSION, key.master.fingerprint_bytes, nonce)
        return header + key.aead.encrypt(nonce, plaintext, _associated_data(namespace, record_id))

    def open(
        self, namespace: str, record_id: str, blob: bytes, *, check_id: bool = True
    ) -> tuple[str, bytes]:
        """Return the key name and payload of a sealed record, or raise StateDecryptionError.

        With `check_id`, the name inside must hash to `record_id`, which catches a record
        copied onto another key even if its associated data were forged to match.
        """
        if len(blob) < _HEADER.size + 16:
            raise StateDecryptionError(f"record {record_id[:12]} is truncated")
        version, fingerprint, nonce = _HEADER.unpack_from(blob)
        if version != RECORD_VERSION:
            raise StateDecryptionError(
                f"record {record_id[:12]} has format version {version}, which this version "
                "of cloudwright-nb cannot read; upgrade cloudwright-nb"
            )
        key = self._by_fingerprint.get(fingerprint)
        if key is None:
            raise StateDecryptionError(
                f"record {record_id[:12]} of application {self.app!r} was written with master "
                f"key {fingerprint.hex()}, which is not among the configured keys "
                f"({', '.join(self.fingerprints)}); set CLOUDWRIGHT_MASTER_KEY to include it"
            )
        try:
            plaintext = key.aead.decrypt(
                nonce, blob[_HEADER.size :], _associated_data(namespace, record_id)
            )
        except InvalidTag:
            raise StateDecryptionError(
                f"record {record_id[:12]} of application {self.app!r} failed authentication: "
                "it was modified or copied from another key, run or application"
            ) from None

        (name_length,) = _NAME_LENGTH.unpack_from(plaintext)
        name = plaintext[4 : 4 + name_length].decode("utf-8", "surrogatepass")
        if check_id and not hmac.compare_digest(
            self.record_id(namespace, name, self.keys.index(key)), record_id
        ):
            raise StateDecryptionError(
                f"record {record_id[:12]} contains key {name!r}, which belongs to another id: "
                "the record was copied from another key"
            )
        return name, plaintext[4 + name_length :]


class RegistryCipher:
    """Seals application names so key rotation can find every application in a store."""

    def __init__(self, master_keys: Sequence[MasterKey]) -> None:
        self._cipher = AppCipher("", master_keys)

    def seal_name(self, namespace: str, app: str) -> bytes:
        return self._cipher.seal("apps", namespace, app, b"")

    def open_name(self, namespace: str, blob: bytes) -> str:
        name, _ = self._cipher.open("apps", namespace, blob, check_id=False)
        if namespace_of(name) != namespace:
            raise StateDecryptionError(f"application record {namespace[:12]} was tampered with")
        return name


def sealed_by(blob: bytes) -> bytes:
    """Return the fingerprint of the master key a sealed record names in its header."""
    return blob[1 : 1 + _FINGERPRINT_BYTES]


def namespace_of(app: str) -> str:
    """Return the store id of an application: a hash, so stores never see its name."""
    return hashlib.sha256(f"cloudwright-nb app\0{app}".encode()).hexdigest()[:32]


def _associated_data(namespace: str, record_id: str) -> bytes:
    return f"cloudwright-nb/v1\0{namespace}\0{record_id}".encode()
