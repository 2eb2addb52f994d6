"""Figures for the secure data path (not a test): envelope rate, outbox commits, end-to-end rate, wire bytes.

    .venv/bin/python bench/bench_transport.py [--reads 5000]

Runs on one core where it can (os.sched_setaffinity), against a real local Mosquitto.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519  # noqa: E402

from transport import cbor, envelope  # noqa: E402
from transport.keys import key_id  # noqa: E402
from transport.outbox import Outbox  # noqa: E402
from transport.payload import Candidate, ReadPayload  # noqa: E402


def sample(crop_bytes: int = 20_000) -> ReadPayload:
    plate = "7ABC123"
    return ReadPayload(plate=plate, confidence=0.97, capture_time_ns=time.time_ns(), node_id="bench-node",
                       site_id="site", camera_id="cam0", crop_jpeg=os.urandom(crop_bytes),
                       char_confidences=(0.97,) * 7, candidates=tuple(Candidate(plate, 0.97) for _ in range(10)),
                       region="ca", region_confidence=0.9, clock_sync="synced", direction="approaching",
                       trigger_source="loop", trigger_id="loop1-1", lane="1", box=(1, 2, 3, 4),
                       models={"detector": "plate_detector@1", "ocr": "plate_ocr@1"}, seq=1)


def rate(fn, seconds: float = 3.0) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=5000, help="reads for the end-to-end run")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    node, hq = ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    read = sample()
    wire = read.to_wire()
    seal = lambda: envelope.seal(wire, kind="read", node_id="bench-node", seq=1, time_ns=wire["t_ns"], signing_key=node,
                                 recipient=hq.public_key())
    message = seal()
    keys = {key_id(hq.public_key()): hq}
    open_ = lambda: envelope.open_envelope(message, signer_for=lambda h: node.public_key(), decryption_keys=keys)
    print(f"envelope build (sign+encrypt), 20 KB crop: {rate(seal):8.0f} /s on one core")
    print(f"envelope open (verify+decrypt), 20 KB crop: {rate(open_):8.0f} /s on one core")
    raw = len(read.crop_jpeg) + len(read.plate) + 8 * len(read.char_confidences)
    payload = len(cbor.dumps(wire))
    print(f"bytes: crop+plate+confidences {raw}, CBOR payload {payload}, envelope {len(message)} "
          f"(+{len(message) - payload} for header, signature, HPKE), overhead {100 * (len(message) - raw) / raw:.1f}%")
    with tempfile.TemporaryDirectory() as tmp:
        box = Outbox(Path(tmp) / "o.db")
        sealed = message

        def commit():
            box.commit("read", lambda seq: sealed)
        print(f"outbox commits (WAL, synchronous=FULL, 20 KB each): {rate(commit):8.0f} /s")
        box.close()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    end_to_end(args.reads)


def end_to_end(total: int) -> None:
    """Fill a node's outbox offline, then time node → Mosquitto → HQ store → acks → outbox empty."""
    import sqlite3

    from hil.lab import Lab

    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp) / "lab")
        node = lab.add_node("bench-node", body=(
            f'[source]\nkind = "synthetic"\n[source.synthetic]\nrate_hz = 10000\ntotal = {total}\n'
            'crop_bytes = 20000\n[outbox]\nwindow = 1000\n'))
        proc = lab.start_node(node)  # broker down: reads pile up in the outbox
        db = node.data_dir / "outbox.db"
        while True:
            time.sleep(0.5)
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                n = con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                con.close()
            except sqlite3.Error:
                n = 0
            if n >= total:
                break
        lab.broker.start()
        ingest = lab.start_ingest()
        start = time.perf_counter()
        while True:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            n = con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            con.close()
            if n == 0:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        print(f"end to end: {total} reads (20 KB crops) node outbox → Mosquitto (mTLS) → HQ SQLite → signed acks "
              f"→ outbox empty in {elapsed:.1f}s = {total / elapsed:.0f} reads/s (includes connect and TLS set-up)")
        for p in (proc, ingest):
            p.terminate()
            p.wait(10)
        lab.close()


if __name__ == "__main__":
    main()
