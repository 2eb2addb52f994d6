"""Synthetic, properly signed reads for tests, demos and the benchmark (never used by ingest).

They are built the way a node builds them (transport.payload + envelope signing), but
skip the HPKE layer: HQ stores what `open_envelope` returns, so an `Opened` is enough.
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from transport import cbor
from transport.envelope import Header, Opened, signed_bytes
from transport.keys import key_id
from transport.payload import ReadPayload

_ALNUM = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


@dataclass
class SyntheticNode:
    """A node identity that signs reads like a real one."""

    node_id: str
    site_id: str
    key: ed25519.Ed25519PrivateKey

    @classmethod
    def create(cls, node_id: str = "node-1", site_id: str = "site-a") -> SyntheticNode:
        return cls(node_id, site_id, ed25519.Ed25519PrivateKey.generate())

    def read(self, seq: int, plate: str, t_ns: int, *, crop: bytes = b"", kind: str = "read",
             hotlist: dict[str, str] | None = None, camera: str = "cam-1") -> Opened:
        """A signed read (or alert) as HQ ingest would have opened it."""
        payload = ReadPayload(plate=plate, confidence=0.93, capture_time_ns=t_ns, node_id=self.node_id,
                              site_id=self.site_id, camera_id=camera, crop_jpeg=crop, seq=seq, kind=kind,
                              hotlist=hotlist, clock_sync="synced", direction="approaching").to_wire()
        header = Header(kind, self.node_id, seq, t_ns, key_id(self.key.public_key()), "hq0000000000000")
        header_bytes = cbor.dumps(header.to_wire())
        payload_bytes = cbor.dumps(payload)
        signature = self.key.sign(signed_bytes(header_bytes, payload_bytes))
        return Opened(header, header_bytes, payload, payload_bytes, signature)


def random_plate(rng: random.Random) -> str:
    """A plausible 7-character plate."""
    return "".join(rng.choice(_ALNUM) for _ in range(7))


def tiny_jpeg(text: str = "") -> bytes:
    """A small real JPEG (for crop round trips)."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (64, 20), 255)
    ImageDraw.Draw(img).text((2, 4), text[:10], fill=0)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=60)
    return buf.getvalue()


class FakeClock:
    """A settable nanosecond clock for Access/AccessLog in tests and demos."""

    def __init__(self, t_ns: int) -> None:
        self.t_ns = t_ns

    def __call__(self) -> int:
        return self.t_ns

    def advance(self, seconds: float) -> None:
        self.t_ns += int(seconds * 10**9)
