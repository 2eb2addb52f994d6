"""HQ's private keys: HPKE decryption keys by key id (several during a rotation), the signing key."""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from hq.errors import BadConfig
from transport.errors import KeyFileError
from transport.keys import key_id, load_private_key


def load_hpke_keys(directory: Path) -> dict[str, x25519.X25519PrivateKey]:
    """Every `hq-hpke-*.key` in `directory`, by key id."""
    keys = {}
    for path in sorted(Path(directory).glob("hq-hpke-*.key")):
        try:
            key = load_private_key(path, x25519.X25519PrivateKey)
        except KeyFileError as exc:
            raise BadConfig(str(exc)) from exc
        keys[key_id(key.public_key())] = key
    if not keys:
        raise BadConfig(f"{directory}: no HQ HPKE keys (hq-hpke-*.key); run alpr-provision ca init")
    return keys


def load_sign_key(directory: Path) -> ed25519.Ed25519PrivateKey:
    """HQ's Ed25519 key for acks, hot lists and configuration."""
    try:
        return load_private_key(Path(directory) / "hq-sign.key", ed25519.Ed25519PrivateKey)
    except KeyFileError as exc:
        raise BadConfig(f"{exc}; run alpr-provision ca init") from exc
