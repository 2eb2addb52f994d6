"""`alpr-node outbox`: inspect the outbox, or salvage a corrupt one."""
from __future__ import annotations

import argparse
import json
import logging
import os
import stat
from dataclasses import asdict
from pathlib import Path

from node.errors import BadConfig

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("outbox", help="outbox status, or salvage a corrupt one (run as the node's user)")
    p.add_argument("action", choices=("status", "salvage"))
    p.add_argument("--data-dir", type=Path, required=True, help="the node's data directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from transport import outbox

    path = args.data_dir / "outbox.db"
    if not path.is_file():
        # A mistyped --data-dir must not create an empty outbox and report it as the node's.
        raise BadConfig(f"{path}: no outbox here (is --data-dir the node's data directory?)")
    # Files a run as root left root's (an older release allowed `alpr-node run` as root) go to
    # the owner first, safely (no links, single-linked regular files): working as the owner,
    # this command could not open them, and the node could not either.
    _give_back(args.data_dir)
    _become_owner(args.data_dir)
    try:
        if args.action == "salvage":
            aside, count = outbox.salvage(path)
            moved = f"moved the corrupt outbox to {aside}" if aside else "no outbox to move aside"
            print(f"{moved}; recovered {count} messages into {path} (earlier set-aside files it read, if any, "
                  f"are named in the log above)")
            return 0
        box = outbox.Outbox(path)
        try:
            print(json.dumps(asdict(box.stats()), indent=2))
        finally:
            box.close()
        return 0
    finally:
        _give_back(args.data_dir)


def _become_owner(data_dir: Path) -> None:
    """Run as root (the docs say sudo), work as the data directory's owner instead.

    That user can write in the folder: as root, a file this command creates there by name (the
    salvage's temp outbox) could be a link that user planted, and root would write through it
    anywhere on the system. As the owner, every file made is the owner's, as the node needs."""
    if os.geteuid() != 0:
        return
    st = data_dir.stat()
    if st.st_uid == 0:
        return
    os.setgroups([])
    os.setgid(st.st_gid)
    os.setuid(st.st_uid)
    log.info("outbox: working as the data directory's owner (uid %d), not root", st.st_uid)


def _give_back(data_dir: Path) -> None:
    """Run as root (sudo), files this command created would belong to root, and the node's
    service user could then open the outbox but never write to it: every read would be lost.
    So whatever it made in the data directory goes back to the directory's owner."""
    if os.geteuid() != 0:
        return
    owner = data_dir.stat()
    for item in data_dir.iterdir():
        if not item.name.startswith(("outbox.db", "sequence.reserved")):
            continue
        # The service user owns this folder and could plant a link here to a file of root's
        # (/etc/shadow): never follow one, and never chown a file with a second name.
        st = item.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            log.warning("outbox: not handing %s back to the data dir's owner: not a plain file with one link", item)
            continue
        if st.st_uid != owner.st_uid:
            os.chown(item, owner.st_uid, owner.st_gid, follow_symlinks=False)
