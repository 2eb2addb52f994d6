"""The technician's commands in README.md and docs/ are runnable: they parse, and their paths agree."""
from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from provisioning import broker, cli, nodeside

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
# what a technician types in place of the <...> the docs leave to them
PLACEHOLDER = "0123456789abcdef"


def _block(text: str, after: str) -> str:
    """The first ```sh block after the heading or line `after`."""
    rest = text[text.index(after):]
    return re.search(r"```sh\n(.*?)```", rest, re.DOTALL).group(1)


def _commands(block: str) -> list[list[str]]:
    """Shell lines (continuations joined, comments and `sudo [-u USER]` dropped, `&&` split) as argv lists."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split("&&"):
            argv = shlex.split(re.sub(r"<[^>]*>", PLACEHOLDER, part))
            while argv and argv[0] == "sudo":
                argv = argv[3:] if argv[1:2] == ["-u"] else argv[1:]
            out.append(argv)
    return out


def _parsers() -> dict:
    from hq import cli as hq_cli
    from node import cli as node_cli
    return {"alpr-provision": cli.build_parser(), "alpr-hq": hq_cli.build_parser(), "alpr-node": node_cli.build_parser()}


def _parse_all(commands: list[list[str]]) -> list[tuple[str, object]]:
    parsers = _parsers()
    parsed = []
    for argv in commands:
        name = Path(argv[0]).name
        if name in parsers:
            try:
                parsed.append((name, parsers[name].parse_args(argv[1:])))
            except SystemExit:
                pytest.fail(f"documented command does not parse: {shlex.join(argv)}")
    return parsed


def test_readme_technicians_path_parses_and_ends_where_alpr_node_reads() -> None:
    from node import config as node_config

    text = (ROOT / "README.md").read_text()
    parsed = _parse_all(_commands(_block(text, "## A technician's path")))
    steps = [(name, getattr(a, "command", None), getattr(a, "node_command", None) or getattr(a, "ca_command", None))
             for name, a in parsed]
    assert steps == [("alpr-provision", "ca", "init"), ("alpr-provision", "node", "keygen"),
                     ("alpr-provision", "node", "enroll"), ("alpr-provision", "node", "bundle"),
                     ("alpr-provision", "node", "install"), ("alpr-node", "check-config", None),
                     ("alpr-node", "aim", None)]
    install = parsed[4][1]
    # install writes where alpr-node (no --config) and the systemd unit read; the site's sections come along
    assert install.config == nodeside.DEFAULT_CONFIG == node_config.DEFAULT_PATH
    assert install.extra == Path("site.toml")
    for _, args in parsed[5:]:
        assert args.config == node_config.DEFAULT_PATH
    # what keygen writes with --out is what enroll reads; bundle --out is what install reads
    assert parsed[2][1].request == parsed[1][1].out and parsed[4][1].bundle == parsed[3][1].out
    unit = (ROOT / "node/systemd/alpr-node.service").read_text()
    assert unit.count(f"--config {node_config.DEFAULT_PATH}") == 2


def test_provisioning_doc_site_toml_is_what_install_extra_accepts() -> None:
    """The site.toml the docs show passes `install --extra` (see the flow test for check-config)."""
    text = (ROOT / "docs/provisioning.md").read_text()
    site = re.search(r"```toml\n(# site.toml.*?)```", text, re.DOTALL).group(1)
    parsed = tomllib.loads(site)
    assert parsed["pipeline"]["mode"] == "triggered" and parsed["triggers"]
    broker_local, extra = nodeside.local_part(site, "--extra", strict=True)
    assert broker_local == {} and "[[triggers]]" in extra
    assert "/etc/alpr-node/node.toml" in text and "DATA_DIR/node.toml)" not in text


def test_operations_hq_block_uses_one_hq_dir_and_a_runnable_reads_tail() -> None:
    text = (ROOT / "docs/operations.md").read_text()
    commands = _commands(_block(text, "## At HQ"))
    parsed = _parse_all(commands)
    names = [(n, getattr(a, "command", None)) for n, a in parsed]
    assert ("alpr-provision", "ca") in names and ("alpr-hq", "reads") in names
    init = next(a for n, a in parsed if n == "alpr-provision")
    hq_dir = init.dir
    assert str(hq_dir) == "/var/lib/alpr-hq"  # ca init's documented default, as in docs/provisioning.md
    for name, args in parsed:
        if name == "alpr-hq":
            assert args.config == hq_dir / "hq.toml", args
    tail = next(a for n, a in parsed if n == "alpr-hq" and a.command == "reads")
    assert tail.purpose and tail.user
    # the broker fragment linked into conf.d is the one ca init writes
    links = [argv for argv in commands if argv[0] == "ln" and argv[-1].startswith("/etc/mosquitto/")]
    assert links and links[0][-2] == str(hq_dir / "broker" / broker.INCLUDE_NAME)
    assert "/etc/alpr-hq" not in text
    # README lists reads tail with its required --purpose wherever it shows the full command
    readme = (ROOT / "README.md").read_text()
    for line in readme.splitlines():
        if "reads tail " in line and "`alpr-hq reads tail`" not in line:
            assert "--purpose" in line, line
