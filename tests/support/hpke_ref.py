"""A from-the-RFC reference of HPKE base mode (RFC 9180) for DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256 and ChaCha20-Poly1305, with the ephemeral key as an input.

Production code uses cryptography's HPKE, which picks a fresh ephemeral key each time; this
exists only so the wire-format test vectors can be exact bytes, and the tests check that
cryptography's HPKE opens what this seals, which proves the two agree.
"""
from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization

KEM_ID, KDF_ID, AEAD_ID = 0x0020, 0x0001, 0x0003


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or b"\0" * 32, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite + label + ikm)


def _labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, _i2osp(length, 2) + b"HPKE-v1" + suite + label + info, length)


def _raw(key) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def seal(pk_r: x25519.X25519PublicKey, sk_e: x25519.X25519PrivateKey, info: bytes, aad: bytes,
         plaintext: bytes) -> bytes:
    """enc || ciphertext, as cryptography's single-shot Suite.encrypt returns it."""
    kem_suite = b"KEM" + _i2osp(KEM_ID, 2)
    enc = _raw(sk_e.public_key())
    dh = sk_e.exchange(pk_r)
    kem_context = enc + _raw(pk_r)
    eae_prk = _labeled_extract(kem_suite, b"", b"eae_prk", dh)
    shared = _labeled_expand(kem_suite, eae_prk, b"shared_secret", kem_context, 32)
    suite = b"HPKE" + _i2osp(KEM_ID, 2) + _i2osp(KDF_ID, 2) + _i2osp(AEAD_ID, 2)
    psk_id_hash = _labeled_extract(suite, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(suite, shared, b"secret", b"")
    key = _labeled_expand(suite, secret, b"key", context, 32)
    nonce = _labeled_expand(suite, secret, b"base_nonce", context, 12)
    return enc + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad or None)
