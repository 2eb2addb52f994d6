"""`alpr-node check-config`: validate the node TOML and the files it names, then exit."""
from __future__ import annotations

import argparse
from pathlib import Path

from node import config as node_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate the node configuration and key files")
    p.add_argument("--config", "-c", type=Path, default=node_config.DEFAULT_PATH)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.identity import Identity
    from transport.keys import check_private_mode

    config = node_config.load(args.config)
    Identity.load(config)
    for label, path in (("broker.ca", config.path(config.broker.ca, "tls/ca.pem")),
                        ("broker.cert", config.path(config.broker.cert, "tls/node.pem")),
                        ("broker.key", config.path(config.broker.key, "tls/node.key"))):
        if not path.is_file():
            raise node_config.BadConfig(f"{args.config}: {label}: file {path} not found")
    try:
        # `run` refuses a TLS key others can read (transport.mqtt): say so here, before the unit
        # restarts it twenty times with the same error.
        check_private_mode(config.path(config.broker.key, "tls/node.key"))
    except ValueError as exc:
        raise node_config.BadConfig(f"{args.config}: broker.key: {exc}") from exc
    if config.source.kind == "clip" and not config.source.clip.exists():
        raise node_config.BadConfig(f"{args.config}: source.clip: {config.source.clip} not found")
    print(f"{args.config}: ok (node {config.node.id}, site {config.node.site}, source {config.source.kind})")
    return 0
