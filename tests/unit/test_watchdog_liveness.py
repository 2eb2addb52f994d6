"""The watchdog is withheld when a thread hangs, not only when it dies.

systemd restarts the node only if it stops pinging; a pipeline stuck inside one frame (a
model or a disk that never returns) used to keep the pings going because its thread was
still alive.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from hardware.clip import CameraSettings, ClipWriter
from hardware.clip_camera import ClipCamera
from hardware.errors import CameraTimeout
from hardware.timeline import ReplayTimeline
from node.identity import Identity
from node.pipeline import Pipeline, PipelineSettings
from node.runtime import liveness_problem
from node.sink import ReadSink
from tests.unit.test_mqtt_link_stop import _self_signed
from transport.mqtt import BrokerSettings, MqttLink
from transport.outbox import Outbox

pytestmark = pytest.mark.unit


class HangingDetector:
    """Returns for the first frames, then blocks inside detect() until released."""

    def __init__(self, after: int) -> None:
        self.calls = 0
        self.after = after
        self.entered = threading.Event()
        self.release = threading.Event()

    def detect(self, image):
        self.calls += 1
        if self.calls > self.after:
            self.entered.set()
            self.release.wait(30)
        return []


class NoReader:
    def read(self, crop):  # pragma: no cover - nothing is detected
        raise AssertionError("no plate to read")


class LiveLink:
    """The uplink side, alive and current (so only the source is judged)."""

    def alive(self) -> bool:
        return True

    def stalled_s(self) -> float:
        return 0.0


def _pipeline(tmp_path: Path, detector) -> Pipeline:
    writer = ClipWriter(tmp_path / "clip", CameraSettings((64, 48), (32, 24), 10.0))
    for i in range(200):
        writer.add_frame(np.full((48, 64, 3), 60, np.uint8), int(i * 1e8))
    clip = writer.close()
    timeline = ReplayTimeline(0.0)
    sink = ReadSink(Identity("n1", ed25519.Ed25519PrivateKey.generate(),
                             x25519.X25519PrivateKey.generate().public_key(), ()), Outbox(tmp_path / "outbox.db"))
    return Pipeline(camera_factory=lambda: ClipCamera(clip, timeline=timeline), detector=detector, reader=NoReader(),
                    sink=sink, settings=PipelineSettings(mode="continuous", node_id="n1", site_id="s1",
                                                         camera_id="c0", lossless_replay=True),
                    capture_timeout_s=1.0, ends=True, clock_ns=timeline.now_ns)


def _assert_ping_withheld(pipeline: Pipeline) -> None:
    problem = liveness_problem(pipeline, LiveLink(), limit_s=0.5)
    assert problem is not None and problem.startswith("source thread has made no progress")


def hung_pipeline(tmp_path: Path) -> tuple[Pipeline, HangingDetector]:
    """A started pipeline whose worker is inside a frame that does not return until
    `detector.release` is set (the caller stops it)."""
    detector = HangingDetector(after=3)
    pipeline = _pipeline(tmp_path, detector)
    pipeline.start()
    if not detector.entered.wait(10):
        detector.release.set()
        pipeline.stop(5)
        pytest.fail("the pipeline never reached the hanging frame")
    return pipeline, detector


def test_a_pipeline_hung_inside_a_frame_withholds_the_ping(tmp_path: Path) -> None:
    pipeline, detector = hung_pipeline(tmp_path)
    try:
        time.sleep(0.6)
        assert pipeline.alive(), "the thread is alive: liveness alone cannot see this hang"
        assert pipeline.stalled_s() >= 0.5
        _assert_ping_withheld(pipeline)
    finally:
        detector.release.set()
        pipeline.stop(5)


def test_a_working_pipeline_keeps_the_ping(tmp_path: Path) -> None:
    detector = HangingDetector(after=10**9)
    pipeline = _pipeline(tmp_path, detector)
    pipeline.start()
    try:
        deadline = time.monotonic() + 5
        while detector.calls < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline.stalled_s() < 0.5
        assert liveness_problem(pipeline, LiveLink(), limit_s=0.5) is None or pipeline.done.is_set()
    finally:
        pipeline.stop(5)


def test_a_link_waiting_out_its_backoff_is_not_hung(tmp_path: Path) -> None:
    # Nothing listens on this port: the link fails to connect and waits a backoff it planned.
    cert, key = _self_signed(tmp_path)
    settings = BrokerSettings("127.0.0.1", 1, cert, cert, key, "n1", backoff_min_s=2.0, backoff_max_s=2.0)
    link = MqttLink(settings, name="backoff", on_connect=lambda c, s: None, on_message=lambda c, m: None)
    link.start()
    try:
        time.sleep(1.2)
        assert link.alive() and link.stats.failures >= 1
        assert link.stalled_s() < 0.5  # inside a backoff wait of up to 2 s: planned, not a hang
    finally:
        assert link.stop(5)


def test_a_finished_clip_source_is_not_a_problem_but_a_dead_link_is() -> None:
    class Finished:
        done = threading.Event()
        ends = True

        def alive(self) -> bool:
            return False

        def stalled_s(self) -> float:
            return 999.0
    Finished.done.set()

    class DeadLink(LiveLink):
        def alive(self) -> bool:
            return False

    assert liveness_problem(Finished(), LiveLink(), limit_s=1) is None
    assert liveness_problem(Finished(), DeadLink(), limit_s=1) == "uplink thread is not running"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_live_camera_worker_that_died_withholds_the_ping(tmp_path: Path) -> None:
    # The worker sets `done` on any exit, a crash included; a live camera never ends on its own.
    pipeline = _pipeline(tmp_path, HangingDetector(after=10**9))
    pipeline.ends = False

    def broken_get():
        raise RuntimeError("worker bug outside the per-frame guard")
    pipeline._get = broken_get  # type: ignore[method-assign]
    pipeline.start()
    try:
        assert pipeline.done.wait(5)
        deadline = time.monotonic() + 5
        while pipeline.alive() and time.monotonic() < deadline:  # `done` is set just before it exits
            time.sleep(0.01)
        assert not pipeline.alive()
        assert liveness_problem(pipeline, LiveLink(), limit_s=5) == "source thread is not running"
    finally:
        pipeline.stop(5)


class StuckOpening:
    """A camera whose start() never returns until released, as libcamera can when the sensor
    cannot be acquired: the capture thread is alive and waits in no loop of ours."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def start(self) -> None:
        self.entered.set()
        self.release.wait(30)

    def capture(self, timeout: float):  # pragma: no cover - never reached while stuck
        raise CameraTimeout("no frame")

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_camera_stuck_opening_withholds_the_ping(tmp_path: Path) -> None:
    camera = StuckOpening()
    sink = ReadSink(Identity("n1", ed25519.Ed25519PrivateKey.generate(),
                             x25519.X25519PrivateKey.generate().public_key(), ()), Outbox(tmp_path / "outbox.db"))
    pipeline = Pipeline(camera_factory=lambda: camera, detector=HangingDetector(after=10**9), reader=NoReader(),
                        sink=sink, settings=PipelineSettings(mode="continuous", node_id="n1", site_id="s1",
                                                             camera_id="c0"), capture_timeout_s=0.2)
    pipeline.start()
    try:
        assert camera.entered.wait(10)
        time.sleep(0.7)
        # The worker thread is fine (it waits for frames): the camera thread is what is stuck.
        assert pipeline.alive()
        assert pipeline.camera.stalled_s() >= 0.6 and pipeline.stalled_s() >= 0.6
        _assert_ping_withheld(pipeline)
    finally:
        camera.release.set()
        pipeline.stop(5)


def test_a_camera_that_times_out_and_retries_is_not_stuck(tmp_path: Path) -> None:
    """Stalls the supervisor sees (capture timeouts, backoff) are its own business, not a hang."""
    class NoFrames(StuckOpening):
        def start(self) -> None:
            self.entered.set()

        def capture(self, timeout: float):
            time.sleep(timeout)
            raise CameraTimeout("no frame")

    from hardware.camera import CameraSupervisor

    supervisor = CameraSupervisor(NoFrames, lambda frame: None, capture_timeout_s=0.1, backoff_initial_s=0.05,
                                  backoff_max_s=0.1)
    supervisor.start()
    try:
        worst = 0.0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            worst = max(worst, supervisor.stalled_s())
            time.sleep(0.01)
        assert supervisor.stats().stalls >= 2
        assert worst < 0.5
    finally:
        supervisor.stop(2)
    assert supervisor.stalled_s() == 0.0


def test_a_capture_that_overruns_its_timeout_counts_as_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture may take its whole timeout (up to 60 s in node.toml) without being a hang; past
    the timeout and CAPTURE_GRACE_S, the driver ignored it and the thread is stuck."""
    import hardware.camera as camera_mod

    monkeypatch.setattr(camera_mod, "CAPTURE_GRACE_S", 0.1)
    release = threading.Event()

    class IgnoresTimeout(StuckOpening):
        def start(self) -> None:
            self.entered.set()

        def capture(self, timeout: float):
            release.wait(30)
            raise CameraTimeout("no frame")

    supervisor = camera_mod.CameraSupervisor(IgnoresTimeout, lambda frame: None, capture_timeout_s=0.3)
    supervisor.start()
    try:
        time.sleep(0.25)
        assert supervisor.stalled_s() == 0.0  # within its timeout: waiting, not stuck
        time.sleep(0.6)
        assert supervisor.stalled_s() >= 0.3  # 0.85 s in, 0.4 s past timeout and grace
    finally:
        release.set()
        supervisor.stop(2)


def test_a_link_whose_tick_fails_on_every_turn_counts_as_stalled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connected, going round its loop, but the tick hook (publishing the outbox) raising every
    turn, say on a failing disk: nothing leaves the node, so the watchdog must not be pinged."""
    cert, key = _self_signed(tmp_path)
    settings = BrokerSettings("127.0.0.1", 1, cert, cert, key, "n1")

    def failing_tick(client) -> None:
        raise OSError("disk I/O error")

    link = MqttLink(settings, name="failing", on_connect=lambda c, s: None, on_message=lambda c, m: None,
                    on_tick=failing_tick)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    link._connected.set()  # as after a CONNACK
    link._beat = link._tick_ok = clock[0]
    stop_after = [0]

    def loop_turn(timeout: float = 0.0) -> int:
        clock[0] += 0.5
        stop_after[0] += 1
        if stop_after[0] >= 60:
            link._stop.set()
        return 0

    monkeypatch.setattr(link._client, "loop", loop_turn)
    monkeypatch.setattr(link, "_connect_once", lambda: True)
    link._run()  # 60 turns of half a second: 30 s of failing ticks
    link._connected.set()  # still connected (the test's _run ended the loop, not the broker)
    assert link._tick_failures >= 59
    assert link.stalled_s() >= 25.0  # the runtime withholds the ping past 20 s (liveness_problem)
