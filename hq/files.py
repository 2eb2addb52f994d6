"""Files HQ writes outside its store (plate crops, evidence packages): private to the user
that runs HQ, since they show plates, places and times. Folders 0700, files 0600."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from pathlib import Path

log = logging.getLogger(__name__)


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents with mode 0700; returns `path`.

    A folder that exists already keeps its mode (it may be shared on purpose, e.g. a removable
    medium's mount point), with a warning when other users can open it: the files in it are
    0600, but their names can show plates.
    """
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)  # mkdir's mode passes through the umask, which may leave less than rwx
    if not missing:
        if not path.is_dir():
            raise NotADirectoryError(f"{path}: exists and is not a folder")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s: other users may open this folder (mode %04o); files written there are private (0600), "
                        "but their names can show plates: use a folder with mode 0700", path, mode)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 (an existing file is replaced and made 0600 too)."""
    # O_NOFOLLOW: a link planted where HQ writes must not redirect plate data elsewhere.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # O_CREAT's mode applies only to a new file
        f.write(data)


# The hot list `alpr-hq push` last sent, relative to HQ's data_dir (0600): ingest sends it again
# to a node whose heartbeat reports an older one (hq.ingest.Ingest._converge_hotlist).
PUSHED_HOTLIST = "hotlist/pushed.msg"

# Messages ingest sets aside (DATA_DIR/rejected/): `<node>-<seq>-<sha256 prefix of the bytes
# received>` with .msg, .signed and .json, and .tmp while atomic writes are in progress. Ingest
# finds a message's files again by this name once it is stored; retention removes old ones.
SET_ASIDE_SUFFIXES = (".signed", ".msg", ".json")  # the plaintext first when removing, the record last
SET_ASIDE_FILE = re.compile(r"^(?P<stem>[A-Za-z0-9_-]{1,64}-[0-9]+-[0-9a-f]{16})\.(msg|signed|json)(\.tmp)?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def set_aside_stem(node_id: str, seq: int, raw: bytes) -> str:
    """The file name, less suffix, of a message set aside: node (unsafe characters replaced,
    at most 64), seq and the start of the SHA-256 of the exact bytes received, so a resend of
    those bytes maps to the same files."""
    return f"{_UNSAFE.sub('_', node_id)[:64]}-{seq}-{hashlib.sha256(raw).hexdigest()[:16]}"
