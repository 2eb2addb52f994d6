"""TriggerInput/OutputPin and StandinGPIO against what RPi.GPIO (source/py_gpio.c, event_gpio.c)
and rpi-lgpio 0.6 (RPi/GPIO, over lgpio) really do where the two differ: lgpio.error is not a
RuntimeError, a second edge detection conflicts in both, RPi.GPIO 0.7.1's edge detection fails
on kernels >= 6.6, and importing rpi-lgpio fails where the working directory is not writable."""
import sys
from pathlib import Path

import pytest

from hardware.errors import GpioError
from hardware.gpio import (
    OutputPin,
    TriggerEvent,
    TriggerInput,
    gpio_errors,
    load_gpio_module,
)
from hardware.standin_gpio import LgpioError, StandinGPIO

pytestmark = pytest.mark.unit


# ---- the stand-in follows each library ----------------------------------------------------------

def test_lgpio_error_is_not_a_runtime_error_and_is_reachable_from_the_module() -> None:
    gpio = StandinGPIO(library="rpi-lgpio")
    assert gpio.lgpio is not None and gpio.lgpio.error is LgpioError
    assert not issubclass(LgpioError, RuntimeError)
    assert str(LgpioError("GPIO busy")) == "'GPIO busy'"  # lgpio.error's str() is repr(value)
    assert gpio_errors(gpio) == (RuntimeError, ValueError, LgpioError)
    assert gpio_errors(StandinGPIO()) == (RuntimeError, ValueError)


@pytest.mark.parametrize("library", ["RPi.GPIO", "rpi-lgpio"])
def test_standin_refuses_a_repeated_edge_detection_like_both_libraries(library: str) -> None:
    # rpi-lgpio 0.6 compares lgpio's edge constant with RPi.GPIO's on gpiochip v2 kernels (all of
    # Raspberry Pi OS), so even the same edge and bouncetime conflict there, as in RPi.GPIO.
    gpio = StandinGPIO(library=library)
    gpio.setmode(gpio.BCM)
    gpio.setup(17, gpio.IN, pull_up_down=gpio.PUD_UP)
    seen: list[str] = []
    gpio.add_event_detect(17, gpio.FALLING, callback=lambda ch: seen.append("a"), bouncetime=5)
    for edge, bouncetime in ((gpio.FALLING, 5), (gpio.FALLING, 10), (gpio.RISING, 5)):
        with pytest.raises(RuntimeError, match="Conflicting edge detection already enabled for this GPIO channel"):
            gpio.add_event_detect(17, edge, callback=lambda ch: seen.append("b"), bouncetime=bouncetime)
    gpio.drive_low(17)
    assert seen == ["a"]


def test_standin_pull_up_down_on_outputs_like_rpi_lgpio() -> None:
    gpio = StandinGPIO(library="rpi-lgpio")
    gpio.setmode(gpio.BCM)
    gpio.setup(18, gpio.OUT, pull_up_down=gpio.PUD_OFF, initial=gpio.LOW)  # the default: accepted
    for pull in (gpio.PUD_UP, None):
        with pytest.raises(ValueError, match="not valid for outputs"):
            gpio.setup(19, gpio.OUT, pull_up_down=pull)
    with pytest.raises(ValueError, match="Invalid value for pull_up_down"):
        gpio.setup(20, gpio.IN, pull_up_down=None)
    rpi = StandinGPIO()
    rpi.setmode(rpi.BCM)
    rpi.setup(18, rpi.OUT, pull_up_down=rpi.PUD_OFF)
    with pytest.raises(TypeError):
        rpi.setup(19, rpi.IN, pull_up_down=None)  # RPi.GPIO parses it as a C int


def test_standin_cleanup_before_setmode_does_nothing_like_both_libraries() -> None:
    for library in ("RPi.GPIO", "rpi-lgpio"):
        gpio = StandinGPIO(library=library)
        gpio.setwarnings(False)
        gpio.cleanup(17)  # both return without raising when nothing was set up
        assert gpio.getmode() is None


# ---- the adapter under rpi-lgpio: lgpio.error becomes GpioError ---------------------------------

def test_no_gpiochip_access_is_a_gpio_error_under_rpi_lgpio() -> None:
    gpio = StandinGPIO(library="rpi-lgpio")
    gpio.deny_gpio_access()  # e.g. the service user is not in the gpio group
    with pytest.raises(GpioError, match=r"loop1 \(BCM 17\): 'can not open gpiochip'"):
        TriggerInput(17, name="loop1", gpio_module=gpio)
    with pytest.raises(GpioError, match="can not open gpiochip"):
        OutputPin(23, name="ir", gpio_module=gpio)


def test_no_gpio_access_is_a_gpio_error_under_rpi_gpio() -> None:
    gpio = StandinGPIO()
    gpio.deny_gpio_access()
    with pytest.raises(GpioError, match="No access to /dev/mem"):
        TriggerInput(17, gpio_module=gpio)


def test_a_pin_held_by_another_process_is_a_gpio_error() -> None:
    gpio = StandinGPIO(library="rpi-lgpio")
    gpio.claim_elsewhere(17)
    gpio.claim_elsewhere(23)
    with pytest.raises(GpioError, match="GPIO busy"):
        TriggerInput(17, gpio_module=gpio)
    with pytest.raises(GpioError, match="GPIO busy"):
        OutputPin(23, gpio_module=gpio)
    TriggerInput(17 + 5, gpio_module=gpio).close()  # the failures left nothing claimed or broken


def test_an_lgpio_error_while_switching_is_a_gpio_error(monkeypatch: pytest.MonkeyPatch) -> None:
    gpio = StandinGPIO(library="rpi-lgpio")
    led = OutputPin(24, gpio_module=gpio)

    def failing_output(channel: int, value: int) -> None:
        raise LgpioError("bad write")

    monkeypatch.setattr(gpio, "output", failing_output)
    with pytest.raises(GpioError, match="bad write"):
        led.on()
    led.close()  # switching off fails too, but the pin is still released
    assert not gpio.is_setup(24)


# ---- one claim per pin, the same under both libraries -------------------------------------------

@pytest.mark.parametrize("library", ["RPi.GPIO", "rpi-lgpio"])
def test_a_pin_is_claimed_once_whatever_the_library(library: str) -> None:
    gpio = StandinGPIO(library=library)
    events: list[TriggerEvent] = []
    first = TriggerInput(17, name="loop1", on_trigger=events.append, gpio_module=gpio)
    with pytest.raises(GpioError, match=r"loop1b \(BCM 17\): already used by TriggerInput loop1"):
        TriggerInput(17, name="loop1b", on_trigger=events.append, gpio_module=gpio)
    with pytest.raises(GpioError, match="already used by TriggerInput loop1"):
        OutputPin(17, gpio_module=gpio)  # rpi-lgpio would silently drop the input's edge detection
    gpio.drive_low(17)
    assert len(events) == 1  # one event per edge, not one per claim
    first.close()
    TriggerInput(17, gpio_module=gpio).close()  # free again after close


def test_claims_are_per_gpio_module() -> None:
    a, b = StandinGPIO(), StandinGPIO()
    one, two = TriggerInput(17, gpio_module=a), TriggerInput(17, gpio_module=b)
    one.close()
    two.close()


# ---- RPi.GPIO 0.7.1 on kernels >= 6.6 ------------------------------------------------------------

def test_failed_edge_detection_names_the_fix() -> None:
    gpio = StandinGPIO()
    gpio.fail_edge_detection()
    with pytest.raises(GpioError, match=r"Failed to add edge detection.*rpi-lgpio"):
        TriggerInput(17, gpio_module=gpio)
    assert TriggerInput(17, gpio_module=StandinGPIO(library="rpi-lgpio")).events == 0


# ---- importing rpi-lgpio where lgpio cannot make its pipe ----------------------------------------

def test_lgpio_pipe_failure_at_import_is_a_gpio_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "RPi"
    package.mkdir()
    (package / "__init__.py").write_text("")
    # What importing rpi-lgpio raises when lgpio cannot create .lgd-nfy* in the working directory.
    (package / "GPIO.py").write_text("raise FileNotFoundError(2, 'No such file or directory', '.lgd-nfy-3')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "RPi", raising=False)
    monkeypatch.delitem(sys.modules, "RPi.GPIO", raising=False)
    with pytest.raises(GpioError, match="WorkingDirectory"):
        load_gpio_module()
