"""Review 6 of the GPIO adapter: trigger events reach the consumer in the order the pin was read,
whichever thread read it (the library's callback thread or the resync timer)."""
from __future__ import annotations

import threading
import time

import pytest

from hardware.gpio import TriggerEvent, TriggerInput
from hardware.standin_gpio import StandinGPIO

pytestmark = pytest.mark.unit


def test_events_are_delivered_in_order_when_the_first_consumer_call_is_slow() -> None:
    gpio = StandinGPIO()
    got: list[TriggerEvent] = []
    calls = iter(range(1000))

    def slow_first(event: TriggerEvent) -> None:
        if next(calls) == 0:
            time.sleep(0.08)  # stands for the callback thread being preempted before delivery
        got.append(event)

    trigger = TriggerInput(17, name="beam", bouncetime_ms=20, on_trigger=slow_first, gpio_module=gpio)
    broken = threading.Thread(target=gpio.drive_low, args=(17,))  # beam broken: the GPIO callback
    broken.start()
    time.sleep(0.01)
    gpio.drive_high(17)  # restored 10 ms later: inside bouncetime, so only the resync timer sees it
    broken.join()
    deadline = time.monotonic() + 2
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert [e.active for e in got] == [True, False]
    assert got[-1].active == trigger.is_active()  # the consumer ends where the pin is
    assert got[0].time_ns <= got[1].time_ns
    trigger.close()


def test_close_from_on_trigger_does_not_deadlock() -> None:
    gpio = StandinGPIO()
    holder: dict[str, TriggerInput] = {}
    got: list[bool] = []

    def close_on_first(event: TriggerEvent) -> None:
        got.append(event.active)
        holder["t"].close()

    holder["t"] = TriggerInput(17, bouncetime_ms=5, on_trigger=close_on_first, gpio_module=gpio)
    gpio.drive_low(17)
    gpio.drive_high(17)
    time.sleep(0.05)  # a resync after close() reports nothing
    assert got == [True]
    assert not gpio.has_event_detect(17)
