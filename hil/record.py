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
from hardware.clip import CLIP_JSON, CameraSettings, Clip, ClipWriter
from hardware.gpio import TriggerInput
from hardware.recorder import ClipRecorder
from hil.errors import BadArgument, RecordingFailed

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


class _KeptOnlyIfGood(ClipWriter):
    """A ClipWriter whose close() writes clip.json only for a recording that worked.

    ClipRecorder.stop() always closes its writer. Left to that, a recording that failed or got
    no frame would leave a clip.json with an empty frame list: Clip.load refuses it, the real
    error is masked by that refusal, and the next try stops at "already exists".
    """

    abandoned = False

    def close(self) -> Clip:
        if self.abandoned:
            raise _NotWritten("abandoned after an error")
        if not self.to_doc()["frames"]:
            raise _NotWritten("no frames")
        return super().close()


class _NotWritten(Exception):
    """Raised by _KeptOnlyIfGood.close() instead of writing clip.json."""


def record(out: Path, settings: RecordSettings, *, gpio_module: Any | None = None,
           camera_factory: Callable[[], Camera] | None = None, stop: threading.Event | None = None,
           overwrite: bool = False) -> Clip:
    """Record `settings.seconds` of camera + trigger edges into a new clip at `out`.

    clip.json is written only when the recording worked and has frames: an error is raised as
    it happened (nothing written), no frame at all raises RecordingFailed. Ctrl-C ends the
    recording early and keeps what was recorded. An existing clip is replaced only with
    `overwrite` (the CLI's --overwrite).
    """
    out = Path(out)
    if (out / CLIP_JSON).exists() and not overwrite:
        raise BadArgument(f"{out / CLIP_JSON}: a clip is already recorded there; record into a new folder, "
                          f"or pass --overwrite to replace it")
    if camera_factory is None:
        from hardware.picamera2_backend import Picamera2Camera, Picamera2Config

        config = Picamera2Config(main_size=settings.main_size, lores_size=settings.lores_size, fps=settings.fps,
                                 exposure_us=settings.exposure_us)

        def camera_factory() -> Camera:
            return Picamera2Camera(config)
    camera = CameraSettings(settings.main_size, settings.lores_size, settings.fps, exposure_us=settings.exposure_us,
                            model="picamera2")
    writer = _KeptOnlyIfGood(out, camera, jpeg_quality=settings.jpeg_quality, description=settings.description,
                             overwrite=overwrite)
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
    except KeyboardInterrupt:
        # Ctrl-C is how a person ends a recording early: keep what was recorded.
        log.warning("record: interrupted, keeping what was recorded so far")
    except Exception:
        writer.abandoned = True
        # The error being raised is the one the user must see: cleanup failures are only logged.
        try:
            _release(supervisor, inputs)
        except Exception:
            log.warning("record: releasing the camera and inputs after the error failed too", exc_info=True)
        try:
            recorder.stop()
        except _NotWritten:
            pass
        except Exception:
            log.warning("record: stopping the recorder after the error failed too", exc_info=True)
        raise
    _release(supervisor, inputs)
    try:
        clip = recorder.stop()
    except _NotWritten:
        stats = supervisor.stats()
        why = f"; last camera error: {stats.last_error}" if stats.last_error else ""
        raise RecordingFailed(f"{out}: no frame was recorded in {settings.seconds:g} s (camera stalls "
                              f"{stats.stalls}, errors {stats.errors}{why}); clip.json was not written") from None
    if recorder.dropped:
        log.warning("record: %d frames dropped (JPEG encoding fell behind); lower --fps or --size", recorder.dropped)
    return clip


def _release(supervisor: CameraSupervisor, inputs: list[TriggerInput]) -> None:
    supervisor.stop(5.0)
    for device in inputs:
        device.close()
