"""The node package's error root: every error it raises on purpose is one of these."""


class NodeError(Exception):
    """Root of the errors the node runtime raises on purpose."""


class BadConfig(NodeError, ValueError):
    """The node's TOML configuration is missing, unreadable or invalid (the message names the key)."""


class BadInput(NodeError, ValueError):
    """A file given on the command line is missing or unreadable (the message names the file)."""
