"""What the bench reads in the node's log: camera-stall evidence, ClipError lines, committed messages."""
from __future__ import annotations

from pathlib import Path

import pytest

from hil import nodelog
from hil.scenario import Fault

pytestmark = pytest.mark.hil

STARTED = "node hil-node started"
LOG = Path("/lab/hil-node.log")
STALL = Fault("camera_stall", 3.2, 3.0)

_HEAD = """INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
2026-12-01 10:10:30,134 INFO node.runtime: node hil-node started (site site-1, source clip)
2026-12-01 10:10:32,773 INFO node.pipeline: read track-3 (0.89) seq 1, 9 frames, approaching, trigger loop1-48939829718302
"""
_STALLED = ("2026-12-01 10:10:35,261 WARNING hardware.camera: camera: stalled (CameraTimeout: /x/clip: no frame "
            "within 2.000s (next is frames[26]))\n")
_TAIL = """2026-12-01 10:10:36,386 WARNING node.pipeline: trigger loop1-48942429697512 (lane 1): vehicle passed, no read (event seq 2)
2026-12-01 10:10:38,267 INFO node.pipeline: read 5RJM907 (0.89) seq 3, 10 frames, approaching, trigger loop1-48945217944304
"""
_ENDED = "2026-12-01 10:10:38,635 INFO hardware.camera: camera: source ended\n"


def test_a_stall_inside_the_gap_followed_by_the_camera_running_to_the_end_is_evidence():
    assert nodelog.stall_problems(_HEAD + _STALLED + _TAIL + _ENDED, [STALL], 1.0, STARTED, LOG) == []


def test_a_camera_stall_the_node_never_saw_is_a_bench_error():
    # camera.capture_timeout_s longer than the gap: the replay just waited, nothing stalled
    problems = nodelog.stall_problems(_HEAD + _TAIL + _ENDED, [STALL], 1.0, STARTED, LOG)
    assert len(problems) == 1
    assert "camera_stall at 3.2s for 3s: the node logged no 'camera: stalled' between 2.7s and 6.7s" in problems[0]
    assert str(LOG) in problems[0]


def test_a_stall_outside_the_gap_or_a_camera_that_never_came_back_is_a_bench_error():
    late = _STALLED.replace("10:10:35,261", "10:10:37,900")   # 7.8 s after the start: after the gap
    assert "no 'camera: stalled'" in nodelog.stall_problems(_HEAD + late + _ENDED, [STALL], 1.0, STARTED, LOG)[0]
    never = nodelog.stall_problems(_HEAD + _STALLED + _TAIL, [STALL], 1.0, STARTED, LOG)
    assert len(never) == 1 and "camera never came back" in never[0]
    # at half speed the gap is 6.4-12.4 s of wall time: the stall at 5.1 s is before it
    assert nodelog.stall_problems(_HEAD + _STALLED + _ENDED, [STALL], 0.5, STARTED, LOG)


def test_the_stall_may_be_seen_in_any_node_run_and_other_faults_are_not_checked():
    second_run = _HEAD.replace("10:10:3", "10:10:5") + _STALLED.replace("10:10:35", "10:10:55") + \
        _ENDED.replace("10:10:38", "10:10:58")
    assert nodelog.stall_problems(_HEAD + second_run, [STALL], 1.0, STARTED, LOG) == []
    assert nodelog.stall_problems("", [Fault("broker_outage", 1.0, 2.0)], 1.0, STARTED, LOG) == []


def test_clip_error_lines_are_copied_once_each():
    line = ("2026-12-01 10:10:33,001 WARNING hardware.camera: camera: error (ClipError: /c/frames/000020.jpg: "
            "frames[19] is 640x360, camera.resolution says 1280x720)\n")
    errors = nodelog.clip_errors(_HEAD + line + line.replace("33,001", "34,002") + _ENDED, LOG)
    assert errors == [(f"node log ({LOG}): camera: error (ClipError: /c/frames/000020.jpg: frames[19] is 640x360, "
                       "camera.resolution says 1280x720)")]
    assert nodelog.clip_errors(_HEAD + _ENDED, LOG) == []


def test_committed_messages_and_quota_drops_are_read_from_the_log():
    drop = ("2026-12-01 10:10:37,000 WARNING transport.outbox: outbox /x/outbox.db: quota reached, dropping "
            "event seq 2 (14043 bytes)\n")
    found = nodelog.messages(_HEAD + _TAIL + drop)
    assert [(m.seq, m.kind, m.trigger_id, m.dropped) for m in found] == [
        (1, "read", "loop1-48939829718302", False), (2, "no_read", "loop1-48942429697512", True),
        (3, "read", "loop1-48945217944304", False)]


def test_a_clip_error_is_noticed_as_the_log_grows(tmp_path: Path):
    path = tmp_path / "hil-node.log"
    watch = nodelog.ClipErrorWatch(path, every_s=0.0)
    assert not watch.seen()   # no log yet
    path.write_text(_HEAD)
    assert not watch.seen()
    with open(path, "a") as f:
        f.write("2026-12-01 10:10:33,001 WARNING hardware.camera: camera: error (Clip")
    assert not watch.seen()
    with open(path, "a") as f:   # the word split across two reads
        f.write("Error: /c/frames/000010.jpg: cannot decode as JPEG (frames[9].file))\n")
    assert watch.seen()
