"""The RPi.GPIO stand-in: same errors as RPi.GPIO, edges and debounce, recorded outputs."""
import pytest

from hardware.standin_gpio import StandinGPIO

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += int(ms * 1_000_000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gpio(clock: FakeClock) -> StandinGPIO:
    g = StandinGPIO(clock=clock)
    g.setmode(g.BCM)
    return g


def test_setup_before_setmode_raises_like_rpi_gpio() -> None:
    g = StandinGPIO()
    with pytest.raises(RuntimeError, match=r"Please set pin numbering mode using GPIO\.setmode\(GPIO\.BOARD\) "
                                           r"or GPIO\.setmode\(GPIO\.BCM\)"):
        g.setup(17, g.IN)
    assert g.getmode() is None


def test_setmode_rejects_invalid_and_changed_mode() -> None:
    g = StandinGPIO()
    with pytest.raises(ValueError, match="invalid mode"):
        g.setmode(99)
    g.setmode(g.BCM)
    g.setmode(g.BCM)  # same mode again is fine
    with pytest.raises(ValueError, match="different mode"):
        g.setmode(g.BOARD)


def test_output_on_input_pin_raises(gpio: StandinGPIO) -> None:
    gpio.setup(17, gpio.IN, pull_up_down=gpio.PUD_UP)
    with pytest.raises(RuntimeError, match="The GPIO channel has not been set up as an OUTPUT"):
        gpio.output(17, gpio.HIGH)
    with pytest.raises(RuntimeError, match="The GPIO channel has not been set up as an OUTPUT"):
        gpio.output(18, gpio.HIGH)  # never set up


def test_input_requires_setup_and_pull_sets_idle_level(gpio: StandinGPIO) -> None:
    with pytest.raises(RuntimeError, match=r"You must setup\(\) the GPIO channel first"):
        gpio.input(5)
    gpio.setup(5, gpio.IN, pull_up_down=gpio.PUD_UP)
    gpio.setup(6, gpio.IN, pull_up_down=gpio.PUD_DOWN)
    assert gpio.input(5) == gpio.HIGH
    assert gpio.input(6) == gpio.LOW


def test_setup_argument_errors(gpio: StandinGPIO) -> None:
    with pytest.raises(ValueError, match="invalid direction"):
        gpio.setup(17, 7)
    with pytest.raises(ValueError, match="pull_up_down parameter is not valid for outputs"):
        gpio.setup(17, gpio.OUT, pull_up_down=gpio.PUD_UP)
    with pytest.raises(ValueError, match="channel sent is invalid"):
        gpio.setup(40, gpio.IN)


def test_add_event_detect_twice_conflicts(gpio: StandinGPIO) -> None:
    gpio.setup(17, gpio.IN, pull_up_down=gpio.PUD_UP)
    gpio.add_event_detect(17, gpio.FALLING)
    with pytest.raises(RuntimeError, match="Conflicting edge detection already enabled for this GPIO channel"):
        gpio.add_event_detect(17, gpio.FALLING)
    gpio.remove_event_detect(17)
    gpio.add_event_detect(17, gpio.RISING)  # allowed again after removal


def test_event_detect_needs_input_and_valid_edge(gpio: StandinGPIO) -> None:
    gpio.setup(18, gpio.OUT)
    with pytest.raises(RuntimeError, match="as an input first"):
        gpio.add_event_detect(18, gpio.RISING)
    gpio.setup(17, gpio.IN)
    with pytest.raises(ValueError, match="RISING, FALLING or BOTH"):
        gpio.add_event_detect(17, 1234)
    with pytest.raises(RuntimeError, match="add_event_detect first"):
        gpio.add_event_callback(17, lambda ch: None)


def test_edges_fire_callbacks_with_channel(gpio: StandinGPIO) -> None:
    seen: list[tuple[str, int]] = []
    gpio.setup(17, gpio.IN, pull_up_down=gpio.PUD_UP)
    gpio.add_event_detect(17, gpio.FALLING, callback=lambda ch: seen.append(("a", ch)))
    gpio.add_event_callback(17, lambda ch: seen.append(("b", ch)))
    gpio.drive_high(17)  # already high: no edge
    gpio.drive_low(17)  # falling: fires both
    gpio.drive_high(17)  # rising: not watched
    assert seen == [("a", 17), ("b", 17)]
    assert gpio.event_detected(17) is True
    assert gpio.event_detected(17) is False  # cleared by reading


def test_bouncetime_uses_the_standin_clock(gpio: StandinGPIO, clock: FakeClock) -> None:
    times: list[int] = []
    gpio.setup(17, gpio.IN, pull_up_down=gpio.PUD_UP)
    gpio.add_event_detect(17, gpio.BOTH, callback=lambda ch: times.append(clock.now), bouncetime=50)
    gpio.drive_low(17)  # accepted
    clock.advance_ms(5)
    gpio.drive_high(17)  # within 50 ms: bounce, ignored
    clock.advance_ms(5)
    gpio.drive_low(17)  # still within 50 ms of the accepted edge
    clock.advance_ms(60)
    gpio.drive_high(17)  # accepted
    assert len(times) == 2
    assert times[1] - times[0] == 70_000_000
    assert gpio.input(17) == gpio.HIGH  # the level follows the wire regardless of debounce


def test_bouncetime_must_be_positive(gpio: StandinGPIO) -> None:
    gpio.setup(17, gpio.IN)
    with pytest.raises(ValueError, match="Bouncetime"):
        gpio.add_event_detect(17, gpio.BOTH, bouncetime=0)


def test_bouncetime_none_is_a_type_error_as_in_rpi_gpio(gpio: StandinGPIO) -> None:
    # RPi.GPIO 0.7.1 parses (channel, edge, callback, bouncetime) with "ii|Oi": None is no int
    gpio.setup(17, gpio.IN)
    with pytest.raises(TypeError):
        gpio.add_event_detect(17, gpio.BOTH, bouncetime=None)
    gpio.add_event_detect(17, gpio.BOTH)  # left out: no debounce


def test_outputs_recorded_with_times(gpio: StandinGPIO, clock: FakeClock) -> None:
    gpio.setup(18, gpio.OUT, initial=gpio.LOW)
    clock.advance_ms(10)
    gpio.output(18, gpio.HIGH)
    clock.advance_ms(10)
    gpio.output(18, False)
    history = gpio.output_history(18)
    assert [c.value for c in history] == [0, 1, 0]
    assert [c.time_ns - history[0].time_ns for c in history] == [0, 10_000_000, 20_000_000]
    assert gpio.output_states(18) == [0, 1, 0]


def test_board_numbering_maps_to_bcm() -> None:
    g = StandinGPIO()
    g.setmode(g.BOARD)
    seen: list[int] = []
    g.setup(11, g.IN, pull_up_down=g.PUD_UP)  # physical pin 11 is BCM 17
    g.add_event_detect(11, g.FALLING, callback=seen.append)
    g.drive_low(17)
    assert seen == [11]  # callbacks get the caller's numbering
    with pytest.raises(ValueError, match="invalid"):
        g.setup(1, g.IN)  # 3V3 power pin


def test_cleanup_resets_channels_and_mode(gpio: StandinGPIO) -> None:
    gpio.setup(17, gpio.IN)
    gpio.setup(18, gpio.OUT)
    gpio.cleanup(17)
    assert not gpio.is_setup(17) and gpio.is_setup(18)
    gpio.cleanup()
    assert gpio.getmode() is None
    with pytest.raises(RuntimeError, match="Please set pin numbering mode"):
        gpio.input(18)


def test_callback_exception_does_not_stop_other_callbacks(gpio: StandinGPIO) -> None:
    seen: list[int] = []

    def broken(ch: int) -> None:
        raise ValueError("consumer bug")

    gpio.setup(17, gpio.IN, pull_up_down=gpio.PUD_UP)
    gpio.add_event_detect(17, gpio.FALLING, callback=broken)
    gpio.add_event_callback(17, seen.append)
    gpio.drive_low(17)
    assert seen == [17]
