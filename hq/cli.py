"""`alpr-hq`: HQ's command line."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hq import config as hq_config
from hq.errors import BadConfig, HQError

if TYPE_CHECKING:
    from hq.store import NodeState

log = logging.getLogger("alpr-hq")
POLL_S = 0.3  # `reads tail`: how often it looks for new reads (and re-checks the access)


def _ingest(args: argparse.Namespace) -> int:
    from hq.ingest import Ingest
    from hq.keyring import load_hpke_keys, load_sign_key
    from transport.key_usage import FILE_PREFIX, KeyUsage

    cfg = hq_config.load(args.config)
    keys_dir = cfg.hq.data_dir / "keys"
    b = cfg.broker
    client_id = args.worker or b.client_id
    settings = _broker_settings(cfg, client_id)
    ingest = Ingest(settings, store_path=cfg.store.url or cfg.path(cfg.store.path, "hq.db"),
                    registry_path=cfg.hq.data_dir / "registry.db", decryption_keys=load_hpke_keys(keys_dir),
                    sign_key=load_sign_key(keys_dir), max_message_bytes=cfg.ingest.max_message_kb * 1024,
                    shared=cfg.ingest.shared, revocation_grace_s=cfg.ingest.revocation_grace_h * 3600,
                    rejects_dir=cfg.hq.data_dir / "rejected", share_group=cfg.ingest.share_group,
                    max_future_skew_s=cfg.ingest.max_future_skew_h * 3600,
                    max_set_aside_bytes=cfg.ingest.max_set_aside_mb * 1024 * 1024,
                    session_expiry_s=cfg.ingest.session_expiry_s,
                    key_usage=KeyUsage(keys_dir / f"{FILE_PREFIX}{client_id}.json"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ingest.start()
    log.info("ingest worker %s started", client_id)
    last = None
    while not stop.wait(5.0):
        s = ingest.stats
        now = (s.received, s.stored, s.duplicates, s.purged, dict(s.rejected))
        if now != last:
            log.info("ingest: received %d, stored %d, duplicates %d, purged before %d, rejected %s", *now)
            last = now
    ingest.stop()
    return 0


def _reads_tail(args: argparse.Namespace) -> int:
    from hq.records_cli import Watch

    # Watching reads is an access like any other: who, why, recorded in the access log. It
    # can run for days, so the access is checked again before every poll: once the session
    # ends or expires, the user is disabled or their training lapses, it stops (logged).
    watch = Watch(args, "view", {"tail": True, "all": bool(args.all)})
    store = watch.store
    last = 0 if args.all else store.last_id()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    printed = 0
    try:
        while True:
            watch.check()
            for row in store.reads_after(last):
                last = row.id
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.capture_ns / 1e9))
                print(f"{when}Z  {row.plate:<10} {row.confidence:5.1%}  node={row.node_id} seq={row.seq} "
                      f"site={row.site_id} cam={row.camera_id} dir={row.direction} kind={row.kind}", flush=True)
                printed += 1
                if args.count and printed >= args.count:
                    return 0
            if stop.wait(POLL_S):
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        watch.close()


def _nodes(args: argparse.Namespace) -> int:
    from hq.records_cli import Context
    from transport.registry import Registry

    ctx = Context(args)  # the store of store.url (PostgreSQL) or the SQLite file, like every other command
    try:
        # Counts and gaps hold no plate, but they are read from the store: a login and a row in
        # the access log, like every other access. The purpose is the command's own.
        ctx.access.authorize(ctx.actor(), "nodes", purpose="node health: heartbeats, read counts and sequence gaps",
                             query={"node": args.node, "gaps": bool(args.gaps)})
        store = ctx.store
        registry = Registry(ctx.cfg.hq.data_dir / "registry.db")
        states = store.node_states()
        now = time.time_ns()
        pushed = _pushed_hotlist_version(ctx.cfg.hq.data_dir)
        try:
            for node in registry.nodes():
                if args.node and node.node_id != args.node:
                    continue
                # above the node's purge watermark: reads retention removed are not missing
                last, lost, missing = store.sequence_gaps(node.node_id, max_runs=50)
                line = (f"{node.node_id:<16} site={node.site_id:<14} {node.status:<8} reads={store.count(node.node_id):<7} "
                        f"last_seq={last:<7} gaps={lost}")
                print(line)
                if node.status != "revoked":
                    print("    " + describe_state(states.get(node.node_id), now, pushed))
                if args.gaps:
                    for a, b in missing:
                        print(f"    missing seq {a}" + (f"..{b}" if b > a else ""))
        finally:
            registry.close()
    finally:
        ctx.close()
    return 0


# A heartbeat older than this is called stale (the node's default interval is 10 s).
STALE_AFTER_S = 120


def describe_state(state: NodeState | None, now_ns: int, pushed_hotlist: int | None = None) -> str:
    """One line on a node's latest heartbeat and status, as ingest recorded them (with
    `pushed_hotlist`, the version `alpr-hq push` last sent, a node behind it is flagged)."""
    if state is None or state.health_ns is None:
        status = f"; status {state.status}" if state is not None and state.status else ""
        return f"no heartbeat received yet (ingest records them from this version on){status}"
    age = max(0.0, (now_ns - state.health_ns) / 1e9)
    parts = [f"heartbeat {_age(age)} ago" + (" STALE" if age > STALE_AFTER_S else "")]
    if state.status:
        parts.append(f"status {state.status} ({_age(max(0.0, (now_ns - (state.status_ns or now_ns)) / 1e9))} ago)")
    try:
        health = json.loads(state.health or "{}")
    except ValueError:
        health = {}
    pipeline = health.get("pipeline") if isinstance(health.get("pipeline"), dict) else {}
    camera = pipeline.get("camera") if isinstance(pipeline.get("camera"), dict) else {}
    outbox = health.get("outbox") if isinstance(health.get("outbox"), dict) else {}
    if camera.get("state") is not None:
        parts.append(f"camera {camera['state']}")
    if pipeline.get("fps") is not None:
        parts.append(f"fps {pipeline['fps']}")
    if outbox:
        parts.append(f"outbox {outbox.get('depth', '?')} waiting, oldest {outbox.get('oldest_age_s', '?')} s")
        if isinstance(outbox.get("ignored_by_hq"), int) and outbox["ignored_by_hq"] > 0:
            # answered "later" or left unacknowledged: set aside or refused here (ingest's log says why)
            parts.append(f"{outbox['ignored_by_hq']} held back by HQ (set aside or refused: see ingest's log)")
    hotlist = health.get("hotlist") if isinstance(health.get("hotlist"), dict) else {}
    if type(hotlist.get("version")) is int:
        behind = pushed_hotlist is not None and hotlist["version"] < pushed_hotlist
        parts.append(f"hot list v{hotlist['version']}" + (f" BEHIND (v{pushed_hotlist} pushed)" if behind else ""))
    if isinstance(health.get("disk_free_bytes"), int):
        parts.append(f"disk free {health['disk_free_bytes'] // 2**20} MiB")
    if isinstance(pipeline.get("inputs_active_long"), dict) and pipeline["inputs_active_long"]:
        parts.append("inputs active long: " + ", ".join(sorted(map(str, pipeline["inputs_active_long"]))))
    return "; ".join(parts)


def _pushed_hotlist_version(data_dir: Path) -> int | None:
    """The list_version of the hot list `alpr-hq push` last sent (hq.files.PUSHED_HOTLIST), or None.

    Only shown, not trusted: ingest verifies the file before it sends it anywhere.
    """
    from hq.files import PUSHED_HOTLIST
    from transport import cbor
    try:
        body_bytes, _ = cbor.loads((data_dir / PUSHED_HOTLIST).read_bytes())
        version = cbor.loads(body_bytes).get("list_version")
    except (OSError, ValueError, TypeError, AttributeError):  # cbor.EncodingError is a ValueError
        return None
    return version if type(version) is int else None


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _broker_settings(cfg, client_id: str):
    from transport.mqtt import BrokerSettings

    b = cfg.broker
    return BrokerSettings(host=b.host, port=b.port, ca_file=cfg.path(b.ca, "tls/ca.pem"),
                          cert_file=cfg.path(b.cert, f"tls/{client_id}.pem"),
                          key_file=cfg.path(b.key, f"tls/{client_id}.key"), client_id=client_id,
                          backoff_max_s=b.backoff_max_s)


def _push(args: argparse.Namespace) -> int:
    from hq.files import PUSHED_HOTLIST, private_dir
    from hq.push import push
    from transport import atomic

    cfg = hq_config.load(args.config)
    message = args.file.read_bytes()
    settings = _broker_settings(cfg, args.worker)
    if not settings.cert_file.exists():
        raise BadConfig(f"{settings.cert_file}: no certificate for HQ client {args.worker}; issue one with "
                        f"`alpr-provision ca issue-hq --worker {args.worker} --actor NAME` (a client name "
                        "that no running ingest worker uses: the broker allows one connection per name)")
    nodes = push(settings, cfg.hq.data_dir / "registry.db", args.leaf, message)
    # Kept for ingest, which sends it again to a node whose heartbeat shows it missed it (a
    # broker that lost its retained copy before its autosave, a node offline meanwhile).
    kept = cfg.hq.data_dir / PUSHED_HOTLIST
    private_dir(kept.parent)
    atomic.write_bytes(kept, message, 0o600)
    print(f"pushed {args.file} ({len(message)} bytes) as retained {args.leaf} to {len(nodes)} nodes; "
          f"kept as {kept}: ingest sends it again to a node that reports an older hot list")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpr-hq", description="ALPR HQ: ingest and records")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--config", "-c", type=Path, default=hq_config.DEFAULT_PATH, help="hq.toml")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("ingest", help="run an ingest worker (several may run: they share the load)")
    p.add_argument("--worker", help="worker name = certificate CN (default broker.client_id)")
    p.set_defaults(func=_ingest)
    p = sub.add_parser("push", help="send a signed hot list to every active node (retained)")
    p.add_argument("leaf", choices=("hotlist",))
    p.add_argument("file", type=Path, help="the signed message (e.g. from `alpr-hq hotlist publish --out`)")
    p.add_argument("--worker", default="hq-push", help="HQ client certificate to use (default hq-push)")
    p.set_defaults(func=_push)
    p = sub.add_parser("nodes", help="enrolled nodes: latest heartbeat and status, read counts and sequence gaps")
    p.add_argument("--node", help="only this node")
    p.add_argument("--gaps", action="store_true", help="list the missing sequence numbers "
                   "(messages not yet delivered, or dropped under the node's outbox quota; reads retention purged "
                   "are not counted)")
    from hq.records_cli import add_who_arguments
    add_who_arguments(p, why=False)
    p.set_defaults(func=_nodes)
    reads = sub.add_parser("reads", help="verified reads").add_subparsers(dest="reads_command", required=True)
    t = reads.add_parser("tail", help="print verified reads as they arrive")
    t.add_argument("--all", action="store_true", help="start from the first stored read")
    t.add_argument("--count", type=int, default=0, help="exit after printing this many")
    t.set_defaults(func=_reads_tail)
    add_who_arguments(t)
    try:  # the records system's commands (search, audit, evidence, ...)
        records_cli = importlib.import_module("hq.records_cli")
    except ModuleNotFoundError as exc:
        if exc.name != "hq.records_cli":
            raise
    else:
        records_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except (HQError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"alpr-hq: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
