"""`alpr-node outbox`: inspect the outbox, or salvage a corrupt one."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("outbox", help="outbox status, or salvage a corrupt outbox")
    p.add_argument("action", choices=("status", "salvage"))
    p.add_argument("--data-dir", type=Path, required=True, help="the node's data directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from transport import outbox

    path = args.data_dir / "outbox.db"
    if args.action == "salvage":
        aside, count = outbox.salvage(path)
        print(f"moved the corrupt outbox to {aside}; recovered {count} messages into {path}")
        return 0
    box = outbox.Outbox(path)
    try:
        print(json.dumps(asdict(box.stats()), indent=2))
    finally:
        box.close()
    return 0
