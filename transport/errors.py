"""The transport package's error root."""


class TransportError(Exception):
    """Root of the errors the transport package raises on purpose."""


class EncodingError(TransportError, ValueError):
    """Bytes that are not valid deterministic CBOR, or a value that cannot be encoded."""


class EnvelopeError(TransportError, ValueError):
    """A message that cannot be opened: malformed, unsupported, forged or tampered.

    `reason` is a short, stable word for counters and logs (e.g. "signature", "decrypt").
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class KeyFileError(TransportError, ValueError):
    """A key file that is missing, unreadable, of the wrong type or too open (permissions)."""


class OutboxError(TransportError, RuntimeError):
    """The node's outbox database cannot be opened or is corrupt."""


class OutboxTooLarge(OutboxError):
    """One message is larger than the whole outbox quota: it can never be kept."""


class OutboxFull(OutboxError):
    """The outbox is at its quota with messages all more valuable than this one (alerts before
    reads, reads before overview images): this one is not kept, none of them is dropped for it."""
