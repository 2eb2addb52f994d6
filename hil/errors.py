"""The HIL bench's error root: every error names the file, scenario or key that is wrong."""
from __future__ import annotations


class HilError(Exception):
    """Root of every error the bench raises on purpose."""


class BadScenario(HilError, ValueError):
    """A scenario TOML that cannot be run (message: `file: key: problem`)."""


class RunFailed(HilError, RuntimeError):
    """The runtime under test could not be started or driven (message names the process and its log)."""


class BadArgument(HilError, ValueError):
    """A command-line value that cannot be used (message names the option)."""


class RecordingFailed(HilError, RuntimeError):
    """`alpr-hil record` got no usable recording (message names the clip folder and why)."""
