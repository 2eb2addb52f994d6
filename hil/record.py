"""`alpr-hil record` on a Raspberry Pi: the camera and the loop inputs, recorded into a clip.

Uses the same hardware layer as the node (Picamera2Camera under a CameraSupervisor, TriggerInput
on RPi.GPIO / rpi-lgpio) and `hardware.recorder.ClipRecorder`, which never blocks capture: when
JPEG encoding falls behind it drops (and counts) frames. Ground truth is not recorded; add it to
clip.json afterwards (docs/hil.md) to judge the clip with `alpr-hil run`.

`gpio_module` / `camera_factory` can be given (the stand-ins) so the recording path is testable
off the Pi.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardware.camera import Camera, CameraSupervisor
from hardware.clip import CameraSettings, Clip, ClipWriter
from hardware.gpio import TriggerInput
from hardware.recorder import ClipRecorder
from hil.errors import BadArgument

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordSettings:
    """What to record and how."""

    seconds: float = 60.0
    main_size: tuple[int, int] = (1280, 720)
    lores_size: tuple[int, int] = (640, 352)
    fps: float = 30.0
    exposure_us: int | None = 1000
    pins: list[tuple[int, str]] = field(default_factory=lambda: [(17, "loop1")])
    jpeg_quality: int = 85
    description: str = ""


def parse_pin(text: str) -> tuple[int, str]:
    """'17:loop1' → (17, 'loop1'); '27' → (27, 'gpio27')."""
    pin_text, _, name = text.partition(":")
    if not pin_text.isdigit() or not 0 <= int(pin_text) <= 27:
        raise BadArgument(f"--pin {text!r}: expected BCM:NAME with BCM 0-27, e.g. 17:loop1")
    return int(pin_text), name or f"gpio{pin_text}"


def record(out: Path, settings: RecordSettings, *, gpio_module: Any | None = None,
           camera_factory: Callable[[], Camera] | None = None, stop: threading.Event | None = None) -> Clip:
    """Record `settings.seconds` of camera + trigger edges into a new clip at `out`."""
    if camera_factory is None:
        from hardware.picamera2_backend import Picamera2Camera, Picamera2Config

        config = Picamera2Config(main_size=settings.main_size, lores_size=settings.lores_size, fps=settings.fps,
                                 exposure_us=settings.exposure_us)

        def camera_factory() -> Camera:
            return Picamera2Camera(config)
    camera = CameraSettings(settings.main_size, settings.lores_size, settings.fps, exposure_us=settings.exposure_us,
                            model="picamera2")
    writer = ClipWriter(out, camera, jpeg_quality=settings.jpeg_quality, description=settings.description)
    recorder = ClipRecorder(writer)
    stop = stop or threading.Event()
    recorder.start()
    inputs: list[TriggerInput] = []
    supervisor = CameraSupervisor(camera_factory, recorder.put_frame, capture_timeout_s=2.0, name="record")
    try:
        for pin, name in settings.pins:
            inputs.append(TriggerInput(pin, name=name, on_trigger=recorder.put_trigger, gpio_module=gpio_module))
        supervisor.start()
        stop.wait(settings.seconds)
    finally:
        supervisor.stop(5.0)
        for device in inputs:
            device.close()
        clip = recorder.stop()
    if recorder.dropped:
        log.warning("record: %d frames dropped (JPEG encoding fell behind); lower --fps or --size", recorder.dropped)
    return clip
