"""Builds the camera pipeline from the node config: live picamera2 + RPi.GPIO, or a clip
replayed through the same code with stand-in pins driven by the clip's recorded triggers."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from hardware.clip import Clip
from hardware.clip_camera import ClipCamera
from hardware.clip_pins import ClipPins
from hardware.gpio import OutputPin, TriggerInput
from hardware.standin_gpio import StandinGPIO
from hardware.timeline import ReplayTimeline
from inference.detector import PlateDetector
from inference.ocr import PlateReader
from node import system
from node.config import (
    NodeConfig,
    TriggerSection,
    no_trigger_source_message,
    track_timeout_problem,
    track_timeout_warning,
)
from node.errors import BadConfig
from node.pipeline import Pipeline, PipelineSettings, TriggerSpec
from node.sink import ReadSink

log = logging.getLogger(__name__)


class CameraPipeline:
    """The pipeline plus the GPIO it owns (trigger inputs, outputs, clip pin driver)."""

    def __init__(self, pipeline: Pipeline, inputs: list[TriggerInput], outputs: list[OutputPin],
                 pins: ClipPins | None) -> None:
        self.pipeline = pipeline
        self.inputs = inputs
        self.outputs = outputs
        self.pins = pins
        self.done = pipeline.done
        self.ends = pipeline.ends

    def start(self) -> None:
        for out in self.outputs:
            out.on()
        self.pipeline.start()
        if self.pins is not None:
            self.pins.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self.pins is not None:
            self.pins.stop()
        self.pipeline.stop(timeout)
        for device in [*self.inputs, *self.outputs]:
            device.close()

    def alive(self) -> bool:
        return self.pipeline.alive()

    def stalled_s(self) -> float:
        """See Pipeline.stalled_s."""
        return self.pipeline.stalled_s()

    def health(self) -> dict[str, Any]:
        return self.pipeline.health()


@dataclass
class CameraSource:
    """How frames and trigger edges reach the node: a live camera, or a clip and its pins."""

    factory: Callable[[], Any]
    gpio: Any = None             # None: the real RPi.GPIO; else the stand-in the clip drives
    pins: ClipPins | None = None
    clock_ns: Callable[[], int] = time.monotonic_ns
    ends: bool = False
    lossless: bool = False
    clip: Clip | None = None


def model_id(manifest: Any) -> str:
    """How reads and health name a model: `name@version+` the first 12 hex digits of its sha256."""
    return f"{manifest.name}@{manifest.version}+{manifest.sha256[:12]}"


def camera_source(config: NodeConfig) -> CameraSource:
    """The configured frame source (source.kind 'camera' or 'clip')."""
    if config.source.kind == "clip":
        try:
            clip = Clip.load(config.source.clip)
        except (OSError, ValueError) as exc:
            raise BadConfig(f"source.clip: {exc}") from exc
        timeline = ReplayTimeline(config.source.speed)
        # Outputs are set up (and their first level recorded) before the replay starts its
        # clock: until then the pins read replay time 0.
        gpio = StandinGPIO(clock=lambda: timeline.now_ns() if timeline.started else 0)
        state: dict[str, ClipCamera | None] = {"camera": None}

        def clip_factory() -> ClipCamera:
            # After a fault the replacement resumes where the last one stopped.
            previous = state["camera"]
            cam = ClipCamera(clip, timeline=timeline, start_index=previous.position if previous else 0)
            state["camera"] = cam
            return cam
        return CameraSource(clip_factory, gpio, ClipPins(clip, gpio, timeline), timeline.now_ns,
                            ends=True, lossless=config.source.speed == 0, clip=clip)
    from hardware.picamera2_backend import Picamera2Camera, Picamera2Config
    cam = config.camera
    p2 = Picamera2Config(main_size=tuple(cam.main_size), lores_size=tuple(cam.lores_size), fps=cam.fps,
                         exposure_us=cam.exposure_us, analogue_gain=cam.analogue_gain,
                         lens_position=cam.lens_position, camera_num=cam.camera_num, tuning=cam.tuning)
    return CameraSource(lambda: Picamera2Camera(p2))


def check_clip_wiring(config: NodeConfig, clip: Clip) -> None:
    """The checks node.config makes of a clip source when it can read the clip, made again on the
    loaded clip (the config may have been validated where the clip was not at hand); and a
    warning naming the clip's pins that no [[triggers]] entry takes, whose edges go nowhere.

    Raises BadConfig when the clip's frame rate is too high for pipeline.track_timeout_s, or when
    a triggered node has no [[triggers]] and the clip records no edge to take them from.
    """
    problem = track_timeout_problem(config.pipeline, clip.camera.fps, f"camera.fps of the clip {clip.path}")
    if problem:
        raise BadConfig(problem)
    warning = track_timeout_warning(config.pipeline, clip.camera.fps, f"camera.fps of the clip {clip.path}")
    if warning:
        log.warning("%s", warning)
    recorded = sorted({record.pin for record in clip.triggers})
    if config.pipeline.mode == "triggered" and not config.triggers and not recorded:
        raise BadConfig(no_trigger_source_message(clip.path))
    wired = {t.pin for t in config.triggers}
    unwired = [pin for pin in recorded if pin not in wired]
    if config.triggers and unwired:
        names = {record.pin: record.name for record in clip.triggers if record.name}
        listed = ", ".join(f"BCM {pin} ({names[pin]})" if pin in names else f"BCM {pin}" for pin in unwired)
        # [[triggers]] replace the clip's own wiring, so a pin left out is not read at all: its
        # vehicles get no pass (and no lane of their own), which looks like missed reads.
        log.warning("source.clip %s records trigger edges on %s, which no [[triggers]] entry takes: those "
                    "edges are ignored; add a [[triggers]] entry (name, pin, lane) for each", clip.path, listed)


def make_pipeline(config: NodeConfig, sink: ReadSink) -> CameraPipeline:
    """The node's camera pipeline as configured (source.kind 'camera' or 'clip')."""
    c = config.pipeline
    threads = c.threads
    try:
        detector = PlateDetector(config.models.detector, threads=threads)
        reader = PlateReader(config.models.ocr, threads=threads)
    except (OSError, ValueError) as exc:
        raise BadConfig(f"models: {exc}") from exc
    # name@version+hash: every shipped model has been version 1.0.0 so far, so the version alone
    # cannot tell an auditor which file read a plate; the sha256 (the manifest's, checked at load)
    # can.
    models = {"detector": model_id(detector.model.manifest), "ocr": model_id(reader.model.manifest)}
    src = camera_source(config)
    gpio, pins, clock_ns, ends, lossless, clip = src.gpio, src.pins, src.clock_ns, src.ends, src.lossless, src.clip
    if clip is not None:
        check_clip_wiring(config, clip)
    camera_factory = src.factory
    lane = config.node.lane or "1"
    settings = PipelineSettings(
        mode=c.mode, detect_rate_hz=c.detect_rate_hz, window_before_s=c.window_before_s,
        window_after_s=c.window_after_s, max_window_s=c.max_window_s, retrigger_merge_s=c.retrigger_merge_s,
        track_timeout_s=c.track_timeout_s,
        min_observations=c.min_observations, min_confidence=c.min_confidence, dedup_window_s=c.dedup_window_s,
        queue_size=c.queue_size, lossless_replay=lossless, overview=c.overview, node_id=config.node.id,
        site_id=config.node.site, camera_id=config.node.camera, default_lane=lane,
        max_no_reads_per_min=c.max_no_reads_per_min,
        # the look-back keeps window_before_s of frames at the rate they arrive: a clip's own
        fps=clip.camera.fps if clip is not None else config.camera.fps)
    pipeline = Pipeline(camera_factory=camera_factory, detector=detector, reader=reader, sink=sink, settings=settings,
                        triggers={t.name: TriggerSpec(t.name, t.lane or lane, t.kind, t.region) for t in config.triggers},
                        models=models, clock_sync=system.clock_sync_state,
                        capture_timeout_s=config.camera.capture_timeout_s, ends=ends, clock_ns=clock_ns)
    trigger_cfgs = list(config.triggers)
    if config.source.kind == "clip" and not trigger_cfgs:
        # A clip carries its own wiring: each recorded pin is a pulled-up, active-low loop input,
        # in the node's lane (a clip records no lanes: give [[triggers]] to set them).
        seen: dict[int, str] = {}
        for record in clip.triggers:
            seen.setdefault(record.pin, record.name or f"gpio{record.pin}")
        trigger_cfgs = [TriggerSection(name=name, pin=pin) for pin, name in sorted(seen.items())]
        pipeline.triggers.update({t.name: TriggerSpec(t.name, t.lane or lane, t.kind) for t in trigger_cfgs})
        # Said at start: every pass of such a replay is in one lane, which HQ's capture rate per
        # lane shows only as a lane with all the traffic.
        log.info("source.clip: no [[triggers]]: wired from the clip's pins %s, all in lane %s (node.lane)",
                 ", ".join(f"BCM {t.pin} ({t.name})" for t in trigger_cfgs) or "(none)", lane)
    inputs = [TriggerInput(t.pin, name=t.name, kind=t.kind, pull=t.pull, active_low=t.active_low,
                           bouncetime_ms=t.bouncetime_ms, on_trigger=pipeline.on_trigger, gpio_module=gpio,
                           clock_ns=clock_ns) for t in trigger_cfgs]
    o = config.outputs
    outputs = [OutputPin(pin, name=name, active_high=high, gpio_module=gpio)
               for name, pin, high in (("ir", o.ir_pin, o.ir_active_high), ("led", o.led_pin, o.led_active_high))
               if pin is not None]
    return CameraPipeline(pipeline, inputs, outputs, pins)
