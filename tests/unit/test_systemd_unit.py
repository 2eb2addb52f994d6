"""The node's systemd unit: keys in the sections systemd reads them from, no wait on the network,
and a stop bound that covers the node's own shutdown bound."""
import configparser
from pathlib import Path

import pytest

from node.config import NodeConfig

pytestmark = pytest.mark.unit

UNIT = Path(__file__).resolve().parents[2] / "node" / "systemd" / "alpr-node.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNIT)
    return parser


def test_start_limits_are_in_the_unit_section():
    # systemd 252 ignores StartLimitIntervalSec under [Service] ("Unknown key ... ignoring")
    u = unit()
    assert {"StartLimitIntervalSec", "StartLimitBurst"} <= set(u["Unit"])
    assert not {"StartLimitIntervalSec", "StartLimitBurst"} & set(u["Service"])


def test_capture_does_not_wait_for_the_network():
    u = unit()
    ordering = " ".join(u["Unit"].get(key, "") for key in ("After", "Wants", "Requires"))
    assert "network-online.target" not in ordering


def test_systemd_waits_longer_than_the_node_may_take_to_stop():
    stop_s = float(unit()["Service"]["TimeoutStopSec"])
    node_max = NodeConfig.model_fields["shutdown_timeout_s"].metadata
    bound = next(m.le for m in node_max if getattr(m, "le", None) is not None)
    assert bound < stop_s


def test_the_node_starts_in_its_writable_data_directory():
    # lgpio (rpi-lgpio) makes its notification pipe in the working directory when RPi.GPIO is
    # imported; with ProtectSystem=strict the default working directory, /, is read-only.
    s = unit()["Service"]
    assert s["ProtectSystem"] == "strict"
    assert s["WorkingDirectory"] == "/var/lib/alpr-node"
    assert s["WorkingDirectory"] in s["ReadWritePaths"].split()
