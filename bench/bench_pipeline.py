"""Benchmark the node pipeline as it runs in production: `alpr-node run` on one CPU core.

    .venv/bin/python bench/bench_pipeline.py [--clip day-3-vehicles] [--repeat 2] [--cpu 0] [--json FILE]

1. Throughput: the clip (1280x720 main, 640x352 lores, shipped models) replayed losslessly
   (source.speed = 0) in pipeline.mode = "continuous", detecting on every frame, with the node
   process pinned to one core (sched_setaffinity). frames/s = frames / replay time (log lines
   "started" → "source ended"); per-stage ms from the health JSON the node publishes on
   alpr/v1/node/<id>/health (read with the lab's second HQ certificate), median of samples.
2. Trigger latency: the same clip in "triggered" mode at real time (speed 1): for each loop
   trigger, HQ stored_ns of the first message (read or no_read event) for it minus the
   trigger's wall time. With the broker on loopback this is the trigger → outbox time plus
   a few ms of transport; a no_read is only committed when its pass closes (window_after_s +
   track_timeout_s after the loop releases), so those latencies include that wait by design.
3. Peak RSS of the node process: VmHWM from /proc/<pid>/status, polled until it exits.

Not a test: figures depend on the machine (and on what else runs on it). The clip's JPEG decode
runs inside the node (a camera would deliver raw frames), so it is measured separately too.
"""
from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hardware.clip import Clip
from hil.derive import derive_clip
from hil.judge import parse_trigger_id
from hil.lab import Lab
from hil.runner import NODE_ID, read_hq
from provisioning import tomlout
from transport import topics


class HealthListener:
    """Collects the node's health JSON from the broker (QoS 0, as published)."""

    def __init__(self, lab: Lab, worker: str) -> None:
        import paho.mqtt.client as mqtt

        self.samples: list[dict] = []
        self._lock = threading.Lock()
        tls = lab.hq_dir / "tls"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{worker}-bench")
        self.client.username_pw_set(worker)
        self.client.tls_set(ca_certs=str(tls / "ca.pem"), certfile=str(tls / f"{worker}.pem"),
                            keyfile=str(tls / f"{worker}.key"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topics.node_topic(NODE_ID, "health"), qos=0)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", lab.broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        with self._lock:
            self.samples.append(doc)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _spawn_node(lab: Lab, config: Path, cpu: int | None) -> subprocess.Popen:
    with open(lab.root / f"{NODE_ID}.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "node.cli", "run", "--config", str(config), "--exit-when-done"],
                                stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    if cpu is not None:
        # Pinned at once, before the interpreter has started any thread: every thread inherits it.
        os.sched_setaffinity(proc.pid, {cpu})
    return proc


def _peak_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _log_times(path: Path) -> tuple[float | None, float | None]:
    """Wall seconds (from the log's timestamps) of 'started' and 'source ended'."""
    import datetime

    def stamp(line: str) -> float:
        return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    start = end = None
    for line in path.read_text(errors="replace").splitlines():
        if f"node {NODE_ID} started" in line and start is None:
            start = stamp(line)
        elif "source ended" in line and end is None:
            end = stamp(line)
    return start, end


def run_node(clip: Clip, out: Path, mode: str, speed: float, cpu: int | None) -> dict:
    """One `alpr-node run` of the clip; returns its measurements."""
    lab = Lab(out, hq_workers=2)
    lab.broker.start()
    procs: list[subprocess.Popen] = []
    listener = None
    try:
        body = tomlout.document({
            "source": {"kind": "clip", "clip": str(clip.path.resolve()), "speed": speed},
            "pipeline": {"mode": mode, "threads": 1, "detect_rate_hz": 0.0},
            "health": {"interval_s": 1},
            "outbox": {"resend_after_s": 2},
        })
        node = lab.add_node(NODE_ID, body=body)
        procs.append(lab.start_ingest(lab.hq_workers[0]))
        listener = HealthListener(lab, lab.hq_workers[1])
        began = time.monotonic()
        proc = _spawn_node(lab, node.config, cpu)
        procs.append(proc)
        peak = 0
        while proc.poll() is None and time.monotonic() - began < 600:
            peak = max(peak, _peak_rss_kb(proc.pid))
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(30)
        time.sleep(1.0)
        reads, events, _, _ = read_hq(lab.hq_dir / "hq.db")
        samples = list(listener.samples)
    finally:
        if listener is not None:
            listener.close()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        lab.close()
    start, end = _log_times(out / f"{NODE_ID}.log")
    frames = [s["pipeline"]["counts"].get("frames", 0) for s in samples if "pipeline" in s]
    stage = {k: [s["pipeline"]["stage_ms"][k] for s in samples if "pipeline" in s and s["pipeline"]["stage_ms"].get(k)]
             for k in ("detect", "ocr", "frame")}
    last = next((x["pipeline"]["counts"] for x in reversed(samples) if "pipeline" in x), {})
    return {"exit": code, "counts": last, "peak_rss_mb": round(peak / 1024, 1), "replay_s": (end - start) if start and end else None,
            "frames_reported": max(frames, default=0), "stage_ms_median": {k: round(statistics.median(v), 2) if v else None
                                                                           for k, v in stage.items()},
            "health_samples": len(samples), "reads": reads, "events": events,
            "wall_minus_mono_ns": time.time_ns() - time.monotonic_ns()}


def decode_cost_ms(clip: Clip, n: int = 30) -> float:
    """Median ms to decode one clip JPEG and make its lores image (replay overhead, not on a Pi)."""
    times = []
    for i in range(min(n, len(clip))):
        t0 = time.perf_counter()
        clip.make_lores(clip.read_main(i))
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def trigger_latencies(clip: Clip, result: dict) -> list[float]:
    """Seconds from each trigger (wall) to HQ storing the first message that names it."""
    first: dict[str, int] = {}
    for item in [*result["reads"], *result["events"]]:
        if item.trigger_id and (item.trigger_id not in first or item.stored_ns < first[item.trigger_id]):
            first[item.trigger_id] = item.stored_ns
    out = []
    for tid, stored in first.items():
        parsed = parse_trigger_id(tid)
        if parsed is not None:
            out.append((stored - (parsed[1] + result["wall_minus_mono_ns"])) / 1e9)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="day-3-vehicles", help="a clip in hil/clips, or a clip path")
    parser.add_argument("--repeat", type=int, default=2, help="replay the clip this many times back to back")
    parser.add_argument("--cpu", type=int, default=0, help="core to pin alpr-node to (-1: no pinning)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    path = ROOT / "hil" / "clips" / args.clip
    source = Clip.load(path if path.is_dir() else Path(args.clip))
    cpu = None if args.cpu < 0 else args.cpu
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        tmp_path = Path(tmp)
        clip = derive_clip(source, tmp_path / "clip", repeat=args.repeat) if args.repeat > 1 else source
        cont = run_node(clip, tmp_path / "continuous", "continuous", 0.0, cpu)
        trig = run_node(source, tmp_path / "triggered", "triggered", 1.0, cpu)
    fps = len(clip) / cont["replay_s"] if cont["replay_s"] else None
    lat = trigger_latencies(source, trig)
    figures = {
        "clip": f"{source.path.name} x{args.repeat} ({len(clip)} frames, {clip.camera.resolution[0]}x"
                f"{clip.camera.resolution[1]}, lores {clip.camera.lores_size[0]}x{clip.camera.lores_size[1]})",
        "cpu_pinned": cpu,
        "continuous_fps": round(fps, 2) if fps else None,
        "continuous_replay_s": round(cont["replay_s"], 2) if cont["replay_s"] else None,
        "stage_ms_median": cont["stage_ms_median"],
        "health_samples": cont["health_samples"],
        "detections_per_frame": round(cont["counts"].get("detections", 0) / max(1, cont["counts"].get("frames", 0)), 1),
        "pipeline_counts_continuous": cont["counts"],
        "clip_decode_ms_per_frame": round(decode_cost_ms(source), 2),
        "peak_rss_mb_continuous": cont["peak_rss_mb"],
        "peak_rss_mb_triggered": trig["peak_rss_mb"],
        "triggered_reads": len(trig["reads"]), "triggered_no_read_events": len(trig["events"]),
        "trigger_to_hq_s": {"n": len(lat), "median": round(statistics.median(lat), 3) if lat else None,
                            "worst": round(max(lat), 3) if lat else None},
        "exit_codes": [cont["exit"], trig["exit"]],
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if figures["exit_codes"] == [0, 0] else 1


if __name__ == "__main__":
    sys.exit(main())
