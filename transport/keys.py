"""Key files and key ids: the node's Ed25519 signing key, HQ's X25519 (HPKE) and Ed25519 keys.

Private keys are PKCS#8 PEM files with mode 0600, written atomically; loading one that group
or others can read is refused, as ssh does, because a leaked node key lets anyone forge reads.
"""
from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from transport import atomic
from transport.errors import KeyFileError

PublicKey = Union[ed25519.Ed25519PublicKey, x25519.X25519PublicKey]
PrivateKey = Union[ed25519.Ed25519PrivateKey, x25519.X25519PrivateKey]


def raw_public(key: PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 or X25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: PublicKey) -> str:
    """A short stable id for a public key: first 8 bytes of SHA-256 of its raw bytes, hex."""
    return hashlib.sha256(raw_public(key)).digest()[:8].hex()


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write a private key as PKCS#8 PEM, mode 0600, atomically (temp file + rename + fsync)."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic.write_bytes(path, data, 0o600)


def write_public_key(path: Path, key: PublicKey) -> None:
    """Write a public key as SubjectPublicKeyInfo PEM, mode 0644."""
    data = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic.write_bytes(path, data, 0o644)


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror or exc}") from exc


def check_private_mode(path: Path) -> None:
    """KeyFileError unless the private key file at `path` is closed to group and others (as ssh).

    For every private key we load: the signing keys here, and the TLS client key that
    transport.mqtt hands to OpenSSL (whoever reads it can connect to the broker as us).
    """
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror or exc}") from exc
    if mode & 0o077:
        raise KeyFileError(f"{path}: private key is readable by others (mode {mode:o}); chmod 600 it")


def load_private_key(path: Path, expected: type, *, check_mode: bool = True) -> PrivateKey:
    """Load a PEM private key of the `expected` class, refusing files readable by others."""
    path = Path(path)
    data = _read(path)
    if check_mode:
        check_private_mode(path)
    return parse_private_key(data, path, expected)


def parse_private_key(data: bytes, path: Path, expected: type) -> PrivateKey:
    """The PEM private key in `data` (read from `path`, named in errors), of the `expected` class."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM private key ({exc})") from exc
    if not isinstance(key, expected):
        raise KeyFileError(f"{path}: expected a {expected.__name__}, found {type(key).__name__}")
    return key


def load_public_key(path: Path, expected: type) -> PublicKey:
    """Load a PEM public key of the `expected` class."""
    data = _read(Path(path))
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, expected):
        raise KeyFileError(f"{path}: expected a {expected.__name__}, found {type(key).__name__}")
    return key


def public_from_raw(raw: bytes, kind: type) -> PublicKey:
    """Rebuild a public key of class `kind` from its 32 raw bytes."""
    return kind.from_public_bytes(raw)
