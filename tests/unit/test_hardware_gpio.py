"""GPIO adapter: TriggerInput (active-low, debounce, events) and OutputPin (on/off/blink) on the stand-in."""
import sys
import threading
import time

import pytest

from hardware.errors import GpioError, HardwareError
from hardware.gpio import OutputPin, TriggerEvent, TriggerInput, load_gpio_module
from hardware.standin_gpio import StandinGPIO

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 5_000_000_000

    def __call__(self) -> int:
        return self.now


def test_active_low_loop_detector_reports_presence_then_clear() -> None:
    clock = FakeClock()
    gpio = StandinGPIO(clock=clock)
    events: list[TriggerEvent] = []
    trig = TriggerInput(17, name="loop1", kind="loop", pull="up", active_low=True, bouncetime_ms=20,
                        on_trigger=events.append, gpio_module=gpio, clock_ns=clock)
    assert gpio.getmode() == gpio.BCM  # the adapter chose BCM numbering
    assert trig.is_active() is False  # pull-up, contact open
    gpio.drive_low(17)  # relay contact closes to ground: vehicle present
    clock.now += 500_000_000
    gpio.drive_high(17)
    assert [(e.edge, e.active) for e in events] == [("falling", True), ("rising", False)]
    assert events[0] == TriggerEvent(17, "loop1", "loop", "falling", True, 5_000_000_000)
    assert events[1].time_ns - events[0].time_ns == 500_000_000
    assert trig.events == 2
    trig.close()


def test_active_high_radar_contact_with_pull_down() -> None:
    gpio = StandinGPIO()
    events: list[TriggerEvent] = []
    trig = TriggerInput(27, kind="radar", pull="down", active_low=False, bouncetime_ms=0,
                        on_trigger=events.append, gpio_module=gpio)
    gpio.drive_high(27)
    assert events[-1].active is True and events[-1].edge == "rising" and events[-1].kind == "radar"
    assert trig.is_active() is True
    trig.close()


def test_bounces_within_bouncetime_are_dropped() -> None:
    clock = FakeClock()
    gpio = StandinGPIO(clock=clock)
    events: list[TriggerEvent] = []
    with TriggerInput(22, kind="ir_beam", bouncetime_ms=30, on_trigger=events.append, gpio_module=gpio,
                      clock_ns=clock):
        for _ in range(3):  # contact chatter: 2 ms apart
            gpio.drive_low(22)
            clock.now += 2_000_000
            gpio.drive_high(22)
            clock.now += 2_000_000
        gpio.drive_low(22)  # final settled state, still inside the window from the first edge
        clock.now += 100_000_000
        gpio.drive_high(22)
    assert [e.active for e in events] == [True, False]


def test_close_releases_pin_and_is_idempotent() -> None:
    gpio = StandinGPIO()
    events: list[TriggerEvent] = []
    trig = TriggerInput(17, on_trigger=events.append, gpio_module=gpio)
    assert gpio.has_event_detect(17)
    trig.close()
    trig.close()
    assert not gpio.is_setup(17)
    gpio.drive_low(17)
    assert events == []
    # The pin can be claimed again after close.
    TriggerInput(17, gpio_module=gpio).close()


def test_double_claim_is_a_gpio_error_naming_the_pin() -> None:
    gpio = StandinGPIO()
    first = TriggerInput(17, name="loop1", gpio_module=gpio)
    with pytest.raises(GpioError, match=r"loop1b \(BCM 17\): already used by TriggerInput loop1"):
        TriggerInput(17, name="loop1b", gpio_module=gpio)
    first.close()
    # Edge detection set on the pin by other code in the process: RPi.GPIO's own refusal shows.
    gpio.setup(17, gpio.IN)
    gpio.add_event_detect(17, gpio.BOTH)
    with pytest.raises(GpioError, match=r"loop1c \(BCM 17\): Conflicting edge detection"):
        TriggerInput(17, name="loop1c", gpio_module=gpio)


def test_board_mode_already_set_is_refused() -> None:
    gpio = StandinGPIO()
    gpio.setmode(gpio.BOARD)
    with pytest.raises(GpioError, match="BOARD"):
        TriggerInput(17, gpio_module=gpio)


def test_bad_pull_is_refused() -> None:
    with pytest.raises(GpioError, match="pull must be one of up, down, off"):
        TriggerInput(17, pull="sideways", gpio_module=StandinGPIO())


def test_on_trigger_exception_is_contained() -> None:
    gpio = StandinGPIO()

    def broken(event: TriggerEvent) -> None:
        raise RuntimeError("consumer bug")

    trig = TriggerInput(17, on_trigger=broken, bouncetime_ms=0, gpio_module=gpio)
    gpio.drive_low(17)
    gpio.drive_high(17)
    assert trig.events == 2
    trig.close()


def test_output_pin_on_off_toggle_recorded() -> None:
    gpio = StandinGPIO()
    ir = OutputPin(23, name="ir", gpio_module=gpio)
    ir.on()
    ir.off()
    ir.toggle()
    assert ir.is_on is True
    assert gpio.output_states(23) == [0, 1, 0, 1]
    ir.close()
    ir.close()
    assert gpio.output_states(23)[-1] == 0  # switched off on close
    assert not gpio.is_setup(23)


def test_output_pin_active_low_inverts_levels() -> None:
    gpio = StandinGPIO()
    led = OutputPin(24, active_high=False, gpio_module=gpio)
    led.on()
    assert gpio.output_states(24) == [1, 0]  # initial off = high, on = low
    led.close()


def test_blink_counts_cycles_and_stops() -> None:
    gpio = StandinGPIO()
    led = OutputPin(25, name="status", gpio_module=gpio)
    led.blink(on_s=0.005, off_s=0.005, count=3)
    deadline = time.monotonic() + 2.0
    while led.blinking and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not led.blinking
    assert gpio.output_states(25) == [0, 1, 0, 1, 0, 1, 0, 0]
    history = gpio.output_history(25)
    assert history[-1].time_ns >= history[1].time_ns + 3 * 2 * 4_000_000  # really paced
    led.close()


def test_blink_forever_stopped_by_close_within_bound() -> None:
    gpio = StandinGPIO()
    led = OutputPin(26, gpio_module=gpio)
    led.blink(on_s=0.01, off_s=0.01)
    time.sleep(0.05)
    started = time.monotonic()
    led.close()
    assert time.monotonic() - started < 0.5
    assert not led.blinking
    assert gpio.output_states(26)[-1] == 0
    assert not any(t.name == "blink-gpio26" for t in threading.enumerate())


def test_missing_rpi_gpio_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "RPi", None)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", None)
    with pytest.raises(GpioError, match="rpi-lgpio") as info:
        load_gpio_module()
    assert isinstance(info.value, HardwareError) and isinstance(info.value, RuntimeError)


def test_a_glitch_shorter_than_the_bounce_time_does_not_swallow_the_next_vehicle() -> None:
    """RPi.GPIO drops the glitch's second edge (within bouncetime of the first): the input used
    to keep 'active' while the pin was back at rest, so the next vehicle's edge read as no
    change and that vehicle got no pass at all. The pin is read again after the bounce time."""
    clock = FakeClock()
    gpio = StandinGPIO(clock=clock)
    events: list[TriggerEvent] = []
    with TriggerInput(17, name="loop1", bouncetime_ms=20, on_trigger=events.append, gpio_module=gpio,
                      clock_ns=clock):
        gpio.drive_low(17)  # a 2 ms spike on the loop's line
        clock.now += 2_000_000
        gpio.drive_high(17)  # dropped by the debounce, as RPi.GPIO does
        deadline = time.monotonic() + 2.0
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [e.active for e in events] == [True, False]  # the release, found after the bounce time
        clock.now += 5_000_000_000
        gpio.drive_low(17)  # the next vehicle
        assert [e.active for e in events] == [True, False, True]
