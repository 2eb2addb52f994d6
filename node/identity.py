"""The node's keys, loaded once at start, and the one place where reads are sealed."""
from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from node.config import NodeConfig
from node.errors import BadConfig
from transport import envelope
from transport.errors import KeyFileError
from transport.keys import load_private_key, load_public_key


@dataclass(frozen=True)
class Identity:
    """Who the node is and for whom it encrypts."""

    node_id: str
    sign_key: ed25519.Ed25519PrivateKey
    hq_hpke: x25519.X25519PublicKey
    hq_sign: tuple[ed25519.Ed25519PublicKey, ...]

    @classmethod
    def load(cls, config: NodeConfig) -> "Identity":
        """Load the key files named (or defaulted) by the config; BadConfig names the file."""
        try:
            sign_key = load_private_key(config.path(config.keys.sign_key, "keys/node-sign.key"),
                                        ed25519.Ed25519PrivateKey)
            hpke = load_public_key(config.path(config.keys.hq_hpke_pub, "hq/hq-hpke.pub"), x25519.X25519PublicKey)
            hq_sign = load_public_key(config.path(config.keys.hq_sign_pub, "hq/hq-sign.pub"),
                                      ed25519.Ed25519PublicKey)
        except KeyFileError as exc:
            raise BadConfig(f"keys: {exc} (provision the node: alpr-provision node install)") from exc
        return cls(config.node.id, sign_key, hpke, (hq_sign,))

    def sealer(self, kind: str, payload: dict, time_ns: int):
        """A `build(seq)` for Outbox.commit that seals `payload` with the given sequence number."""
        def build(seq: int) -> bytes:
            body = dict(payload, seq=seq, node=self.node_id, kind=kind)
            return envelope.seal(body, kind=kind, node_id=self.node_id, seq=seq, time_ns=time_ns,
                                 signing_key=self.sign_key, recipient=self.hq_hpke)
        return build
