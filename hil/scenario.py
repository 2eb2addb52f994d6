"""Scenario files (hil/scenarios/*.toml): which clip, how fast, which faults when, what to expect.

    [scenario]
    description = "Daylight, broker down for 4 s mid-clip"
    clip = "day-3-vehicles"        # a bare name: a shipped clip (hil/clips); with a '/' or a leading
                                   # '.': a path, relative to the scenario file (see _clip_dir)
    speed = 1.0                    # 0 = lossless, as fast as possible (latency is then not measured)
    timeout_s = 40                 # wall-clock bound from the node's start (as fault times; setup not counted)
    long = false                   # soak: only with `pytest --long` or when named on the command line
    repeat = 1                     # replay the clip this many times (a soak; >1 makes one long clip)

    [node]                         # merged into the node's TOML: any section but [node]/[broker]
    outbox = { quota_mb = 0.2 }

    [[node.triggers]]              # the node's [[triggers]]: replace the clip's own wiring (one
    name = "loop2"                 # loop input per recorded pin, all in lane "1"); the judge then
    pin = 27                       # checks each vehicle's reads are stored in its loop's lane
    lane = "2"

    [[faults]]
    kind = "broker_outage"         # see FAULT_KINDS
    at_s = 2.0                     # seconds after the node reports it started (replay start)
    duration_s = 4.0
    every_s = 600                  # optional: again every 600 s until the clip ends (soaks)

    [expect]
    min_correct = 0.0              # fraction of vehicles that must be read right (models permitting)
    min_read = 0.0                 # fraction of vehicles that must get a read, right or not (the runtime's part)
    max_latency_s = 30.0           # worst trigger-to-HQ latency allowed (speed > 0 only)
    max_false_reads = 0            # reads outside every vehicle's legible window allowed
"""
from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hardware.errors import ClipError
from hil.derive import repeat_period_ns
from hil.errors import BadScenario

if TYPE_CHECKING:
    from hardware.clip import Clip

FAULT_KINDS = {
    "broker_outage": "broker killed (SIGKILL) at at_s, started again duration_s later",
    "broker_restart": "broker stopped and started at once (clean restart)",
    "ingest_down": "HQ ingest killed at at_s, a new one started duration_s later",
    "power_cut": "node SIGKILLed at at_s, restarted duration_s later (the clip replays from its start)",
    "camera_stall": "no frames from at_s for duration_s (a gap in the clip's timestamps)",
}
SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
CLIP_DIR = Path(__file__).resolve().parent / "clips"
_NODE_SECTIONS_REFUSED = ("node", "broker", "keys", "source")
# The keys of the node's [[triggers]] entries (node/config.py TriggerSection: hil drives the node
# from outside and cannot import it; tests/hil/test_lanes_s20.py keeps the two in step). The node
# checks the values when it starts; the bench checks what it judges by (name, pin, lane) here.
TRIGGER_KEYS = frozenset({"name", "pin", "kind", "lane", "pull", "active_low", "bouncetime_ms", "region"})
# The lane of a [[node.triggers]] entry that names none: the node's node.lane, else "1", and a
# scenario cannot set [node] node (the bench does).
DEFAULT_LANE = "1"
# The node's default pipeline.dedup_window_s (node/config.py PipelineSection; hil cannot import
# it, tests/hil/test_bench_s20_faults.py keeps the two in step): a soak's repeats within it are
# suppressed as "seen again".
NODE_DEDUP_WINDOW_S = 60.0
# What each fault kind holds down while it lasts: two faults on one resource at once would
# undo each other (the first one's end starts the broker the second still wants down; two HQ
# ingests would share one client id), so load() refuses them (_check_overlaps).
FAULT_RESOURCE = {
    "broker_outage": "the broker",
    "broker_restart": "the broker",
    "ingest_down": "HQ ingest",
    "power_cut": "the node",
    "camera_stall": "the camera (clip time)",
}


@dataclass(frozen=True)
class Fault:
    """One fault on the scenario timeline."""

    kind: str
    at_s: float
    duration_s: float = 0.0

    @property
    def end_s(self) -> float:
        """When the fault is over."""
        return self.at_s + self.duration_s


@dataclass(frozen=True)
class Expect:
    """Pass marks beyond the data path (which must always be clean)."""

    min_correct: float = 0.0
    max_latency_s: float = 30.0
    max_false_reads: int = 0
    min_read: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """A validated scenario."""

    name: str
    path: Path
    clip: Path
    description: str = ""
    speed: float = 1.0
    timeout_s: float = 40.0
    long: bool = False
    repeat: int = 1
    node: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: tuple[Fault, ...] = ()
    # [[node.triggers]]: the node's [[triggers]] entries, as written (see `wiring`)
    triggers: tuple[dict[str, Any], ...] = ()
    expect: Expect = field(default_factory=Expect)
    # things load() found suspicious but not wrong, each naming the file and keys (the CLI prints them)
    warnings: tuple[str, ...] = ()

    def wiring(self) -> dict[int, tuple[str, str]] | None:
        """BCM pin → (trigger name, lane) as the node is wired by [[node.triggers]]; None when the
        scenario gives none (the node then wires the clip's own pins, every one in lane "1")."""
        if not self.triggers:
            return None
        return {t["pin"]: (t["name"], t.get("lane") or DEFAULT_LANE) for t in self.triggers}


def _triggers(raw: Any, path: Path) -> tuple[dict[str, Any], ...]:
    """Check [[node.triggers]] entries for what the bench relies on; the node checks the rest at start."""
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise _fail(path, "node.triggers", "must be an array of tables ([[node.triggers]]), as [[triggers]] in "
                                           "the node's config")
    names: dict[str, int] = {}
    pins: dict[int, int] = {}
    for i, item in enumerate(raw):
        where = f"node.triggers[{i}]"
        _known(item, set(TRIGGER_KEYS), path, where)
        name, pin, lane = item.get("name"), item.get("pin"), item.get("lane")
        if not isinstance(name, str) or not name:
            raise _fail(path, f"{where}.name", f"required: the trigger's name (got {name!r})")
        if isinstance(pin, bool) or not isinstance(pin, int) or not 0 <= pin <= 27:
            raise _fail(path, f"{where}.pin", f"required: a BCM pin 0-27 (got {pin!r})")
        if lane is not None and (not isinstance(lane, str) or not lane):
            # TOML `lane = 2` is an int; the node's lanes are text, as HQ stores them
            raise _fail(path, f"{where}.lane", f"must be a non-empty string, e.g. lane = \"2\" (got {lane!r})")
        if name in names:
            raise _fail(path, f"{where}.name", f"{name!r} is also node.triggers[{names[name]}]'s name")
        if pin in pins:
            raise _fail(path, f"{where}.pin", f"BCM {pin} is also node.triggers[{pins[pin]}]'s pin")
        names[name], pins[pin] = i, i
    return tuple(dict(item) for item in raw)


@dataclass(frozen=True)
class ReplaySpan:
    """How long one node run replays the scenario's clip (repeats included), to check fault times against.

    `last_frame_s` is clip time; `run_s` the same in seconds of the run (fault `at_s`), i.e. divided
    by the speed. At speed 0 (lossless) the run's length depends on the machine, so the clip's own
    length at real time is the only bound known before the run.
    """

    clip_name: str
    length_s: float        # as a tester counts it: the last frame plus one frame period (69 frames at 8 fps: 8.62 s)
    last_frame_s: float    # when the replay delivers its last frame; the node finishes soon after
    speed: float

    @property
    def run_s(self) -> float:
        """Seconds after the node's start at which its replay has delivered the last frame."""
        return self.last_frame_s / self.speed if self.speed > 0 else self.last_frame_s

    def describe(self) -> str:
        """The clip's length as a refusal states it: `clip day-3-vehicles is 8.62 s long, last frame at 8.50 s`."""
        text = f"clip {self.clip_name} is {self.length_s:.2f} s long, last frame at {self.last_frame_s:.2f} s"
        if self.speed > 0 and self.speed != 1:
            text += f" ({self.run_s:.2f} s into the run at speed {self.speed:g})"
        elif self.speed == 0:
            text += " (at speed 0 the run may end sooner: a lossless replay runs at the machine's pace)"
        return text


def replay_span(loaded: Clip, repeat: int, speed: float, clip_name: str) -> ReplaySpan:
    """The ReplaySpan of `loaded` repeated `repeat` times (as hil.derive builds it) at `speed`."""
    period_ns = repeat_period_ns(loaded)
    last_ns = (repeat - 1) * period_ns + loaded.duration_ns
    name = clip_name if repeat == 1 else f"{clip_name} x{repeat}"
    return ReplaySpan(name, (last_ns + period_ns - loaded.duration_ns) / 1e9, last_ns / 1e9, speed)


def check_clip(path: Path) -> Clip:
    """Load a clip (Clip.load) and check every frame's size against camera.resolution.

    Clip.load only checks that frame files exist; the node finds a frame of the wrong size when
    it decodes it, mid-run, and then restarts its camera on it until the bench times out. The
    sizes come from the JPEG headers (nothing is decoded), so this is cheap enough to do for
    every scenario before any is run. Raises ClipError naming the frame file and field.
    """
    from PIL import Image

    from hardware.clip import Clip

    clip = Clip.load(path)
    want = clip.camera.resolution
    for i, frame in enumerate(clip.frames):
        file = clip.path / frame.file
        try:
            with Image.open(file) as image:
                size = image.size
        except (OSError, Image.DecompressionBombError) as exc:
            raise ClipError(f"{file}: frames[{i}].file: cannot be read as an image ({exc})") from None
        if size != want:
            raise ClipError(f"{file}: frames[{i}].file is {size[0]}x{size[1]}, camera.resolution says "
                            f"{want[0]}x{want[1]}")
    return clip


def _fail(path: Path, key: str, message: str) -> BadScenario:
    return BadScenario(f"{path}: {key}: {message}")


def _number(doc: dict[str, Any], key: str, default: float, path: Path, where: str, minimum: float = 0.0) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, f"{where}.{key}", f"must be a number >= {minimum}")
    if not math.isfinite(value):
        # TOML allows nan and inf: a nan mark compares false both ways and can never fail.
        raise _fail(path, f"{where}.{key}", f"must be a finite number >= {minimum}, not {value}")
    if value < minimum:
        raise _fail(path, f"{where}.{key}", f"must be a number >= {minimum}")
    return float(value)


def _known(doc: dict[str, Any], allowed: set[str], path: Path, where: str) -> None:
    for key in sorted(set(doc) - allowed):
        raise _fail(path, f"{where}.{key}" if where else key, "unknown key (typo?)")


def _check_stall(fault: Fault, speed: float, node: dict[str, dict[str, Any]], path: Path, where: str) -> None:
    """Refuse a camera_stall that cannot stall the node's camera (the run would then prove nothing)."""
    if speed == 0:
        raise _fail(path, f"{where}.kind", "camera_stall needs scenario.speed > 0: a lossless replay never "
                                           "waits for a frame, so a gap in the clip is not a stall")
    timeout = node.get("camera", {}).get("capture_timeout_s")
    # Only a timeout the scenario sets itself is checked here; the node's default is the node's
    # business, and the run checks the node's log for the stall either way.
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and fault.duration_s / speed <= timeout:
        raise _fail(path, f"{where}.duration_s", f"{fault.duration_s:g} s at speed {speed:g} is not longer than "
                                                 f"node.camera.capture_timeout_s = {timeout:g}: no stall would be seen")


def _check_timing(parsed: list[tuple[str, Fault, float]], span: ReplaySpan, timeout_s: float,
                  path: Path) -> list[Fault]:
    """Refuse faults that would land after the replay (or the run) is over; expand every_s repeats.

    The runner applies faults on a timeline that starts when the node starts replaying, and the
    node exits soon after the clip's last frame: a fault due after that would be applied to a
    node that is gone (or never, once timeout_s ends the run), so the run would prove nothing
    while looking like a pass, or fail in a way that blames the node. Every fault must begin
    while the clip is being replayed. A power cut restarts the node, which replays the clip from
    its start, so the replay ends a clip's length after the last power comes back.
    """
    replay_end = span.run_s
    after = ""           # what extended the replay, for the message
    for where, fault, _ in sorted((p for p in parsed if p[1].kind == "power_cut"), key=lambda p: p[1].at_s):
        if fault.at_s < replay_end - span.run_s:
            back_s = replay_end - span.run_s
            raise _fail(path, f"{where}.at_s", f"power_cut at {fault.at_s:g} s comes while the node is still off "
                                               f"after the power cut{after} (power back at {back_s:g} s)")
        _check_begin(where, fault, replay_end, after, span, path)
        replay_end = fault.end_s + span.run_s
        after = f" at {fault.at_s:g} s"
    faults: list[Fault] = []
    for where, fault, every in parsed:
        if fault.kind == "camera_stall":
            # A gap only shows as a stall if the camera has a frame to deliver after it: a gap
            # running to the clip's end just ends the clip early, and no stall is ever seen.
            if fault.end_s >= span.last_frame_s:
                key = "at_s" if fault.at_s >= span.last_frame_s else "duration_s"
                raise _fail(path, f"{where}.{key}", f"camera_stall from {fault.at_s:g} s to {fault.end_s:g} s (clip "
                                                    f"time) does not end before the clip's last frame: "
                                                    f"{span.describe()}; the camera must deliver a frame after "
                                                    "the gap, or no stall is ever seen")
        else:
            _check_begin(where, fault, replay_end, after, span, path)
        # The bench must be able to undo the fault (broker or HQ back, power back) before the
        # run's timeout, or the run ends in a timeout that blames the node.
        undo_s = fault.end_s if fault.duration_s > 0 and fault.kind != "camera_stall" else fault.at_s
        if undo_s >= timeout_s:
            what = f"{fault.kind} at {fault.at_s:g} s" + (f" ends at {undo_s:g} s" if undo_s != fault.at_s else "")
            key = "duration_s" if undo_s != fault.at_s else "at_s"
            raise _fail(path, f"{where}.{key}", f"{what}, not before scenario.timeout_s = {timeout_s:g}: the run "
                                                "is stopped at its timeout first")
        faults.append(fault)
        at = fault.at_s + every
        while every and at < replay_end:
            # Repeated while the (repeated) clip is being replayed; the first one past it is not due.
            faults.append(Fault(fault.kind, at, fault.duration_s))
            at += every
    if replay_end >= timeout_s:
        raise _fail(path, "scenario.timeout_s", f"{timeout_s:g} s does not cover the replay, which ends "
                                                f"{replay_end:.2f} s after the node starts ({span.describe()}"
                                                f"{'; replayed again after the power cut' + after if after else ''})")
    return faults


def _check_begin(where: str, fault: Fault, replay_end: float, after: str, span: ReplaySpan, path: Path) -> None:
    """Refuse a fault due at or after the end of the replay (see _check_timing)."""
    if fault.at_s < replay_end:
        return
    if after:
        why = (f"the node restarted after the power cut{after} replays the clip until {replay_end:.2f} s "
               f"({span.describe()})")
    else:
        why = f"{span.describe()}, so the node is done by then"
    raise _fail(path, f"{where}.at_s", f"{fault.kind} at {fault.at_s:g} s is after the replay ends: {why}; a fault "
                                        f"must begin before {replay_end:.2f} s")


def _check_overlaps(parsed: list[tuple[str, Fault, float]], faults: list[Fault], path: Path) -> None:
    """Refuse two faults on one resource at once (FAULT_RESOURCE), each every_s repeat included.

    The bench holds a resource down for one fault at a time: an outage inside another is ended
    by the first one's end (so the second is shorter than written); a broker_restart inside an
    outage starts the broker the outage wants down; two ingest_down at once start two HQ ingests
    with one client id; two stalls' gaps merge into one. None of that is what the file says.
    Fault windows are [at_s, at_s + duration_s]; one that begins exactly as another ends follows it.
    """
    written = {id(fault): where for where, fault, _ in parsed}
    # _check_timing lists each written Fault followed by its every_s repeats (new Fault objects)
    origin: dict[int, str] = {}
    where = ""
    for fault in faults:
        where = written.get(id(fault), where)
        origin[id(fault)] = where
    by_resource: dict[str, list[Fault]] = {}
    for fault in faults:
        by_resource.setdefault(FAULT_RESOURCE[fault.kind], []).append(fault)
    for resource, items in by_resource.items():
        # Sorted by start, any overlap shows between neighbours.
        items.sort(key=lambda f: (f.at_s, f.end_s))
        for a, b in itertools.pairwise(items):
            # Compared in whole microseconds: 1.1 + 2.2 is 3.3000000000000003 in floating point,
            # and a fault written to begin at 3.3 s as the other ends must follow it.
            a_at, a_end, b_at = (_us(t) for t in (a.at_s, a.end_s, b.at_s))
            inside = b_at < a_end                                    # b begins before a is over
            same_time = b_at == a_at                                 # two begin at once
            # an instant fault (broker_restart) at the very end of an outage would start the
            # broker the outage is about to start
            instant_on_edge = b.duration_s == 0 and a.duration_s > 0 and b_at <= a_end
            if not (inside or same_time or instant_on_edge) or origin[id(a)] == origin[id(b)]:
                # (every_s > duration_s, checked above, keeps one fault's repeats apart)
                continue
            first, second = sorted((origin[id(a)], origin[id(b)]), key=_fault_index)
            span = f"from {a.at_s:g} s to {a.end_s:g} s" if a.duration_s else f"at {a.at_s:g} s"
            raise _fail(path, f"{second}.at_s", f"{second} ({b.kind} at {b.at_s:g} s) overlaps {first} "
                                                f"({a.kind} {span}) on {resource}: one fault at a time per "
                                                "resource (the bench would undo one with the other)")


def _check_stall_power(parsed: list[tuple[str, Fault, float]], speed: float, path: Path) -> None:
    """Refuse a camera_stall whose gap, on a node run's timeline, straddles a power cut's kill.

    A stall is a gap in clip time, which a node run replays at_s / speed to end_s / speed seconds
    after it starts; a power cut kills the run at its at_s and starts a new one duration_s later,
    which replays the clip (gap included) from its start. A gap the kill falls inside is not what
    the file says: the node is killed mid-gap, before its camera could log the stall and come
    back, and the gap is seen again whole after the restart. A gap over before the kill is seen
    by both runs (each replays it); one the killed run would only have reached after its kill
    (while the node is off, or later), by the restarted run alone, whole. A restarted run is
    counted from when its power comes back (its start-up time comes on top). Times are compared
    in whole microseconds as in _check_overlaps; a gap ending exactly at the kill is over by it.
    """
    cuts = sorted(((where, f) for where, f, _ in parsed if f.kind == "power_cut"), key=lambda p: p[1].at_s)
    for where, stall, _ in parsed:
        if stall.kind != "camera_stall":
            continue
        start, run = 0.0, 1
        for cut_where, cut in cuts:
            lo, hi = start + stall.at_s / speed, start + stall.end_s / speed
            if _us(lo) < _us(cut.at_s) < _us(hi):
                later = max(where, cut_where, key=_fault_index)   # named by the later entry, as _check_overlaps
                whose = "" if run == 1 else f" as node run {run} replays it (power back at {start:g} s)"
                raise _fail(path, f"{later}.at_s",
                            f"{where} (camera_stall from {stall.at_s:g} s to {stall.end_s:g} s of clip time, "
                            f"{round(lo, 3):g} s to {round(hi, 3):g} s into the run{whose} at speed {speed:g}) "
                            f"overlaps {cut_where} (power_cut: node off from {cut.at_s:g} s to {cut.end_s:g} s): the node "
                            "is killed mid-gap, and the restarted node replays the gap again from the clip's start; a "
                            "stall must end by the kill or begin after it")
            start, run = cut.end_s, run + 1


def _us(seconds: float) -> int:
    """Seconds as whole microseconds, for comparing fault times (floating point sums differ)."""
    return round(seconds * 1e6)


def _fault_index(where: str) -> int:
    """3 for 'faults[3]'."""
    return int(where.removeprefix("faults[").removesuffix("]"))


def _clip_dir(clip_name: str, path: Path) -> Path:
    """The clip folder `scenario.clip` names: a bare name is a shipped clip (hil/clips/<name>); a
    name with a '/' or a leading '.' is a path, relative to the scenario file's folder.

    A bare name that is not shipped is looked for beside the scenario file (a tester's own
    recording); a bare name that is both is refused as ambiguous, naming both folders: taking
    either silently would replay a clip the tester did not mean.
    """
    if "/" in clip_name or clip_name.startswith("."):
        clip = (path.parent / clip_name).resolve()
        if not (clip / "clip.json").is_file():
            raise _fail(path, "scenario.clip", f"{clip_name!r} is a path (it has a '/' or a leading '.'), and "
                                               f"{clip} is no clip directory (no clip.json)")
        return clip
    shipped_clip = CLIP_DIR / clip_name
    local = (path.parent / clip_name).resolve()
    is_shipped = (shipped_clip / "clip.json").is_file()
    if is_shipped and local.is_dir() and local != shipped_clip.resolve():
        raise _fail(path, "scenario.clip", f"{clip_name!r} is ambiguous: a shipped clip ({shipped_clip}) and a "
                                           f"folder beside the scenario file ({local}); write "
                                           f"\"./{clip_name}\" for the folder, or rename it")
    if is_shipped:
        return shipped_clip
    if (local / "clip.json").is_file():
        return local
    raise _fail(path, "scenario.clip", f"{clip_name!r} is neither a shipped clip in {CLIP_DIR} nor a clip "
                                       f"directory beside the scenario file ({local})")


def _dedup_warning(repeat: int, loaded: Clip, node: dict[str, dict[str, Any]], path: Path) -> str | None:
    """A warning when a repeated clip's plates come round again within the node's dedup window."""
    if repeat <= 1:
        return None
    period_s = repeat_period_ns(loaded) / 1e9
    window = node.get("pipeline", {}).get("dedup_window_s")
    default = isinstance(window, bool) or not isinstance(window, (int, float))
    if default:
        window = NODE_DEDUP_WINDOW_S
    if window < period_s:
        return None
    whose = " (the node's default)" if default else ""
    return (f"{path}: scenario.repeat = {repeat} replays the clip every {period_s:.2f} s, but "
            f"node.pipeline.dedup_window_s = {window:g} s{whose} is not shorter: the node will suppress "
            f"each repeat's reads as \"seen again\"; set node.pipeline.dedup_window_s below {period_s:.2f}")


def find(name_or_path: str) -> Path:
    """A scenario by name (hil/scenarios/<name>.toml) or by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    shipped = SCENARIO_DIR / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")))
    raise BadScenario(f"{name_or_path}: no such scenario file, and not a shipped scenario (known: {known})")


def shipped(include_long: bool = False) -> list[Scenario]:
    """Every scenario in hil/scenarios, the long ones only when asked for."""
    out = [load(p) for p in sorted(SCENARIO_DIR.glob("*.toml"))]
    return [s for s in out if include_long or not s.long]


def load(path: Path) -> Scenario:
    """Read and validate a scenario file; BadScenario names the file and key."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadScenario(f"{path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadScenario(f"{path}: not valid TOML: {exc}") from None
    _known(doc, {"scenario", "node", "faults", "expect"}, path, "")
    head = doc.get("scenario")
    if not isinstance(head, dict):
        raise _fail(path, "scenario", "a [scenario] table is required")
    _known(head, {"description", "clip", "speed", "timeout_s", "long", "repeat"}, path, "scenario")
    clip_name = head.get("clip")
    if not isinstance(clip_name, str) or not clip_name:
        raise _fail(path, "scenario.clip", "required: a clip name in hil/clips or a path")
    clip = _clip_dir(clip_name, path)
    try:
        # Here rather than at run time: in a multi-scenario run a broken clip must stop
        # everything before the first scenario runs, not discard the runs already made.
        loaded = check_clip(clip)
    except ClipError as exc:
        raise _fail(path, "scenario.clip", str(exc)) from exc
    long = head.get("long", False)
    if not isinstance(long, bool):
        raise _fail(path, "scenario.long", "must be true or false")
    repeat = head.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= 100_000:
        raise _fail(path, "scenario.repeat", "must be an int 1..100000")
    node = doc.get("node", {})
    if not isinstance(node, dict):
        raise _fail(path, "node", "must be a table of tables, e.g. node.outbox = { quota_mb = 0.2 }")
    node = dict(node)
    triggers = _triggers(node.pop("triggers"), path) if "triggers" in node else ()
    for section, value in node.items():
        if not isinstance(value, dict):
            raise _fail(path, f"node.{section}", "must be a table, e.g. node.outbox = { quota_mb = 0.2 } (or "
                                                 "[[node.triggers]] entries)")
    for section in node:
        if section in _NODE_SECTIONS_REFUSED:
            raise _fail(path, f"node.{section}", "is set by the bench itself and cannot be overridden")
    speed = _number(head, "speed", 1.0, path, "scenario")
    timeout_s = _number(head, "timeout_s", 40.0, path, "scenario", minimum=1.0)
    parsed: list[tuple[str, Fault, float]] = []
    raw_faults = doc.get("faults", [])
    if not isinstance(raw_faults, list):
        raise _fail(path, "faults", "must be an array of tables ([[faults]])")
    for i, item in enumerate(raw_faults):
        where = f"faults[{i}]"
        if not isinstance(item, dict):
            raise _fail(path, where, "must be a table")
        _known(item, {"kind", "at_s", "duration_s", "every_s"}, path, where)
        if item.get("kind") not in FAULT_KINDS:
            raise _fail(path, f"{where}.kind", f"must be one of {', '.join(FAULT_KINDS)}")
        fault = Fault(item["kind"], _number(item, "at_s", -1.0, path, where), _number(item, "duration_s", 0.0, path, where))
        if fault.kind in ("broker_outage", "ingest_down", "camera_stall", "power_cut") and fault.duration_s <= 0:
            raise _fail(path, f"{where}.duration_s", f"must be > 0 for {fault.kind}")
        every = _number(item, "every_s", 0.0, path, where)
        if fault.kind == "broker_restart" and "duration_s" in item:
            # A restart is instant; a duration_s made the bench restart the broker again at its end.
            raise _fail(path, f"{where}.duration_s", "is not taken by broker_restart (a stop and start at "
                                                     "at_s); for the broker down a while use broker_outage")
        if every and every <= fault.duration_s:
            raise _fail(path, f"{where}.every_s", "must be longer than duration_s (faults would overlap)")
        if every and fault.kind == "camera_stall":
            raise _fail(path, f"{where}.every_s", "is not supported for camera_stall")
        if every and fault.kind == "power_cut":
            # Each cut restarts the replay from the clip's start, so "again until the clip ends"
            # has no fixed end to count to; a tester writes each cut out instead.
            raise _fail(path, f"{where}.every_s", "is not supported for power_cut (each cut replays the clip "
                                                  "from its start): write each cut as its own [[faults]]")
        if fault.kind == "camera_stall":
            _check_stall(fault, speed, node, path, where)
        parsed.append((where, fault, every))
    span = replay_span(loaded, repeat, speed, clip_name)
    faults = _check_timing(parsed, span, timeout_s, path)
    _check_overlaps(parsed, faults, path)
    _check_stall_power(parsed, speed, path)
    expect_doc = doc.get("expect", {})
    if not isinstance(expect_doc, dict):
        raise _fail(path, "expect", "must be a table")
    _known(expect_doc, {"min_correct", "min_read", "max_latency_s", "max_false_reads"}, path, "expect")
    max_false = expect_doc.get("max_false_reads", 0)
    if isinstance(max_false, bool) or not isinstance(max_false, int) or max_false < 0:
        raise _fail(path, "expect.max_false_reads", "must be an int >= 0")
    expect = Expect(_number(expect_doc, "min_correct", 0.0, path, "expect"),
                    _number(expect_doc, "max_latency_s", 30.0, path, "expect"), max_false,
                    _number(expect_doc, "min_read", 0.0, path, "expect"))
    for key in ("min_correct", "min_read"):
        if getattr(expect, key) > 1:
            raise _fail(path, f"expect.{key}", "is a fraction 0..1")
    description = head.get("description", "")
    if not isinstance(description, str):
        raise _fail(path, "scenario.description", "must be a string")
    warning = _dedup_warning(repeat, loaded, node, path)
    return Scenario(
        name=path.stem, path=path, clip=clip, description=description,
        speed=speed, timeout_s=timeout_s, long=long, repeat=repeat, node=node,
        faults=tuple(sorted(faults, key=lambda f: f.at_s)), expect=expect, triggers=triggers,
        warnings=(warning,) if warning else ())
