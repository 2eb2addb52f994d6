"""`alpr-hq push` sends only what nodes act on: a config push would look sent and change nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from hq import cli
from hq.push import push

pytestmark = pytest.mark.unit


def test_push_refuses_the_reserved_config_topic(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config is reserved"):
        push(None, tmp_path / "registry.db", "config", b"x")  # type: ignore[arg-type]


def test_the_command_line_offers_hot_lists_only() -> None:
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["push", "config", "node.toml"])
    assert parser.parse_args(["push", "hotlist", "list.msg"]).leaf == "hotlist"
