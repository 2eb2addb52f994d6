"""The hq package's error root."""


class HQError(Exception):
    """Root of the errors HQ raises on purpose."""


class BadConfig(HQError, ValueError):
    """HQ's TOML configuration is missing or invalid (the message names the key)."""


class StoreError(HQError, RuntimeError):
    """The HQ store cannot be opened or written."""
