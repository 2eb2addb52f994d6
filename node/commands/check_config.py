"""`alpr-node check-config`: validate the node TOML and the files it names, then exit."""
from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import Field

from node import config as node_config

# A site.toml (`alpr-provision node install --extra`) has no [node]: the bundle writes it. With
# --toml-only such a file is checked with this stand-in, which only [node]'s own checks
# (id, data_dir) and the cross-checks that read node.lane see.
PLACEHOLDER_NODE = {"id": "site-toml-check", "site": "site-toml-check"}


class _SiteConfig(node_config.NodeConfig):
    """NodeConfig whose [node] may be missing (a site.toml): PLACEHOLDER_NODE stands in for it."""

    node: node_config.NodeSection = Field(default_factory=lambda: node_config.NodeSection(**PLACEHOLDER_NODE))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate the node configuration and key files")
    p.add_argument("--config", "-c", type=Path, default=node_config.DEFAULT_PATH)
    p.add_argument("--toml-only", action="store_true",
                   help="check the settings only, not the keys, certificates and libraries they need: for a "
                        "site.toml or the example, before the node is provisioned")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.identity import Identity
    from transport.keys import check_private_mode

    if args.toml_only:
        config = node_config.load(args.config, base=_SiteConfig)
        if "node" in config.model_fields_set:
            print(f"{args.config}: settings ok (node {config.node.id}, source {config.source.kind}); keys, "
                  "certificates and libraries not checked (--toml-only)")
        else:
            print(f"{args.config}: settings ok (source {config.source.kind}); no [node] section, so checked as a "
                  "site.toml with a placeholder [node] (`alpr-provision node install --extra` takes [node] from "
                  "the bundle); keys, certificates and libraries not checked (--toml-only)")
        return 0
    try:
        config = node_config.load(args.config)
    except node_config.BadConfig as exc:
        if f"{args.config}: node: Field required" in str(exc):
            raise node_config.BadConfig(f"{exc}\n{args.config}: no [node] section: a site.toml? Check it with "
                                        "--toml-only; `alpr-provision node install --extra` adds [node] from "
                                        "the bundle") from exc
        raise
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
    if config.source.kind == "camera":
        _check_hardware_libraries(args.config, config)
    print(f"{args.config}: ok (node {config.node.id}, site {config.node.site}, source {config.source.kind})")
    return 0


def _check_hardware_libraries(path: Path, config: node_config.NodeConfig) -> None:
    """The camera and GPIO libraries a live node needs, importable from this venv: a venv made
    without --system-site-packages cannot see apt's picamera2, and the service would start,
    fail and restart until systemd gives up. Nothing is opened: the camera and pins may be the
    running service's."""
    from hardware.errors import GpioError
    from hardware.gpio import load_gpio_module
    from hardware.picamera2_backend import APT_HINT

    try:
        import picamera2  # noqa: F401
    except ImportError as exc:
        raise node_config.BadConfig(f"{path}: source.kind = 'camera': {APT_HINT}") from exc
    if config.triggers or config.outputs.ir_pin is not None or config.outputs.led_pin is not None:
        try:
            load_gpio_module()
        except GpioError as exc:
            raise node_config.BadConfig(f"{path}: triggers/outputs: {exc}") from exc
