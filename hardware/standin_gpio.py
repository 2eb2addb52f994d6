"""A stand-in for the `RPi.GPIO` module: same call signatures and errors, plus test driving.

Pass an instance wherever the real module would go (`TriggerInput(..., gpio_module=gpio)`).
Inputs are driven with `drive_high(pin)` / `drive_low(pin)` (BCM numbers: the physical wire);
edge callbacks fire synchronously in the driving thread, honouring `bouncetime` against this
object's clock. Outputs are recorded with their times in `output_history(pin)`.

`library` picks whose behaviour to copy where the two implementations of this API differ (read
in RPi.GPIO 0.7.1's source/py_gpio.c and event_gpio.c, and rpi-lgpio 0.6's RPi/GPIO):

- Both: a second add_event_detect on a channel raises RuntimeError("Conflicting edge detection
  already enabled for this GPIO channel"), whatever its edge and bouncetime. (rpi-lgpio means to
  accept one with the same edge and bouncetime, but compares the edge lgpio reports, an lgpio
  constant on gpiochip v2 kernels, with RPi.GPIO's constant, so on Raspberry Pi OS it always
  conflicts.) pull_up_down defaults to PUD_OFF, and an output takes no other value.
- "RPi.GPIO" (default): bouncetime, pull_up_down and initial are C ints (None is a TypeError);
  bouncetime must be > 0 or left out; `fail_edge_detection()` makes add_event_detect raise
  RuntimeError("Failed to add edge detection"), which RPi.GPIO 0.7.1 does on every edge on
  kernels >= 6.6 (raspberrypi/linux issue #6037); `deny_gpio_access()` makes setup raise
  RuntimeError("No access to /dev/mem...").
- "rpi-lgpio": bouncetime=None means none; pull_up_down=None is refused (ValueError); initial
  defaults to None (an output then keeps the line's level) and an input refuses any other;
  setup(OUT) silently drops the pin's edge detection; failures of the lgpio calls underneath
  raise `lgpio.error`, an Exception that is NOT a RuntimeError, reachable as
  `module.lgpio.error` as on the real module (it imports lgpio): `deny_gpio_access()` makes
  setmode raise lgpio.error('can not open gpiochip') and `claim_elsewhere(pin)` makes setup
  raise lgpio.error('GPIO busy').

Differences from the real modules, on purpose: callbacks run in the caller's thread (the real ones
have their own thread), so tests are deterministic; only the 40-pin header (BCM 0-27) exists
(both real modules accept BCM 0-53); debounce always follows RPi.GPIO (edges within bouncetime
of the last reported one are dropped), not lgpio's "report once stable for bouncetime".
"""
from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

log = logging.getLogger(__name__)

# Physical header pin -> BCM GPIO number for the 40-pin header (all Pi models since B+).
BOARD_TO_BCM: dict[int, int] = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
    36: 16, 37: 26, 38: 20, 40: 21,
}

_NO_BOUNCETIME = -666  # RPi.GPIO's own "argument not given" value (py_gpio.c)
_NOT_GIVEN: Any = object()  # initial left out (RPi.GPIO's default is -1, rpi-lgpio's None)
_PUD_OFF = 20  # both libraries' default pull_up_down
_MODE_MESSAGE = "Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or GPIO.setmode(GPIO.BCM)"
LIBRARIES = ("RPi.GPIO", "rpi-lgpio")


class LgpioError(Exception):
    """Plays `lgpio.error`: a plain Exception whose str() is the repr of its message, as in lgpio."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True)
class OutputChange:
    """One recorded output write: when, which BCM pin, which level."""

    time_ns: int
    pin: int
    value: int


@dataclass
class _Channel:
    direction: int
    pull: int
    level: int
    edge: int | None = None
    bouncetime_ms: int = 0
    callbacks: list[Callable[[int], None]] | None = None
    last_event_ns: int | None = None
    detected: bool = False
    channel: int = 0  # the number the caller used (BCM or BOARD) - callbacks receive this


class StandinGPIO:
    """An object that behaves like the `RPi.GPIO` module for the calls our adapter makes."""

    # Values as in RPi.GPIO, so code comparing against literals behaves the same.
    BOARD = 10
    BCM = 11
    OUT = 0
    IN = 1
    LOW = 0
    HIGH = 1
    PUD_OFF = 20
    PUD_DOWN = 21
    PUD_UP = 22
    RISING = 31
    FALLING = 32
    BOTH = 33
    RPI_INFO: ClassVar[dict[str, object]] = {"P1_REVISION": 3, "TYPE": "Stand-in", "PROCESSOR": "stand-in"}
    VERSION = "0.7.1-standin"

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns, library: str = "RPi.GPIO") -> None:
        if library not in LIBRARIES:
            raise ValueError(f"library: one of {', '.join(LIBRARIES)}, got {library!r}")
        self.clock = clock
        self.library = library
        self.lgpio: SimpleNamespace | None = SimpleNamespace(error=LgpioError) if library == "rpi-lgpio" else None
        self._lock = threading.RLock()
        self._mode: int | None = None
        self._warnings = True
        self._channels: dict[int, _Channel] = {}  # by BCM number
        self._external: dict[int, int] = {}  # levels driven from outside, by BCM number
        self._history: list[OutputChange] = []
        self._no_access = False
        self._busy: set[int] = set()  # BCM pins another process holds
        self._edge_detection_broken = False

    @property
    def _lgpio(self) -> bool:
        """Whether this stand-in copies rpi-lgpio where it differs from RPi.GPIO."""
        return self.library == "rpi-lgpio"

    # ---- RPi.GPIO API ----------------------------------------------------------------------
    def setwarnings(self, flag: bool) -> None:
        """Enable or disable warnings (kept for signature compatibility)."""
        self._warnings = bool(flag)

    def setmode(self, mode: int) -> None:
        """Choose BCM or BOARD numbering; changing it later raises ValueError like RPi.GPIO."""
        with self._lock:
            if self._mode is not None and self._mode != mode:
                raise ValueError("A different mode has already been set!")
            if mode not in (self.BCM, self.BOARD):
                raise ValueError("An invalid mode was passed to setmode()")
            if self._lgpio and self._no_access:  # rpi-lgpio opens the gpiochip here
                raise LgpioError("can not open gpiochip")
            self._mode = mode

    def getmode(self) -> int | None:
        """The numbering mode, or None before setmode()."""
        return self._mode

    def setup(self, channel: int | Iterable[int], direction: int, pull_up_down: int | None = _PUD_OFF,
              initial: int | None = _NOT_GIVEN) -> None:
        """Configure one channel or a list of channels as input or output."""
        channels = list(channel) if isinstance(channel, (list, tuple)) else [channel]
        if not self._lgpio and (pull_up_down is None or initial is None):
            # RPi.GPIO parses both as C ints ("Oi|ii")
            raise TypeError("'NoneType' object cannot be interpreted as an integer")
        if direction not in (self.IN, self.OUT):
            raise ValueError("An invalid direction was passed to setup()")
        if direction == self.OUT and pull_up_down != self.PUD_OFF:  # None too, under rpi-lgpio
            raise ValueError("pull_up_down parameter is not valid for outputs")
        not_given = (_NOT_GIVEN, None) if self._lgpio else (_NOT_GIVEN, -1)
        if direction == self.IN and initial not in not_given:
            raise ValueError("initial parameter is not valid for inputs")
        if pull_up_down not in (self.PUD_OFF, self.PUD_UP, self.PUD_DOWN):
            raise ValueError("Invalid value for pull_up_down - should be either PUD_OFF, PUD_UP or PUD_DOWN")
        if self._no_access and not self._lgpio:
            raise RuntimeError("No access to /dev/mem.  Try running as root!")  # py_gpio.c mmap_gpio_mem
        for ch in channels:
            bcm = self._bcm(ch)
            if self._lgpio and bcm in self._busy:
                raise LgpioError("GPIO busy")  # lgpio's claim fails when another process holds the line
            with self._lock:
                existing = self._channels.get(bcm)
                if direction == self.OUT:  # becoming an output drops edge detection, as rpi-lgpio does
                    if self._lgpio and initial in not_given:
                        # rpi-lgpio reads the line and keeps that level
                        level = existing.level if existing is not None else self.LOW
                    elif self._lgpio:
                        level = self.HIGH if initial else self.LOW  # rpi-lgpio: bool(initial)
                    else:
                        level = self.HIGH if initial == self.HIGH else self.LOW
                    self._channels[bcm] = _Channel(self.OUT, self.PUD_OFF, level, channel=ch)
                    self._history.append(OutputChange(self.clock(), bcm, level))
                elif existing is not None and existing.direction == self.IN:
                    existing.pull = pull_up_down  # re-setup of an input keeps its edge detection
                    existing.level = self._input_level(bcm, pull_up_down)
                else:
                    self._channels[bcm] = _Channel(self.IN, pull_up_down, self._input_level(bcm, pull_up_down),
                                                   channel=ch)

    def input(self, channel: int) -> int:
        """The level of a set-up channel (inputs and outputs both, as on a Pi)."""
        bcm = self._bcm(channel)
        with self._lock:
            ch = self._channels.get(bcm)
            if ch is None:
                raise RuntimeError("You must setup() the GPIO channel first")
            return ch.level

    def output(self, channel: int | Iterable[int], value: int | bool | Iterable[int | bool]) -> None:
        """Set output level(s); the change is recorded with its time."""
        channels = list(channel) if isinstance(channel, (list, tuple)) else [channel]
        values = list(value) if isinstance(value, (list, tuple)) else [value] * len(channels)
        if len(values) != len(channels):
            raise RuntimeError("Number of channels != number of values")
        for ch, v in zip(channels, values):
            bcm = self._bcm(ch)
            with self._lock:
                state = self._channels.get(bcm)
                if state is None or state.direction != self.OUT:
                    raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
                state.level = self.HIGH if v else self.LOW
                self._history.append(OutputChange(self.clock(), bcm, state.level))

    def add_event_detect(self, channel: int, edge: int, callback: Callable[[int], None] | None = None,
                         bouncetime: int | None = _NO_BOUNCETIME) -> None:
        """Enable edge detection on an input, optionally with a first callback and debounce (ms)."""
        if bouncetime is None and self._lgpio:
            bouncetime = _NO_BOUNCETIME  # rpi-lgpio: None means no debounce
        if not isinstance(bouncetime, int):
            # RPi.GPIO parses bouncetime as a C int ("ii|Oi"): None or a float is a TypeError
            raise TypeError(f"'{type(bouncetime).__name__}' object cannot be interpreted as an integer")
        if callback is not None and not callable(callback):
            raise TypeError("Parameter must be callable")
        bcm = self._bcm(channel)
        with self._lock:
            ch = self._channels.get(bcm)
            if ch is None or ch.direction != self.IN:
                raise RuntimeError("You must setup() the GPIO channel as an input first")
        if edge not in (self.RISING, self.FALLING, self.BOTH):
            raise ValueError("The edge must be set to RISING, FALLING or BOTH")
        if bouncetime <= 0 and bouncetime != _NO_BOUNCETIME:
            raise ValueError("Bouncetime must be greater than 0")
        with self._lock:
            if ch.edge is not None:  # both libraries, whatever the edge (see the module docstring)
                raise RuntimeError("Conflicting edge detection already enabled for this GPIO channel")
            if self._edge_detection_broken and not self._lgpio:
                raise RuntimeError("Failed to add edge detection")  # add_edge_detect() returned 2
            ch.edge = edge
            ch.bouncetime_ms = 0 if bouncetime == _NO_BOUNCETIME else bouncetime
            ch.callbacks = [callback] if callback is not None else []
            ch.last_event_ns = None
            ch.detected = False

    def remove_event_detect(self, channel: int) -> None:
        """Disable edge detection and drop its callbacks."""
        bcm = self._bcm(channel)
        with self._lock:
            ch = self._channels.get(bcm)
            if ch is not None:
                ch.edge = None
                ch.callbacks = None
                ch.detected = False

    def add_event_callback(self, channel: int, callback: Callable[[int], None]) -> None:
        """Add another callback to a channel that already has edge detection."""
        bcm = self._bcm(channel)
        if not callable(callback):
            raise TypeError("Parameter must be callable")
        with self._lock:
            ch = self._channels.get(bcm)
            if ch is None or ch.direction != self.IN:
                raise RuntimeError("You must setup() the GPIO channel as an input first")
            if ch.edge is None or ch.callbacks is None:
                raise RuntimeError("Add event detection using add_event_detect first before adding a callback")
            ch.callbacks.append(callback)

    def event_detected(self, channel: int) -> bool:
        """True once after an edge was detected on the channel."""
        bcm = self._bcm(channel)
        with self._lock:
            ch = self._channels.get(bcm)
            if ch is None:
                return False
            detected, ch.detected = ch.detected, False
            return detected

    def wait_for_edge(self, channel: int, edge: int, bouncetime: int | None = None,
                      timeout: int | None = None) -> int | None:
        """Not supported by the stand-in: drive edges with drive_high/drive_low and callbacks."""
        raise NotImplementedError("StandinGPIO.wait_for_edge: use add_event_detect with a callback")

    def gpio_function(self, channel: int) -> int:
        """IN or OUT for a set-up channel, IN otherwise (the power-on default)."""
        bcm = self._bcm(channel)
        with self._lock:
            ch = self._channels.get(bcm)
            return self.IN if ch is None else ch.direction

    def cleanup(self, channel: int | Iterable[int] | None = None) -> None:
        """Return channels (all when None) to inputs without detection; all: forget the mode too.

        Before any setmode() both real modules do nothing (RPi.GPIO: nothing was mapped yet;
        rpi-lgpio: no chip is open) rather than raise.
        """
        with self._lock:
            if self._mode is None:
                self._warn_nothing_to_clean()
                return
            if channel is None:
                found = bool(self._channels)
                self._channels.clear()
                self._mode = None
            else:
                channels = list(channel) if isinstance(channel, (list, tuple)) else [channel]
                found = False
                for ch in channels:
                    found = self._channels.pop(self._bcm(ch), None) is not None or found
        if not found:
            self._warn_nothing_to_clean()

    def _warn_nothing_to_clean(self) -> None:
        if self._warnings:
            warnings.warn("No channels have been set up yet - nothing to clean up!  Try cleaning up at the "
                          "end of your program instead!", RuntimeWarning, stacklevel=3)

    # ---- fault injection -----------------------------------------------------------------------
    def deny_gpio_access(self) -> None:
        """The process may not use the GPIO device (not in the gpio group, wrong gpiochip)."""
        self._no_access = True

    def claim_elsewhere(self, pin: int) -> None:
        """Another process holds BCM `pin` (rpi-lgpio's setup then fails; RPi.GPIO does not care)."""
        self._busy.add(pin)

    def fail_edge_detection(self) -> None:
        """add_event_detect fails as RPi.GPIO 0.7.1's does on kernels >= 6.6 (no effect for rpi-lgpio)."""
        self._edge_detection_broken = True

    # ---- test / clip driving ------------------------------------------------------------------
    def drive_high(self, pin: int, time_ns: int | None = None) -> None:
        """Drive BCM `pin` high from outside (a relay opening with a pull-up, a beam restored)."""
        self._drive(pin, self.HIGH, time_ns)

    def drive_low(self, pin: int, time_ns: int | None = None) -> None:
        """Drive BCM `pin` low from outside (a relay contact closing to ground)."""
        self._drive(pin, self.LOW, time_ns)

    def release(self, pin: int) -> None:
        """Stop driving BCM `pin`: it floats back to its pull (no edge callbacks)."""
        with self._lock:
            self._external.pop(pin, None)
            ch = self._channels.get(pin)
            if ch is not None and ch.direction == self.IN:
                ch.level = self._input_level(pin, ch.pull)

    def output_history(self, pin: int | None = None) -> list[OutputChange]:
        """Recorded output writes (for one BCM pin, or all), oldest first."""
        with self._lock:
            return [c for c in self._history if pin is None or c.pin == pin]

    def output_states(self, pin: int) -> list[int]:
        """Just the levels written to BCM `pin`, oldest first."""
        return [c.value for c in self.output_history(pin)]

    def clear_history(self) -> None:
        """Forget recorded output writes."""
        with self._lock:
            self._history.clear()

    def is_setup(self, pin: int) -> bool:
        """Whether BCM `pin` is currently set up."""
        with self._lock:
            return pin in self._channels

    def has_event_detect(self, pin: int) -> bool:
        """Whether BCM `pin` has edge detection enabled."""
        with self._lock:
            ch = self._channels.get(pin)
            return ch is not None and ch.edge is not None

    # ---- internals ---------------------------------------------------------------------------
    def _bcm(self, channel: int) -> int:
        if self._mode is None:
            raise RuntimeError(_MODE_MESSAGE)
        if isinstance(channel, bool) or not isinstance(channel, int):
            raise ValueError("Channel must be an integer or list/tuple of integers")  # noqa: TRY004 - as RPi.GPIO
        if self._mode == self.BOARD:
            if channel not in BOARD_TO_BCM:
                raise ValueError("The channel sent is invalid on a Raspberry Pi")
            return BOARD_TO_BCM[channel]
        if not 0 <= channel <= 27:
            raise ValueError("The channel sent is invalid on a Raspberry Pi")
        return channel

    def _input_level(self, bcm: int, pull: int) -> int:
        if bcm in self._external:
            return self._external[bcm]
        return self.HIGH if pull == self.PUD_UP else self.LOW

    def _drive(self, pin: int, level: int, time_ns: int | None) -> None:
        if not 0 <= pin <= 27:
            raise ValueError(f"drive: {pin} is not a BCM GPIO number (0-27)")
        now = self.clock() if time_ns is None else time_ns
        callbacks: list[Callable[[int], None]] = []
        channel_arg = pin
        with self._lock:
            self._external[pin] = level
            ch = self._channels.get(pin)
            if ch is None or ch.direction != self.IN:
                return  # an output or unused pin: the external level is remembered only
            previous, ch.level = ch.level, level
            if previous == level or ch.edge is None:
                return
            rising = level == self.HIGH
            if ch.edge == self.RISING and not rising or ch.edge == self.FALLING and rising:
                return
            # Debounce as RPi.GPIO does: ignore edges within bouncetime of the last accepted one.
            if ch.bouncetime_ms and ch.last_event_ns is not None and \
                    now - ch.last_event_ns < ch.bouncetime_ms * 1_000_000:
                return
            ch.last_event_ns = now
            ch.detected = True
            callbacks = list(ch.callbacks or [])
            channel_arg = ch.channel
        for callback in callbacks:
            try:
                callback(channel_arg)
            except Exception:  # RPi.GPIO prints and carries on; so do we
                log.exception("GPIO callback for channel %s raised", channel_arg)
