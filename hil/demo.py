"""The demo: a node reads a bundled clip, publishes through a local broker, HQ verifies,
decrypts and stores each read, and the reads are printed as HQ stores them.

    scripts/demo [--fast] [--keep DIR]

Everything is real: mosquitto with mutual TLS and per-node ACLs, `alpr-node run` on the clip
with its recorded triggers, `alpr-hq ingest`, the signed and encrypted envelopes.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hardware.clip import Clip
from hil.lab import Lab
from hq.store import ReadStore

CLIPS = Path(__file__).resolve().parent / "clips"
DEFAULT_CLIP = "day-3-vehicles"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=DEFAULT_CLIP, help=f"a clip in hil/clips or a path (default {DEFAULT_CLIP})")
    parser.add_argument("--fast", action="store_true", help="replay as fast as possible instead of real time")
    parser.add_argument("--keep", type=Path, help="build the installation in DIR and keep it")
    args = parser.parse_args(argv)
    clip_path = Path(args.clip) if Path(args.clip).exists() else CLIPS / args.clip
    clip = Clip.load(clip_path)
    root = args.keep or Path(tempfile.mkdtemp(prefix="alpr-demo-"))
    print(f"demo: installation in {root}")
    lab = Lab(root)
    lab.broker.start()
    print(f"demo: mosquitto on 127.0.0.1:{lab.broker.port} (mutual TLS, per-node ACLs)")
    node = lab.add_node("demo-node", site="demo-site", body=(
        f'[source]\nkind = "clip"\nclip = "{clip_path}"\nspeed = {0 if args.fast else 1}\n\n'
        '[pipeline]\nmode = "triggered"\n'))
    ingest = lab.start_ingest()
    print(f"demo: alpr-hq ingest running; alpr-node run on clip {clip_path.name} "
          f"({len(clip)} frames, {len(clip.triggers)} trigger edges, {len(clip.vehicles)} vehicles)")
    proc = lab.start_node(node, "--exit-when-done")
    store_path = lab.hq_dir / "hq.db"
    printed, last_id = 0, 0
    deadline = time.monotonic() + clip.duration_ns / 1e9 + 120
    try:
        while time.monotonic() < deadline:
            done = proc.poll() is not None
            if store_path.exists():
                store = ReadStore(store_path)
                for row in store.reads_after(last_id):
                    last_id = row.id
                    printed += 1
                    # In --fast replay the clip's clock runs ahead of the wall clock: no latency then.
                    latency = "" if args.fast else f", {(row.stored_ns - row.capture_ns) / 1e6:.0f} ms after capture"
                    print(f"HQ stored  {row.plate:<10} conf {row.confidence:5.1%}  node {row.node_id} seq {row.seq}  "
                          f"dir {row.direction}  verified+decrypted{latency}", flush=True)
                store.close()
            if done:
                break
            time.sleep(0.3)
    finally:
        for p in (proc, ingest):
            if p.poll() is None:
                p.terminate()
                p.wait(15)
        lab.close()
    truth = sorted(v.plate for v in clip.vehicles)
    print(f"demo: {printed} reads stored at HQ; the clip's ground truth: {', '.join(truth)}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
        print("demo: its logs, keys, broker and HQ store were removed; run it with --keep DIR to keep them")
    else:
        print(f"demo: node log {root / 'demo-node.log'}, HQ log {root / 'hq-ingest-1.log'}, all kept in {root}")
    return 0 if proc.returncode == 0 and printed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
