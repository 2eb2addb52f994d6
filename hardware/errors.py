"""The hardware package's error root: every error it raises on purpose is one of these."""
from __future__ import annotations


class HardwareError(Exception):
    """Root of the errors the hardware package raises on purpose."""


class CameraError(HardwareError, RuntimeError):
    """A camera could not be opened, configured or read."""


class CameraTimeout(CameraError, TimeoutError):
    """No frame arrived within the capture timeout: the camera has stalled."""


class CameraDisconnected(CameraError, ConnectionError):
    """The camera is gone (cable, power, driver): reopening it is the only way on."""


class EndOfStream(CameraError, EOFError):
    """A finite source (a recorded clip) has no more frames; not a fault."""


class ClipError(HardwareError, ValueError):
    """A clip on disk is missing, malformed or inconsistent (the message names file and field)."""


class GpioError(HardwareError, RuntimeError):
    """A GPIO pin could not be set up, read or driven."""
