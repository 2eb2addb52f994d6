"""GPIO adapter over the RPi.GPIO API: trigger inputs (loop detectors, IR beams, radar contacts)
and outputs (IR illuminator, status LED).

`RPi.GPIO` is imported only when no module is injected. On a Pi 5 the `rpi-lgpio` package
provides the same module name on top of lgpio. Numbering is always BCM. Pass
`gpio_module=StandinGPIO()` to run without a Pi.

The two implementations differ in ways this adapter evens out (read in RPi.GPIO 0.7.1's
py_gpio.c / event_gpio.c and rpi-lgpio 0.6's RPi/GPIO): rpi-lgpio lets failures of the lgpio calls
underneath escape as `lgpio.error`, a plain Exception rather than RuntimeError, so the error types
caught here include the module's `lgpio.error` when it has one; and rpi-lgpio's setup(OUT)
silently drops a pin's edge detection, so each pin is claimed once per process here. (A second
add_event_detect raises RuntimeError("Conflicting edge detection ...") in both.)
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from .errors import GpioError

log = logging.getLogger(__name__)

PULLS = ("up", "down", "off")


def load_gpio_module(gpio_module: Any | None = None) -> Any:
    """The injected module, or RPi.GPIO (rpi-lgpio on a Pi 5) with a clear error when absent."""
    if gpio_module is not None:
        return gpio_module
    try:
        import RPi.GPIO as gpio
    except ImportError as exc:
        raise GpioError(
            "RPi.GPIO is not installed: on Raspberry Pi OS Bookworm (any Pi) `pip install rpi-lgpio` "
            "(pip extra `alpr-node[pi]`)"
        ) from exc
    except (RuntimeError, NotImplementedError) as exc:
        # Both raise RuntimeError when not on a Pi; rpi-lgpio NotImplementedError for an old-style
        # board revision code.
        raise GpioError(f"RPi.GPIO cannot run here: {exc}") from exc
    except OSError as exc:
        # rpi-lgpio imports lgpio, which creates its notification pipe (.lgd-nfy*) in the current
        # directory at import: a service whose working directory it cannot write fails right here
        # (joan2937/lg issue #22).
        raise GpioError(f"RPi.GPIO (rpi-lgpio) cannot start lgpio: {exc}. lgpio writes its notification pipe "
                        "into the working directory: run from a directory the service user can write "
                        "(systemd WorkingDirectory=, e.g. the StateDirectory)") from exc
    return gpio


def gpio_errors(gpio: Any) -> tuple[type[Exception], ...]:
    """The exception types a GPIO module raises on failure: RuntimeError and ValueError, plus
    `lgpio.error` under rpi-lgpio (its RPi.GPIO module imports lgpio, so it is `gpio.lgpio.error`)."""
    lgpio_error = getattr(getattr(gpio, "lgpio", None), "error", None)
    if isinstance(lgpio_error, type) and issubclass(lgpio_error, Exception):
        return (RuntimeError, ValueError, lgpio_error)
    return (RuntimeError, ValueError)


EDGE_DETECTION_HINT = ("RPi.GPIO 0.7.1's edge detection fails on kernels >= 6.6 (Raspberry Pi OS since 2024): "
                       "`pip uninstall RPi.GPIO && pip install rpi-lgpio`")

# Pins claimed through this module, per GPIO module object: BCM pin -> the owner (weakly held, so
# an owner dropped without close() does not hold the pin forever).
_claims_lock = threading.Lock()
_claims: weakref.WeakKeyDictionary[Any, dict[int, tuple[weakref.ref[Any], str]]] = weakref.WeakKeyDictionary()


def _claim(gpio: Any, pin: int, owner: Any, label: str) -> None:
    """Refuse a pin another TriggerInput/OutputPin of this process holds on the same module.

    Both libraries refuse a second edge detection themselves, but only with "Conflicting edge
    detection", which names neither user, and rpi-lgpio lets setup(OUT) silently drop an input's
    edge detection; so the check is made here, the same for both, naming the holder.
    """
    with _claims_lock:
        pins = _claims.setdefault(gpio, {})
        held = pins.get(pin)
        if held is not None and held[0]() is not None:
            raise GpioError(f"{label} (BCM {pin}): already used by {held[1]} in this process")
        pins[pin] = (weakref.ref(owner), label)


def _unclaim(gpio: Any, pin: int, owner: Any) -> None:
    """Give up `owner`'s claim on `pin` (a claim whose owner is gone is dropped too)."""
    with _claims_lock:
        pins = _claims.get(gpio, {})
        held = pins.get(pin)
        if held is not None and held[0]() in (owner, None):
            del pins[pin]


def _ensure_bcm(gpio: Any) -> None:
    """Select BCM numbering, or refuse if something else in the process chose BOARD."""
    mode = gpio.getmode()
    if mode is None:
        gpio.setwarnings(False)
        gpio.setmode(gpio.BCM)
    elif mode != gpio.BCM:
        raise GpioError("GPIO numbering is already BOARD in this process; this adapter uses BCM numbers")


@dataclass(frozen=True)
class TriggerEvent:
    """An edge on a trigger input.

    pin: BCM number. kind: what is wired ("loop", "ir_beam", "radar", ...). edge: "rising" or
    "falling" (the electrical level change). active: the logical state after the edge (a vehicle
    is present / the beam is broken). time_ns: monotonic clock, as frame timestamps.
    """

    pin: int
    name: str
    kind: str
    edge: str
    active: bool
    time_ns: int


# After a reported edge the pin is read again this long after the bounce time (see TriggerInput).
RESYNC_MARGIN_S = 0.005


class TriggerInput:
    """A debounced digital input that reports every change as a TriggerEvent.

    active_low=True suits a relay contact or open-collector output switching the pin to ground
    against the pull-up: contact closed -> pin low -> active. `on_trigger` runs on the GPIO
    library's callback thread (or this input's resync timer), one event at a time and in the
    order the pin was read: keep it short and never block (hand off to a queue).
    """

    def __init__(
        self,
        pin: int,
        *,
        name: str | None = None,
        kind: str = "loop",
        pull: str = "up",
        active_low: bool = True,
        bouncetime_ms: int = 20,
        on_trigger: Callable[[TriggerEvent], None] | None = None,
        gpio_module: Any | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if pull not in PULLS:
            raise GpioError(f"TriggerInput pin {pin}: pull must be one of {', '.join(PULLS)}, got {pull!r}")
        if bouncetime_ms < 0:
            raise GpioError(f"TriggerInput pin {pin}: bouncetime_ms must be >= 0")
        self.pin = pin
        self.name = name or f"gpio{pin}"
        self.kind = kind
        self.active_low = active_low
        self._on_trigger = on_trigger
        self._clock = clock_ns
        self._gpio = load_gpio_module(gpio_module)
        self._errors = gpio_errors(self._gpio)
        self._lock = threading.Lock()
        # Held from reading the pin to the end of on_trigger, so that events reach the consumer
        # in the order the pin was read, whichever thread (the library's callback thread or the
        # resync timer) reads it. Reentrant: on_trigger may drive a stand-in pin in tests.
        self._delivery = threading.RLock()
        self._closed = False
        self._events = 0
        # RPi.GPIO drops every edge within bouncetime of the last one it reported: after a
        # glitch shorter than that (falling edge reported, rising edge dropped) the pin is back at
        # rest while this input still holds "active", and the next vehicle's real edge then reads
        # as no change and is lost. So the pin is read again once the bounce time is over, and a
        # change nobody reported is reported then (a one-shot timer per reported edge).
        self._resync_s = bouncetime_ms / 1000.0 + RESYNC_MARGIN_S if bouncetime_ms > 0 else 0.0
        self._resync: threading.Timer | None = None
        g = self._gpio
        pud = {"up": g.PUD_UP, "down": g.PUD_DOWN, "off": g.PUD_OFF}[pull]
        label = f"TriggerInput {self.name}"
        _claim(g, pin, self, label)
        try:
            _ensure_bcm(g)
            g.setup(pin, g.IN, pull_up_down=pud)
            self._level = int(g.input(pin))
            # RPi.GPIO's C module takes bouncetime as an int and rejects None (TypeError) and
            # 0 (ValueError): "no debounce" is spelled by leaving the argument out.
            debounce = {"bouncetime": int(bouncetime_ms)} if bouncetime_ms > 0 else {}
            g.add_event_detect(pin, g.BOTH, callback=self._on_edge, **debounce)
        except self._errors as exc:
            _unclaim(g, pin, self)
            if isinstance(exc, GpioError):
                raise
            hint = f" ({EDGE_DETECTION_HINT})" if "Failed to add edge detection" in str(exc) else ""
            raise GpioError(f"{label} (BCM {pin}): {exc}{hint}") from exc

    @property
    def events(self) -> int:
        """How many TriggerEvents were reported."""
        with self._lock:
            return self._events

    def is_active(self) -> bool:
        """The logical state now (reads the pin)."""
        try:
            return self._is_active(int(self._gpio.input(self.pin)))
        except self._errors as exc:
            raise GpioError(f"TriggerInput {self.name} (BCM {self.pin}): {exc}") from exc

    def _is_active(self, level: int) -> bool:
        return (level == 0) if self.active_low else (level == 1)

    def _on_edge(self, channel: int) -> None:
        self._report_change("edge callback")

    def _check_settled(self) -> None:
        self._report_change("check after the bounce time")

    def _report_change(self, where: str) -> None:
        # Read, compare and deliver under one lock: otherwise a thread preempted between updating
        # the level and calling on_trigger delivers its event after a newer one, and the consumer
        # is left holding the older state while the pin is at rest (no later change corrects it).
        with self._delivery:
            now = self._clock()
            try:
                level = int(self._gpio.input(self.pin))
            except self._errors:  # the pin went away under us (closed, or the chip is gone)
                log.exception("TriggerInput %s: reading BCM %d in the %s failed", self.name, self.pin, where)
                return
            with self._lock:
                if self._closed or level == self._level:
                    return  # a bounce that settled back, or a duplicate
                self._level = level
                self._events += 1
                if self._resync_s > 0:
                    if self._resync is not None:
                        self._resync.cancel()
                    self._resync = threading.Timer(self._resync_s, self._check_settled)
                    self._resync.daemon = True
                    self._resync.name = f"gpio-settle-{self.pin}"
                    self._resync.start()
            event = TriggerEvent(self.pin, self.name, self.kind, "rising" if level else "falling",
                                 self._is_active(level), now)
            log.debug("trigger %s (%s)", event, where)
            if self._on_trigger is not None:
                try:
                    self._on_trigger(event)
                except Exception:  # a consumer bug must not kill the GPIO callback thread
                    log.exception("on_trigger for %s raised", self.name)

    def close(self) -> None:
        """Stop edge detection and release the pin. Safe to call twice.

        Does not wait for an event being delivered (the delivery lock is not taken), so it may be
        called from on_trigger or while a consumer is slow; an event already being delivered
        finishes, and no other starts.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._resync is not None:
                self._resync.cancel()
        try:
            self._gpio.remove_event_detect(self.pin)
            self._gpio.cleanup(self.pin)
        except self._errors as exc:
            log.warning("TriggerInput %s: cleanup failed: %s", self.name, exc)
        finally:
            _unclaim(self._gpio, self.pin, self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OutputPin:
    """A digital output (IR illuminator relay, status LED) with on/off/blink.

    The blink thread is owned here: started by blink(), stopped by on()/off()/close().
    """

    def __init__(self, pin: int, *, name: str | None = None, active_high: bool = True, initial: bool = False,
                 gpio_module: Any | None = None) -> None:
        self.pin = pin
        self.name = name or f"gpio{pin}"
        self.active_high = active_high
        self._gpio = load_gpio_module(gpio_module)
        self._errors = gpio_errors(self._gpio)
        self._lock = threading.Lock()
        self._blink_stop = threading.Event()
        self._blink_thread: threading.Thread | None = None
        self._closed = False
        self._on = bool(initial)
        g = self._gpio
        label = f"OutputPin {self.name}"
        _claim(g, pin, self, label)
        try:
            _ensure_bcm(g)
            # initial= sets the level before the pin turns into an output (both libraries), so an
            # active-low relay board does not click on for an instant.
            g.setup(pin, g.OUT, initial=self._level(self._on))
        except self._errors as exc:
            _unclaim(g, pin, self)
            if isinstance(exc, GpioError):
                raise
            raise GpioError(f"{label} (BCM {pin}): {exc}") from exc

    @property
    def is_on(self) -> bool:
        """The logical state last written."""
        with self._lock:
            return self._on

    @property
    def blinking(self) -> bool:
        """Whether the blink thread is running."""
        thread = self._blink_thread
        return thread is not None and thread.is_alive()

    def on(self) -> None:
        """Switch on (stops blinking)."""
        self._stop_blink()
        self._write(True)

    def off(self) -> None:
        """Switch off (stops blinking)."""
        self._stop_blink()
        self._write(False)

    def toggle(self) -> None:
        """Invert the state (stops blinking)."""
        self._stop_blink()
        with self._lock:
            state = self._on
        self._write(not state)

    def blink(self, on_s: float = 0.5, off_s: float = 0.5, count: int | None = None) -> None:
        """Blink in a background thread: `count` cycles, or until on()/off()/close()."""
        if on_s <= 0 or off_s <= 0:
            raise ValueError("blink: on_s and off_s must be > 0")
        self._stop_blink()
        if self._closed:
            raise GpioError(f"OutputPin {self.name}: closed")
        self._blink_stop = threading.Event()
        stop = self._blink_stop
        self._blink_thread = threading.Thread(target=self._blink_loop, args=(stop, on_s, off_s, count),
                                              name=f"blink-{self.name}", daemon=True)
        self._blink_thread.start()

    def _blink_loop(self, stop: threading.Event, on_s: float, off_s: float, count: int | None) -> None:
        cycles = 0
        try:
            while count is None or cycles < count:
                self._write(True)
                if stop.wait(on_s):
                    break
                self._write(False)
                cycles += 1
                if stop.wait(off_s):
                    break
            self._write(False)
        except GpioError:  # the pin went away under us: report, leave the thread
            log.exception("OutputPin %s: blink stopped", self.name)

    def _stop_blink(self, timeout_s: float = 2.0) -> None:
        self._blink_stop.set()
        thread, self._blink_thread = self._blink_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("OutputPin %s: blink thread did not stop in %.1fs", self.name, timeout_s)

    def _level(self, on: bool) -> int:
        return self._gpio.HIGH if on == self.active_high else self._gpio.LOW

    def _write(self, on: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._on = on
            try:
                self._gpio.output(self.pin, self._level(on))
            except self._errors as exc:
                raise GpioError(f"OutputPin {self.name} (BCM {self.pin}): {exc}") from exc

    def close(self) -> None:
        """Stop blinking, switch off and release the pin. Safe to call twice."""
        if self._closed:
            return
        self._stop_blink()
        try:
            self._write(False)
        except GpioError:  # still release the pin (and our claim on it) below
            log.exception("OutputPin %s: switching off on close failed", self.name)
        with self._lock:
            self._closed = True
        try:
            self._gpio.cleanup(self.pin)
        except self._errors as exc:
            log.warning("OutputPin %s: cleanup failed: %s", self.name, exc)
        finally:
            _unclaim(self._gpio, self.pin, self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
