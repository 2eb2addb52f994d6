"""The hq package's error root."""


class HQError(Exception):
    """Root of the errors HQ raises on purpose."""


class BadConfig(HQError, ValueError):
    """HQ's TOML configuration is missing or invalid (the message names the key)."""


class StoreError(HQError, RuntimeError):
    """The HQ store cannot be opened or written."""


class NotFound(HQError, LookupError):
    """A record (read, user, hold, request, alert) that does not exist."""


class AccessDenied(HQError, PermissionError):
    """The user may not do this: wrong role, training missing or expired, no purpose, bad login."""


class PolicyError(HQError, ValueError):
    """A request the records policy forbids as asked (e.g. export before release approval)."""


class AuditError(HQError, RuntimeError):
    """The access log's hash chain does not verify."""
