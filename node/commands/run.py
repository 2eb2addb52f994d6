"""`alpr-node run`: the node service (systemd runs this)."""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import pwd
import signal
from pathlib import Path

from node import config as node_config
from node.errors import BadConfig

log = logging.getLogger(__name__)
PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the node until SIGTERM/SIGINT")
    p.add_argument("--config", "-c", type=Path, default=node_config.DEFAULT_PATH,
                   help=f"node TOML (default {node_config.DEFAULT_PATH})")
    p.add_argument("--exit-when-done", action="store_true",
                   help="stop when the source is done (clip ended, synthetic total reached) and the outbox is empty")
    p.set_defaults(func=run)


def _refuse_root_on_anothers_data(data_dir: Path) -> None:
    """Run as root on the service user's data directory, the node would leave root-owned files
    there (outbox.db, sequence.reserved) that the service could then not open: refuse, and say
    how to run it instead."""
    if os.geteuid() != 0:
        return
    try:
        owner = data_dir.stat().st_uid
    except FileNotFoundError:
        return
    if owner != 0:
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        raise BadConfig(f"{data_dir} belongs to {name}, and this is root: files the node made would be root's and "
                        f"the service could not open them. Run it as that user: sudo -u {name} alpr-node run ...")


def not_dumpable() -> bool:
    """Mark this process not dumpable (prctl PR_SET_DUMPABLE 0): no core file, and no other
    process of the same user can ptrace it or read its memory through /proc. The node holds its
    signing and TLS keys, the hot list's key and plates in clear in memory. False (logged) where
    prctl is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
        return True
    except (OSError, AttributeError) as exc:
        log.warning("could not mark the process not dumpable (%s): a core dump would hold keys and plates", exc)
        return False


def run(args: argparse.Namespace) -> int:
    from node.runtime import Runtime

    not_dumpable()
    config = node_config.load(args.config)
    _refuse_root_on_anothers_data(config.node.data_dir)
    runtime = Runtime(config)

    def _stop(signum, frame) -> None:  # SIGTERM and SIGINT only set the stop event
        log.info("signal %d: stopping", signum)
        runtime.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    runtime.start()
    if args.exit_when_done:
        import threading

        from transport.errors import OutboxError

        def _watch() -> None:
            while not runtime.stop_event.wait(0.2):
                try:
                    drained = runtime.source.done.is_set() and runtime.outbox.stats().depth == 0
                except OutboxError:
                    return  # closed under us by a shutdown already in progress
                if drained:
                    log.info("source done and outbox drained: stopping")
                    runtime.stop_event.set()
        threading.Thread(target=_watch, name="exit-when-done", daemon=True).start()
    try:
        runtime.run_until_stopped()
    finally:
        runtime.stop()
    return 0
