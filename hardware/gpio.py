"""GPIO adapter over the RPi.GPIO API: trigger inputs (loop detectors, IR beams, radar contacts)
and outputs (IR illuminator, status LED).

`RPi.GPIO` is imported only when no module is injected. On a Pi 5 the `rpi-lgpio` package
provides the same module name on top of lgpio. Numbering is always BCM. Pass
`gpio_module=StandinGPIO()` to run without a Pi.
"""
from __future__ import annotations

import logging
import threading
import time
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
            "RPi.GPIO is not installed: on a Pi 4 or older `pip install RPi.GPIO`, on a Pi 5 "
            "`pip install rpi-lgpio` (pip extra `alpr-node[pi]`)"
        ) from exc
    except RuntimeError as exc:  # RPi.GPIO raises this when not on a Pi or without /dev/gpiomem
        raise GpioError(f"RPi.GPIO cannot run here: {exc}") from exc
    return gpio


def _ensure_bcm(gpio: Any) -> None:
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


class TriggerInput:
    """A debounced digital input that reports every change as a TriggerEvent.

    active_low=True suits a relay contact or open-collector output switching the pin to ground
    against the pull-up: contact closed -> pin low -> active. `on_trigger` runs on the GPIO
    library's callback thread: keep it short and never block (hand off to a queue).
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
        self._lock = threading.Lock()
        self._closed = False
        self._events = 0
        g = self._gpio
        pud = {"up": g.PUD_UP, "down": g.PUD_DOWN, "off": g.PUD_OFF}[pull]
        try:
            _ensure_bcm(g)
            g.setup(pin, g.IN, pull_up_down=pud)
            self._level = int(g.input(pin))
            # RPi.GPIO's C module takes bouncetime as an int and rejects None (TypeError) and
            # 0 (ValueError): "no debounce" is spelled by leaving the argument out.
            debounce = {"bouncetime": bouncetime_ms} if bouncetime_ms > 0 else {}
            g.add_event_detect(pin, g.BOTH, callback=self._on_edge, **debounce)
        except (RuntimeError, ValueError) as exc:
            if isinstance(exc, GpioError):
                raise
            raise GpioError(f"TriggerInput {self.name} (BCM {pin}): {exc}") from exc

    @property
    def events(self) -> int:
        """How many TriggerEvents were reported."""
        with self._lock:
            return self._events

    def is_active(self) -> bool:
        """The logical state now (reads the pin)."""
        return self._is_active(int(self._gpio.input(self.pin)))

    def _is_active(self, level: int) -> bool:
        return (level == 0) if self.active_low else (level == 1)

    def _on_edge(self, channel: int) -> None:
        now = self._clock()
        level = int(self._gpio.input(self.pin))
        with self._lock:
            if self._closed or level == self._level:
                return  # a bounce that settled back, or a duplicate
            self._level = level
            self._events += 1
        event = TriggerEvent(self.pin, self.name, self.kind, "rising" if level else "falling",
                             self._is_active(level), now)
        log.debug("trigger %s", event)
        if self._on_trigger is not None:
            try:
                self._on_trigger(event)
            except Exception:  # a consumer bug must not kill the GPIO callback thread
                log.exception("on_trigger for %s raised", self.name)

    def close(self) -> None:
        """Stop edge detection and release the pin. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._gpio.remove_event_detect(self.pin)
            self._gpio.cleanup(self.pin)
        except (RuntimeError, ValueError) as exc:
            log.warning("TriggerInput %s: cleanup failed: %s", self.name, exc)

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
        self._lock = threading.Lock()
        self._blink_stop = threading.Event()
        self._blink_thread: threading.Thread | None = None
        self._closed = False
        self._on = bool(initial)
        g = self._gpio
        try:
            _ensure_bcm(g)
            g.setup(pin, g.OUT, initial=self._level(self._on))
        except (RuntimeError, ValueError) as exc:
            if isinstance(exc, GpioError):
                raise
            raise GpioError(f"OutputPin {self.name} (BCM {pin}): {exc}") from exc

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
            except (RuntimeError, ValueError) as exc:
                raise GpioError(f"OutputPin {self.name} (BCM {self.pin}): {exc}") from exc

    def close(self) -> None:
        """Stop blinking, switch off and release the pin. Safe to call twice."""
        if self._closed:
            return
        self._stop_blink()
        self._write(False)
        with self._lock:
            self._closed = True
        try:
            self._gpio.cleanup(self.pin)
        except (RuntimeError, ValueError) as exc:
            log.warning("OutputPin %s: cleanup failed: %s", self.name, exc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
