"""The node's configuration: one TOML file, validated at start; every error names its key.

All state lives under `node.data_dir`; paths left unset default to their place in it.
"""
from __future__ import annotations

import json
import logging
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from node.errors import BadConfig
from transport.topics import valid_node_id

DEFAULT_PATH = Path("/etc/alpr-node/node.toml")
# [x0, y0, x1, y1]: a box in the camera image, as fractions of its width and height
Region = tuple[float, float, float, float]

log = logging.getLogger(__name__)


# `alpr-node aim`'s default snapshot in the data directory: a vehicle and its plate in clear, which
# the node removes when it starts so that only ciphertext stays at rest once it reads.
AIM_SNAPSHOT_NAME = "aim-snapshot.jpg"

class Section(BaseModel):
    # TOML has inf and nan: a heartbeat every inf seconds, a nan window (every comparison false)
    # would be accepted by every bound and then never fire, so no float may be either.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class NodeSection(Section):
    id: str = Field(description="node id: also the broker user name (certificate CN)")
    site: str = Field(description="site id, as HQ knows it")
    camera: str = Field(default="cam0", description="camera id at the site")
    lane: Optional[str] = Field(default=None, description="lane for capture accounting: of reads credited to no "
                                                           "trigger, and of triggers that name none")
    data_dir: Path = Field(default=Path("/var/lib/alpr-node"), description="all node state lives here")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not valid_node_id(value):
            raise ValueError("use 1-63 letters, digits, '_', '.', '-' (it is used in MQTT topics)")
        return value


class BrokerSection(Section):
    host: str = Field(default="127.0.0.1", description="broker host name or address")
    port: int = Field(default=8883, ge=1, le=65535, description="broker TLS port")
    ca: Optional[Path] = Field(default=None, description="CA certificate (default data_dir/tls/ca.pem)")
    cert: Optional[Path] = Field(default=None, description="node certificate (default data_dir/tls/node.pem)")
    key: Optional[Path] = Field(default=None, description="node TLS key (default data_dir/tls/node.key)")
    keepalive_s: int = Field(default=30, ge=5, le=600)
    backoff_max_s: float = Field(default=60.0, ge=1, le=3600)


class KeysSection(Section):
    sign_key: Optional[Path] = Field(default=None, description="node Ed25519 key (default data_dir/keys/node-sign.key)")
    hq_hpke_pub: Optional[Path] = Field(default=None, description="HQ HPKE public key (default data_dir/hq/hq-hpke.pub)")
    hq_sign_pub: Optional[Path] = Field(default=None, description="HQ signing public key (default data_dir/hq/hq-sign.pub)")


class OutboxSection(Section):
    quota_mb: float = Field(default=512, gt=0, description="outbox disk quota")
    max_entries: int = Field(default=1_000_000, gt=0)
    resend_after_s: float = Field(default=30.0, gt=0, description="publish again if HQ has not acked by then")
    window: int = Field(default=500, gt=0, le=10000, description="messages in flight awaiting HQ's ack")


class SyntheticSection(Section):
    rate_hz: float = Field(default=5.0, gt=0, le=10000, description="reads per second")
    total: int = Field(default=0, ge=0, description="stop once the outbox has committed this many (0 = never)")
    crop_bytes: int = Field(default=20000, ge=100, le=2_000_000, description="approximate crop JPEG size")
    plates: list[str] = Field(default_factory=list, description="plates to cycle through (default: random)")


class SourceSection(Section):
    kind: Literal["camera", "clip", "synthetic"] = Field(default="camera", description="where reads come from")
    clip: Optional[Path] = Field(default=None, description="clip directory, for kind = 'clip'")
    speed: float = Field(default=1.0, ge=0, description="clip replay speed; 0 = as fast as possible")
    synthetic: SyntheticSection = Field(default_factory=SyntheticSection)

    @model_validator(mode="after")
    def _clip_needs_path(self) -> "SourceSection":
        if self.kind == "clip" and self.clip is None:
            raise ValueError("source.clip: required when source.kind = 'clip'")
        return self


class CameraSection(Section):
    backend: Literal["picamera2"] = Field(default="picamera2", description="live camera backend")
    main_size: tuple[int, int] = Field(default=(1920, 1080), description="full-resolution stream (crops)")
    lores_size: tuple[int, int] = Field(default=(640, 352), description="detection stream")
    fps: float = Field(default=30.0, gt=0, le=120)
    exposure_us: Optional[int] = Field(default=1000, ge=10, le=1_000_000, description="short, to freeze motion")
    analogue_gain: Optional[float] = Field(default=None, ge=1, le=64)
    lens_position: Optional[float] = Field(default=None, ge=0, le=32, description="manual focus (dioptres), CM3")
    camera_num: int = Field(default=0, ge=0)
    capture_timeout_s: float = Field(default=2.0, gt=0, le=60, description="a frame later than this is a stall")
    # picamera2 drops $LIBCAMERA_RPI_TUNING_FILE when given no tuning, so this is the only way to
    # give a NoIR / IR-converted sensor the tuning that matches its IR illuminator.
    tuning: Optional[str] = Field(default=None, min_length=1, max_length=255,
                                  description="libcamera tuning file: a name in libcamera's tuning folders "
                                              "(imx708_noir.json) or an absolute path")

    @model_validator(mode="after")
    def _camera_can_deliver(self) -> "CameraSection":
        # Settings the sensor cannot honour would pass here and then fail every camera start
        # forever (restarts with no frames), so they are refused before the node runs.
        for key, (w, h) in (("main_size", self.main_size), ("lores_size", self.lores_size)):
            if w < 64 or h < 64:
                raise ValueError(f"camera.{key}: {w} x {h} is too small (at least 64 x 64)")
        if self.lores_size[0] > self.main_size[0] or self.lores_size[1] > self.main_size[1]:
            raise ValueError(f"camera.lores_size: {self.lores_size[0]} x {self.lores_size[1]} is larger than "
                             f"camera.main_size {self.main_size[0]} x {self.main_size[1]}")
        if self.tuning is not None and "/" in self.tuning and not self.tuning.startswith("/"):
            raise ValueError(f"camera.tuning: {self.tuning!r} is a relative path: give a tuning file name "
                             f"(imx708_noir.json) or an absolute path")
        frame_us = 1e6 / self.fps
        if self.exposure_us is not None and self.exposure_us > frame_us:
            raise ValueError(f"camera.exposure_us: {self.exposure_us} us is longer than a frame at camera.fps "
                             f"{self.fps:g} ({frame_us:.0f} us)")
        return self


class TriggerSection(Section):
    # not empty: the GPIO adapter names an unnamed input gpio<pin>, which the pipeline's table of
    # triggers would not know, so its region and lane would silently not apply
    name: str = Field(min_length=1, max_length=64, description="trigger name, used in trigger ids")
    pin: int = Field(ge=0, le=27, description="BCM pin number")
    kind: Literal["loop", "ir_beam", "radar", "manual"] = "loop"
    lane: Optional[str] = Field(default=None, min_length=1,
                                description="lane of this trigger's passes (default: node.lane, else \"1\")")
    pull: Literal["up", "down", "off"] = "up"
    active_low: bool = True
    bouncetime_ms: int = Field(default=20, ge=0, le=1000)
    region: Optional[Region] = Field(
        default=None, description="[x0, y0, x1, y1], fractions of the frame where this trigger's plates appear "
                                  "(default: anywhere); reads are credited only to passes whose region holds the plate")

    @field_validator("region", mode="before")
    @classmethod
    def _region_shape(cls, value: object) -> object:
        # pydantic's own message for three numbers ("region.3: Field required") does not say
        # what the four are.
        if isinstance(value, (list, tuple)) and len(value) != 4:
            raise ValueError(f"give four numbers [x0, y0, x1, y1] (got {len(value)})")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: Optional[Region]) -> Optional[Region]:
        # Fractions, not pixels, so one region fits the main and lores streams alike and survives
        # a change of camera.main_size; an empty or inverted box would silently credit nothing.
        if value is None:
            return value
        x0, y0, x1, y1 = value
        if not all(0.0 <= v <= 1.0 for v in value):
            raise ValueError(f"[x0, y0, x1, y1] are fractions of the frame, each from 0 to 1, not pixels "
                             f"(got {list(value)})")
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"[x0, y0, x1, y1] needs x0 < x1 and y0 < y1 (got {list(value)})")
        return value


# The service runs under MemoryMax=400M (node/systemd/alpr-node.service); the models, the
# interpreter, Python and the outbox need about half of it, so frames get the other half. Past
# it the kernel kills the node, systemd restarts it, and after 20 starts it is left failed.
FRAME_BUFFER_BUDGET_BYTES = 200_000_000


def lookback_frames(queue_size: int, window_before_s: float, fps: float) -> int:
    """The recent frames the pipeline keeps for a trigger's look-back: enough to cover
    `window_before_s` at `fps` (and the frame the trigger arrives on), and never fewer than the
    frame queue holds (the frames a worker that fell behind has not looked at yet)."""
    # the small margin keeps a product like 0.1 * 30 = 3.0000000000000004 at 3 frames
    return max(2, queue_size, math.ceil(window_before_s * fps - 1e-6) + 1)


def frame_bytes(main_size: tuple[int, int], lores_size: tuple[int, int]) -> int:
    """One frame in memory: an RGB main and an RGB lores image (the camera adapter converts a
    YUV420 lores stream to RGB)."""
    return (main_size[0] * main_size[1] + lores_size[0] * lores_size[1]) * 3


def frame_buffer_bytes(main_size: tuple[int, int], lores_size: tuple[int, int], queue_size: int,
                       window_before_s: float = 0.0, fps: float = 0.0) -> int:
    """What the pipeline's frames can hold at worst: the camera-to-detection queue (`queue_size`
    frames) and the recent frames kept for look-back (lookback_frames), both full when detection
    falls behind (see frame_bytes)."""
    return (queue_size + lookback_frames(queue_size, window_before_s, fps)) * frame_bytes(main_size, lores_size)


# node.pipeline.TRACK_TIMEOUT_INTERVALS: in continuous mode with detect_rate_hz > 0 a track stays
# open at least this many detection intervals (config cannot import the pipeline and its numpy).
TRACK_TIMEOUT_INTERVALS = 2.5
MAX_TRACK_TIMEOUT_S = 10.0
# A track stays open 2.5 detection intervals: 250 s at this rate (a car park watched every
# 100 s); a rate like 1e-9 Hz would keep a plate "in view" for decades and never send it.
MIN_DETECT_RATE_HZ = 0.01
# A track must outlive one frame period, or every frame starts a new track (refused); it should
# outlive two, or a plate the detector misses in one frame (a reflection, a wiper) ends its track
# and the vehicle is cut into short tracks that min_observations discards, or read again as a new
# vehicle (a warning: configs that did so before still start).
MIN_TRACK_FRAMES = 1
GOOD_TRACK_FRAMES = 2


@dataclass(frozen=True)
class ClipWiring:
    """What the node's config checks need from a clip: the BCM pins it records trigger edges on,
    and its camera.fps (None where clip.json does not give a number)."""

    pins: frozenset[int]
    fps: Optional[float]


def clip_wiring(path: Path) -> Optional[ClipWiring]:
    """A clip's pins and frame rate, read from its clip.json; None when that cannot be read.

    Only a peek (json, no image library): hardware.clip.Clip.load checks the whole clip when
    the node builds its pipeline, and node.pipeline_factory repeats these checks then.
    """
    try:
        doc = json.loads((Path(path) / "clip.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    triggers = doc.get("triggers", [])
    pins = frozenset(t["pin"] for t in triggers if isinstance(t, dict) and isinstance(t.get("pin"), int)) \
        if isinstance(triggers, list) else frozenset()
    camera = doc.get("camera")
    fps = camera.get("fps") if isinstance(camera, dict) else None
    ok = isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0
    return ClipWiring(pins, float(fps) if ok else None)


def no_trigger_source_message(clip: Path) -> str:
    """Why a triggered node replaying `clip` with no [[triggers]] and no edges in the clip cannot read."""
    return (f"triggers: pipeline.mode = 'triggered' needs trigger inputs, and there is no [[triggers]] entry and "
            f"the clip {clip} (source.clip) records no trigger edge to take them from: no pass would ever "
            f"open. Replay a clip with its trigger edges, or set pipeline.mode = 'continuous'")


def track_timeout_problem(pipe: PipelineSection, fps: float, fps_key: str, frames: int = MIN_TRACK_FRAMES) -> Optional[str]:
    """Why pipeline.track_timeout_s cannot work with frames at `fps` (named `fps_key`), or None.

    The timeout in effect (node.pipeline.effective_track_timeout_s: in continuous mode with
    detect_rate_hz > 0, at least TRACK_TIMEOUT_INTERVALS detection intervals) must outlive
    `frames` frame periods: MIN_TRACK_FRAMES to work at all, GOOD_TRACK_FRAMES to work well
    (see track_timeout_warning).
    """
    effective = pipe.track_timeout_s
    if pipe.mode == "continuous" and pipe.detect_rate_hz > 0:
        effective = max(effective, TRACK_TIMEOUT_INTERVALS / pipe.detect_rate_hz)
    least = frames / fps
    if effective >= least:
        return None
    what = ("every frame would start a new track, so no vehicle is followed from frame to frame" if frames <= 1 else
            "a plate missed in a single frame would end its track, so one vehicle is cut into short tracks (dropped "
            "under pipeline.min_observations, or each sent as a read of its own once pipeline.dedup_window_s has "
            "passed)")
    periods = "a frame period" if frames == 1 else f"{frames} frame periods"
    return (f"pipeline.track_timeout_s: {pipe.track_timeout_s:g} s is shorter than {periods} at {fps:g} fps "
            f"({fps_key}), {least:.3g} s: {what}; use at least {math.ceil(least * 1000) / 1000:g} s")


def track_timeout_warning(pipe: PipelineSection, fps: float, fps_key: str) -> Optional[str]:
    """track_timeout_problem at GOOD_TRACK_FRAMES: a config that works, but loses vehicles to one missed frame."""
    return track_timeout_problem(pipe, fps, fps_key, GOOD_TRACK_FRAMES)


class OutputsSection(Section):
    ir_pin: Optional[int] = Field(default=None, ge=0, le=27, description="BCM pin of the IR illuminator")
    led_pin: Optional[int] = Field(default=None, ge=0, le=27, description="BCM pin of the status LED")
    ir_active_high: bool = Field(default=True, description="false for relay boards that switch on a low input")
    led_active_high: bool = Field(default=True, description="false for an LED wired to sink current into the pin")


class PipelineSection(Section):
    mode: Literal["triggered", "continuous"] = Field(default="triggered", description="detect around triggers or always")
    detect_rate_hz: float = Field(default=0.0, ge=0,
                                  description="continuous mode: detections per second (0 = every frame, else at "
                                              "least 0.01); a "
                                              "track then stays open for at least 2.5 detection intervals "
                                              "(see track_timeout_s)")
    window_before_s: float = Field(default=0.3, ge=0, le=5,
                                   description="frames this long before a trigger are read too; they are kept in "
                                               "memory (camera.fps per second), which counts against the frame "
                                               "memory budget")
    window_after_s: float = Field(default=1.0, ge=0, le=30)
    retrigger_merge_s: float = Field(default=0.0, ge=0, le=2,
                                     description="a trigger active again this soon after it went inactive is the "
                                                 "same vehicle (a tractor and its trailer, a loop dropout), not a "
                                                 "new pass. 0 (default): every activation is a new pass. Timing "
                                                 "alone cannot tell a trailer from a car close behind, so set it "
                                                 "only where vehicles never follow that closely (a gate, a "
                                                 "weighbridge)")
    max_window_s: float = Field(default=10.0, gt=0, le=120,
                                description="longest a pass stays open after its trigger, unless the trigger is "
                                            "still active (then until its release; reported in the heartbeat as "
                                            "inputs_active_long); a plate in view this long (a parked car) is sent "
                                            "then, in either mode, not only once it leaves")
    track_timeout_s: float = Field(default=0.6, gt=0, le=MAX_TRACK_TIMEOUT_S,
                                   description="a plate not seen for this long has left; in continuous mode with "
                                               "detect_rate_hz > 0 at least 2.5 / detect_rate_hz (the value in "
                                               "effect is logged at start)")
    min_observations: int = Field(default=2, ge=1, le=30, description="frames a plate must be read in (1 lets single-frame glimpses through)")
    min_confidence: float = Field(default=0.3, ge=0, le=1)
    dedup_window_s: float = Field(default=60.0, ge=0, le=3600, description="the same plate is not sent twice within this")
    queue_size: int = Field(default=8, ge=1, le=256, description="frames between camera and detection")
    threads: int = Field(default=1, ge=1, le=8, description="inference threads")
    overview: bool = False
    max_no_reads_per_min: int = Field(default=6, ge=1, le=600,
                                      description="no_read events a trigger may send per minute; more (a chattering "
                                                  "input) are counted and reported with the next one sent")

    @field_validator("detect_rate_hz")
    @classmethod
    def _detect_rate(cls, value: float) -> float:
        # A track stays open TRACK_TIMEOUT_INTERVALS detection intervals (node.pipeline): below
        # MIN_DETECT_RATE_HZ that is longer than the longest track_timeout_s allowed, and at
        # 1e-9 Hz a plate would stay "in view" for decades and never be sent.
        if 0 < value < MIN_DETECT_RATE_HZ:
            raise ValueError(f"{value:g} Hz: use 0 (detect on every frame) or at least {MIN_DETECT_RATE_HZ:g} Hz: a "
                             f"track stays open {TRACK_TIMEOUT_INTERVALS:g} detection intervals, "
                             f"{TRACK_TIMEOUT_INTERVALS / value:.3g} s at this rate, so a plate would be sent "
                             f"that long after it left")
        return value


class ModelsSection(Section):
    detector: Optional[Path] = Field(default=None, description="detector .tflite (default: shipped)")
    ocr: Optional[Path] = Field(default=None, description="OCR .tflite (default: shipped)")


class HealthSection(Section):
    # at most an hour: HQ learns the node is alive (and its capture rate and disk) only from these
    interval_s: float = Field(default=10.0, gt=0, le=3600, description="heartbeat period")


class NodeConfig(Section):
    node: NodeSection
    broker: BrokerSection = Field(default_factory=BrokerSection)
    keys: KeysSection = Field(default_factory=KeysSection)
    outbox: OutboxSection = Field(default_factory=OutboxSection)
    source: SourceSection = Field(default_factory=SourceSection)
    health: HealthSection = Field(default_factory=HealthSection)
    camera: CameraSection = Field(default_factory=CameraSection)
    triggers: list[TriggerSection] = Field(default_factory=list)
    outputs: OutputsSection = Field(default_factory=OutputsSection)
    pipeline: PipelineSection = Field(default_factory=PipelineSection)
    models: ModelsSection = Field(default_factory=ModelsSection)
    # systemd kills the node TimeoutStopSec (20 s, node/systemd/alpr-node.service) after SIGTERM:
    # a longer bound would be cut short mid-flush.
    shutdown_timeout_s: float = Field(default=10.0, gt=0, le=15, description="bound on a clean stop (at most 15 s)")

    @model_validator(mode="after")
    def _cross_checks(self) -> "NodeConfig":
        if self.pipeline.mode == "triggered" and not self.triggers and self.source.kind == "camera":
            raise ValueError("triggers: pipeline.mode = 'triggered' needs at least one [[triggers]] entry "
                             "(or set pipeline.mode = 'continuous')")
        clip = clip_wiring(self.source.clip) if self.source.kind == "clip" and self.source.clip else None
        if self.pipeline.mode == "triggered" and not self.triggers and clip is not None and not clip.pins:
            # A clip source without [[triggers]] is wired from the clip's own pins
            # (node.pipeline_factory); with neither, no pass ever opens. A clip that cannot be
            # read here is checked when the node builds its pipeline.
            raise ValueError(no_trigger_source_message(self.source.clip))
        for trigger in self.triggers:
            # a trigger that names no lane is in the node's lane, so its passes and the reads
            # credited to no pass are counted in one lane
            trigger.lane = trigger.lane or self.node.lane or "1"
        self._unique_names_and_pins()
        pipe = self.pipeline
        # window_after_s >= max_window_s is allowed: a pass whose input releases after
        # max_window_s still gets its window after the release (node.pipeline).
        # Frames arrive at camera.fps from a camera, at the clip's own rate from a clip (when it
        # cannot be read here, node.pipeline_factory checks it); a synthetic source has no frames.
        fps_source: Optional[tuple[str, float]] = None
        if self.source.kind == "camera":
            fps_source = ("camera.fps", self.camera.fps)
        elif clip is not None and clip.fps is not None:
            fps_source = (f"camera.fps of the clip {self.source.clip}", clip.fps)
        if fps_source is not None:
            problem = track_timeout_problem(pipe, fps_source[1], fps_source[0])
            if problem:
                raise ValueError(problem)
            warning = track_timeout_warning(pipe, fps_source[1], fps_source[0])
            if warning:
                log.warning("%s", warning)
        cam = self.camera
        w, h = cam.main_size
        budget = FRAME_BUFFER_BUDGET_BYTES
        queue_only = frame_buffer_bytes(cam.main_size, cam.lores_size, pipe.queue_size)
        held = frame_buffer_bytes(cam.main_size, cam.lores_size, pipe.queue_size, pipe.window_before_s, cam.fps)
        if queue_only > budget:
            most = max([1] + [n for n in range(1, 257)
                              if frame_buffer_bytes(cam.main_size, cam.lores_size, n) <= budget])
            raise ValueError(f"pipeline.queue_size: {pipe.queue_size} frames of {w} x {h} can hold "
                             f"{queue_only / 1e6:.0f} MB (the frame queue and the recent frames kept for a trigger's "
                             f"look-back, both full when detection falls behind), more than the "
                             f"{budget / 1e6:.0f} MB the node leaves for frames under the "
                             f"service's MemoryMax=400M: use at most {most}, or a smaller camera.main_size")
        if held > budget:
            # The queue fits on its own: it is the look-back window that does not.
            kept = lookback_frames(pipe.queue_size, pipe.window_before_s, cam.fps)
            spare = budget // frame_bytes(cam.main_size, cam.lores_size) - pipe.queue_size  # beside the queue
            most = math.floor(max(0, spare - 1) / cam.fps * 100) / 100
            raise ValueError(f"pipeline.window_before_s: {pipe.window_before_s:g} s at camera.fps {cam.fps:g} keeps "
                             f"{kept} frames of {w} x {h} for a trigger's look-back, which with the "
                             f"{pipe.queue_size}-frame queue can hold {held / 1e6:.0f} MB, more than the "
                             f"{budget / 1e6:.0f} MB the node leaves for frames under the service's "
                             f"MemoryMax=400M: use at most {most:g} s, or a lower camera.fps or a smaller "
                             f"camera.main_size")
        return self

    def _unique_names_and_pins(self) -> None:
        """Refuse a trigger name or a BCM pin given twice, naming both entries and the value."""
        named: dict[str, int] = {}
        for i, trigger in enumerate(self.triggers):
            if trigger.name in named:
                j = named[trigger.name]
                # passes are told apart by trigger name (trigger ids, lanes, regions): the second
                # entry's lane and region would silently replace the first's
                raise ValueError(f"triggers.{i}.name: {trigger.name!r} is also the name of triggers.{j} "
                                 f"([[triggers]] entries {j + 1} and {i + 1}): trigger names must be unique")
            named[trigger.name] = i
        used: dict[int, str] = {}
        o = self.outputs
        claims = [(f"triggers.{i}.pin", f"triggers.{i} ({t.name!r})", t.pin) for i, t in enumerate(self.triggers)]
        claims += [(key, key, pin) for key, pin in (("outputs.ir_pin", o.ir_pin), ("outputs.led_pin", o.led_pin))
                   if pin is not None]
        for key, user, pin in claims:
            if pin in used:
                raise ValueError(f"{key}: BCM {pin} is already used by {used[pin]}: a BCM pin is used twice "
                                 "(one pin is one input or one output)")
            used[pin] = user

    # resolved paths ----------------------------------------------------------------------
    def path(self, value: Optional[Path], default: str) -> Path:
        """A configured path, or its default under data_dir; relative paths are under data_dir."""
        if value is None:
            return self.node.data_dir / default
        return value if value.is_absolute() else self.node.data_dir / value


# The key a cross-check names at the start of its message ("triggers.1.pin: BCM 17 is ...").
_NAMED_KEY = re.compile(r"[a-z_]+(\.[a-z_0-9]+)*")


def format_errors(path: Path, exc: ValidationError) -> str:
    """One line per problem: `file: key.path: message`."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (typo?)"
        elif error["type"] == "finite_number":
            message = f"{message}, not {error['input']!r}"
        elif error["type"] == "value_error" and len(error["loc"]) <= 1:
            # A check across keys (a section's or the whole file's) has no key of its own in
            # pydantic's eyes ("(top level)"); its message starts with the key it is about.
            text = message.removeprefix("Value error, ")
            named = text.split(": ", 1)[0]
            if _NAMED_KEY.fullmatch(named) and named.startswith(key if error["loc"] else ""):
                key, message = named, text.split(": ", 1)[1]
        lines.append(f"{path}: {key}: {message}")
    return "\n".join(lines)


def load(path: Path = DEFAULT_PATH, base: type[BaseModel] = NodeConfig):
    """Read and validate a node TOML file; BadConfig names the file and every bad key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BadConfig(f"{path}: config file not found") from exc
    except OSError as exc:
        raise BadConfig(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BadConfig(f"{path}: not valid TOML: {exc}") from exc
    try:
        config = base.model_validate(raw)
    except ValidationError as exc:
        raise BadConfig(format_errors(path, exc)) from exc
    # data_dir relative to the config file, so a bench folder can be moved as a whole
    if not config.node.data_dir.is_absolute():
        config.node.data_dir = (path.parent / config.node.data_dir).resolve()
    return config
