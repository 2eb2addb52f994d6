"""Root's trust decisions at install and rotate-key come from files only root writes (round 20).

`node install` runs as root and used to take its trust anchor from the service user's data
dir: `hq/hq-sign.pub` read by name (a symlink followed, a FIFO blocking for ever), and the
keygen pin, the service user and the anti-rollback `installed.json` from files `alpr` can
rewrite. A compromised `alpr` account planted its own HQ key, and the next install without
--hq-key-id (a certificate renewal) accepted its bundle: its broker and CA went into the
root-owned node.toml and the files to any uid it named. Now root keeps its own record beside
node.toml (provisioning/anchor.py) and reads the data dir for none of those decisions.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import signal
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import NameOID

from provisioning import anchor, cli, enroll, local, nodeside, safefs
from provisioning import bundle as bundle_format
from provisioning.errors import BadBundle, StateError
from tests.unit.test_provisioning_root_writes import _never_write_etc, hq  # noqa: F401  (fixtures)
from transport.keys import load_private_key, raw_public

pytestmark = pytest.mark.unit
ME = getpass.getuser()
ROOT = Path(__file__).resolve().parents[2]
LOCAL = '[pipeline]\nmode = "continuous"\n'
EVIL_HOST = "broker.attacker.example"


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail, rather than hang the suite, if an install blocks on a FIFO."""
    def expired(signum: int, frame: object) -> None:
        raise TimeoutError("blocked: opened a FIFO the service user planted")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _etc(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "alpr-node" / "node.toml"


def _set_up(hq: Path, tmp_path: Path, *, pin: bool = True) -> tuple[Path, Path]:
    """keygen (root's record beside the /etc copy) and enrol: (data dir, config)."""
    data, config = tmp_path / "data", _etc(tmp_path)
    made = nodeside.keygen(data, "gate-12", actor="bob", hq_key_id=local.hq_key_id(hq) if pin else None,
                           config_path=config)
    enroll.enroll(hq, made.request, site="north", actor="alice")
    return data.resolve(), config


def _attacker_bundle(data: Path, out: Path) -> tuple[Path, ed25519.Ed25519PrivateKey]:
    """What a compromised service account can make: a bundle for this node's own keys, signed by its key."""
    evil = ed25519.Ed25519PrivateKey.generate()
    csr = x509.load_pem_x509_csr((data / nodeside.TLS_CSR).read_bytes())
    sign_pub = raw_public(load_private_key(data / nodeside.SIGN_KEY, ed25519.Ed25519PrivateKey).public_key())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject: str, key: object, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name("evil-ca")).public_key(key)
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
             .not_valid_after(now + dt.timedelta(days=9)))
        if ca:
            b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        return b.sign(ca_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    out.write_bytes(bundle_format.build(
        node="gate-12", site="s", camera="c", lane="", broker_host=EVIL_HOST, broker_port=8883,
        node_sign_pub=sign_pub, cert=cert("gate-12", csr.public_key(), False).public_bytes(pem),
        ca=cert("evil-ca", ca_key.public_key(), True).public_bytes(pem),
        hq_hpke_pub=raw_public(x25519.X25519PrivateKey.generate().public_key()), issued_by="attacker",
        sign_key=evil, valid_s=3600))
    return out, evil


def _pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _host(config: Path) -> str:
    return tomllib.loads(config.read_text())["broker"]["host"]


# -- the reproducer: a planted HQ key is not trusted ----------------------------------------------
def test_a_planted_hq_key_symlink_and_edited_node_json_are_not_trusted(hq: Path, tmp_path: Path) -> None:
    data, config = _set_up(hq, tmp_path)
    bundle, evil = _attacker_bundle(data, tmp_path / "evil.alprbundle")
    outside = tmp_path / "attacker-hq.pub"
    outside.write_bytes(_pem(evil))
    (data / "hq").mkdir(exist_ok=True)
    (data / nodeside.HQ_SIGN).symlink_to(outside)
    meta = json.loads((data / nodeside.META).read_text())
    evil_pin = bundle_format.fingerprint(raw_public(evil.public_key()))
    (data / nodeside.META).write_text(json.dumps({**meta, "user": "nobody", "hq_pin": evil_pin}))
    for typed in (None, local.hq_key_id(hq)[:16]):
        with pytest.raises(BadBundle, match=f"not the pinned {local.hq_key_id(hq)[:16]}"):
            nodeside.install(bundle, data, actor="bob", config_path=config, hq_key_id=typed)
    assert not config.exists() and not (data / nodeside.TLS_CERT).exists()
    # HQ's own bundle installs; the symlink is replaced, never followed, and nothing goes to nobody
    done = nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob",
                            config_path=config, extra_toml=LOCAL)
    assert done.record == config.parent / "provisioning"
    assert outside.read_bytes() == _pem(evil) and not (data / nodeside.HQ_SIGN).is_symlink()
    assert (data / nodeside.TLS_CERT).stat().st_uid == os.geteuid() and _host(config) == "127.0.0.1"


def test_a_planted_regular_hq_key_file_after_an_install_is_not_trusted(hq: Path, tmp_path: Path) -> None:
    data, config = _set_up(hq, tmp_path)
    nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob", config_path=config,
                     extra_toml=LOCAL)
    bundle, evil = _attacker_bundle(data, tmp_path / "evil.alprbundle")
    # the service user can write its own files: a plain file of its own, not a link
    (data / nodeside.HQ_SIGN).unlink()
    (data / nodeside.HQ_SIGN).write_bytes(_pem(evil))
    before = config.read_text()
    with pytest.raises(BadBundle, match=r"signature|not the HQ key|signed by"):
        nodeside.install(bundle, data, actor="bob", config_path=config)
    assert config.read_text() == before and _host(config) != EVIL_HOST
    # root's copy names HQ's key, and the data dir's copy is rewritten from it at the next install
    record = anchor.load(config.parent / "provisioning")
    assert record is not None and bundle_format.fingerprint(record.hq_sign).startswith(local.hq_key_id(hq))
    nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob", config_path=config)
    assert (data / nodeside.HQ_SIGN).read_bytes() == (config.parent / "provisioning" / "hq-sign.pub").read_bytes()


def test_a_fifo_in_place_of_the_hq_key_does_not_hang_install(hq: Path, tmp_path: Path, no_hang: None) -> None:
    data, config = _set_up(hq, tmp_path)
    (data / "hq").mkdir(exist_ok=True)
    os.mkfifo(data / nodeside.HQ_SIGN)
    done = nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob",
                            config_path=config, extra_toml=LOCAL)
    assert done.node_id == "gate-12" and stat.S_ISREG((data / nodeside.HQ_SIGN).lstat().st_mode)
    # a FIFO for installed.json and the HQ key again: the next install neither reads nor hangs on them
    for rel in (nodeside.HQ_SIGN, nodeside.INSTALLED):
        (data / rel).unlink()
        os.mkfifo(data / rel)
    nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob", config_path=config)
    assert stat.S_ISREG((data / nodeside.INSTALLED).lstat().st_mode)


def test_the_rollback_version_is_roots_not_the_data_dirs(hq: Path, tmp_path: Path) -> None:
    data, config = _set_up(hq, tmp_path)
    old = enroll.make_bundle(hq, "gate-12", actor="alice", out=tmp_path / "old.alprbundle")
    nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob", config_path=config,
                     extra_toml=LOCAL)
    (data / nodeside.INSTALLED).unlink()  # the service user forgets the newer bundle
    with pytest.raises(BadBundle, match="older than the bundle installed already"):
        nodeside.install(old, data, actor="bob", config_path=config)


def test_whom_files_go_to_is_roots_record_not_the_data_dirs(hq: Path, tmp_path: Path) -> None:
    data, config = _set_up(hq, tmp_path)
    meta = json.loads((data / nodeside.META).read_text())
    (data / nodeside.META).write_text(json.dumps({**meta, "user": "nobody", "node_id": "gate-99"}))
    # as root this would have given every file to nobody; without root, been refused as a --user
    done = nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob",
                            config_path=config, extra_toml=LOCAL)
    assert done.node_id == "gate-12" and tomllib.loads(config.read_text())["node"]["id"] == "gate-12"
    for rel in (nodeside.TLS_CERT, nodeside.HQ_SIGN, nodeside.INSTALLED, "tls", "."):
        assert (data / rel).stat().st_uid == os.geteuid(), rel
    rotated = nodeside.rotate_key(data, actor="bob", config_path=config)
    assert rotated.node_id == "gate-12" and (data / nodeside.NEXT_SIGN_KEY).stat().st_uid == os.geteuid()


# -- rotate-key reads the data dir without following links or blocking ------------------------------
def test_rotate_key_never_reads_its_request_through_a_link_or_a_fifo(hq: Path, tmp_path: Path,
                                                                      no_hang: None) -> None:
    node = local.provision_node(hq, tmp_path / "n1", "gate-1", actor="bob", extra_toml=LOCAL)
    first = nodeside.rotate_key(node.data_dir, actor="bob")
    request_path = node.data_dir / nodeside.ROTATE_REQUEST
    victim = tmp_path / "victim.json"  # stands for a file only root may read
    victim.write_text('{"secret": "root only"}\n')
    for plant in (lambda: request_path.symlink_to(victim), lambda: os.mkfifo(request_path)):
        request_path.unlink()
        plant()
        again = nodeside.rotate_key(node.data_dir, actor="bob")  # the request is made again for the same key
        assert again.sign_key_id == first.sign_key_id and stat.S_ISREG(request_path.lstat().st_mode)
        assert json.loads(request_path.read_text())["format"] != "" and "secret" not in request_path.read_text()
    assert victim.read_text() == '{"secret": "root only"}\n'  # neither read into the request nor written


# -- nodes set up before root kept a record --------------------------------------------------------
def _as_before_the_record(data: Path, config: Path) -> None:
    """What a node keygen'd (and maybe installed) by an earlier release looks like: no root record."""
    for folder in (config.parent / "provisioning", anchor.beside_data_dir(data)):
        if folder.exists():
            for child in folder.iterdir():
                child.unlink()
            folder.rmdir()


def test_a_node_without_roots_record_needs_hq_key_id_once(hq: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data, config = _set_up(hq, tmp_path)
    nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob", config_path=config,
                     extra_toml=LOCAL)
    _as_before_the_record(data, config)
    bundle, evil = _attacker_bundle(data, tmp_path / "evil.alprbundle")
    (data / nodeside.HQ_SIGN).unlink()
    (data / nodeside.HQ_SIGN).write_bytes(_pem(evil))  # the service user's own plain file: still not trusted
    for candidate in (bundle, enroll.make_bundle(hq, "gate-12", actor="alice")):
        with pytest.raises(BadBundle, match="set up before root kept its own record .* pass --hq-key-id"):
            nodeside.install(candidate, data, actor="bob", config_path=config)
    with pytest.raises(BadBundle, match="signed by HQ key"):
        nodeside.install(bundle, data, actor="bob", config_path=config, hq_key_id=local.hq_key_id(hq)[:16])
    assert _host(config) != EVIL_HOST
    good = enroll.make_bundle(hq, "gate-12", actor="alice")
    rc = cli.main(["node", "install", str(good), "--data-dir", str(data), "--actor", "bob", "--config", str(config),
                   "--hq-key-id", local.hq_key_id(hq)[:16]])
    out = capsys.readouterr().out
    assert rc == 0 and "note: " in out and "had no root-owned record yet" in out
    record = anchor.load(config.parent / "provisioning")
    assert record is not None and record.node_id == "gate-12" and record.hq_sign is not None
    # from now on, as any node: no --hq-key-id, and the planted key is not consulted
    nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob", config_path=config)
    with pytest.raises(BadBundle):
        nodeside.install(bundle, data, actor="bob", config_path=config)


def test_a_node_without_roots_record_gives_files_only_to_the_data_dirs_owner(hq: Path, tmp_path: Path,
                                                                             no_hang: None) -> None:
    data, config = _set_up(hq, tmp_path)
    _as_before_the_record(data, config)
    meta_path = data / nodeside.META
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "user": "nobody"}))
    good = enroll.make_bundle(hq, "gate-12", actor="alice")
    with pytest.raises(StateError, match="names service user 'nobody', but .* belongs to uid"):
        nodeside.install(good, data, actor="bob", config_path=config, hq_key_id=local.hq_key_id(hq))
    # its node.json read through safefs: a FIFO is refused at once, a symlink not followed
    meta_path.unlink()
    os.mkfifo(meta_path)
    with pytest.raises(safefs.UnsafePath, match="is not a plain file"):
        nodeside.install(good, data, actor="bob", config_path=config, hq_key_id=local.hq_key_id(hq))
    meta_path.unlink()
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    meta_path.symlink_to(tmp_path / "meta.json")
    with pytest.raises(safefs.UnsafePath, match="is a symbolic link"):
        nodeside.rotate_key(data, actor="bob", config_path=config)
    assert not config.exists()


# -- root's record itself ------------------------------------------------------------------------
def test_roots_record_is_beside_node_toml_and_only_roots(hq: Path, tmp_path: Path) -> None:
    data, config = _set_up(hq, tmp_path)
    folder = config.parent / "provisioning"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    record = json.loads((folder / "node.json").read_text())
    assert record == {"node_id": "gate-12", "user": "", "hq_pin": local.hq_key_id(hq), "data_dir": str(data)}
    nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob", config_path=config,
                     extra_toml=LOCAL)
    for name in ("node.json", "hq-sign.pub", "installed.json"):
        st = (folder / name).stat()
        assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o644, name
    assert not anchor.beside_data_dir(data).exists()  # keygen was given the config: nothing beside the data dir
    # writable by others: refused, naming the fix
    folder.chmod(0o775)
    with pytest.raises(StateError, match=r"provisioning: is writable by others .*chmod 755"):
        nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob", config_path=config)
    folder.chmod(0o755)
    # a symlink in place of one of its files: refused, not followed
    (tmp_path / "key.pub").write_bytes((folder / "hq-sign.pub").read_bytes())
    (folder / "hq-sign.pub").unlink()
    (folder / "hq-sign.pub").symlink_to(tmp_path / "key.pub")
    with pytest.raises(StateError, match="hq-sign.pub: is a symbolic link, a hard link or not a plain file"):
        nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob", config_path=config)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_record_folder_another_account_owns_is_refused(hq: Path, tmp_path: Path) -> None:
    data, config = _set_up(hq, tmp_path)
    folder = config.parent / "provisioning"
    os.chown(folder, 65534, 65534)
    with pytest.raises(StateError, match=r"provisioning: belongs to uid 65534, not root"):
        nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob", config_path=config)
    os.chown(folder, 0, 0)
    os.chown(folder.parent, 65534, 65534)  # a config folder the service user could swap the record in
    with pytest.raises(StateError, match=r"belongs to uid 65534, who could swap it"):
        nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), data, actor="bob", config_path=config)


def test_a_record_for_another_data_dir_is_refused(hq: Path, tmp_path: Path) -> None:
    _, config = _set_up(hq, tmp_path)
    other = tmp_path / "other"
    nodeside.keygen(other, "gate-13", actor="bob", hq_key_id=local.hq_key_id(hq))
    with pytest.raises(StateError, match=r"is root's record of the node in .*/data, not of .*/other"):
        nodeside.install(enroll.make_bundle(hq, "gate-12", actor="alice"), other, actor="bob", config_path=config)


# -- the technician's and the lab's paths still work ----------------------------------------------
def test_cli_keygen_install_rotate_keep_the_record_beside_the_config(hq: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data, config = str(tmp_path / "pi"), _etc(tmp_path)

    def run(*argv: str) -> str:
        assert cli.main(list(argv)) == 0, capsys.readouterr().err
        return capsys.readouterr().out
    run("node", "keygen", "--data-dir", data, "--node-id", "gate-1", "--actor", "bob", "--hq-key-id",
        local.hq_key_id(hq)[:16])  # no --config: the default, where install writes too
    assert json.loads((config.parent / "provisioning" / "node.json").read_text())["node_id"] == "gate-1"
    enroll.enroll(hq, Path(data) / nodeside.REQUEST, site="north", actor="alice")
    bundle = enroll.make_bundle(hq, "gate-1", actor="alice")
    run("node", "install", str(bundle), "--data-dir", data, "--actor", "bob", "--extra", str(_site(tmp_path)))
    out = run("node", "rotate-key", "--data-dir", data, "--actor", "bob")
    enroll.add_key(hq, Path(data) / nodeside.ROTATE_REQUEST, actor="alice")
    out = run("node", "install", str(enroll.make_bundle(hq, "gate-1", actor="alice")), "--data-dir", data,
              "--actor", "bob")
    assert "signing key rotated to" in out and "note:" not in out
    for step in (["keygen", "--node-id", "g"], ["rotate-key"]):
        args = cli.build_parser().parse_args(["node", *step, "--actor", "a"])
        assert args.config == nodeside.DEFAULT_CONFIG


def _site(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(LOCAL)
    return path


def test_lab_keeps_the_record_beside_the_data_dir_and_reinstalls(hq: Path, tmp_path: Path) -> None:
    node = local.provision_node(hq, tmp_path / "nodes" / "gate-1", "gate-1", actor="bob", extra_toml=LOCAL)
    folder = anchor.beside_data_dir(node.data_dir)
    assert folder == tmp_path / "nodes" / "gate-1.provisioning" and node.config == node.data_dir / "node.toml"
    assert {p.name for p in folder.iterdir()} == {"node.json", "hq-sign.pub", "installed.json"}
    new = local.rotate_node_key(hq, node.data_dir, grace_hours=0)
    assert f"rotated_to={new}" in (node.data_dir / nodeside.AUDIT).read_text()
    nodeside.install(enroll.make_bundle(hq, "gate-1", actor="alice"), node.data_dir, actor="bob")
    # moving the config to /etc carries the record over: no --hq-key-id needed
    done = nodeside.install(enroll.make_bundle(hq, "gate-1", actor="alice"), node.data_dir, actor="bob",
                            config_path=_etc(tmp_path))
    assert done.record == _etc(tmp_path).parent / "provisioning" and "carried over" in done.first_record


def test_hil_lab_provisions_and_reprovisions(tmp_path: Path) -> None:
    from hil.lab import Lab
    lab = Lab(tmp_path / "lab")
    handle = lab.add_node("gate-1")
    assert anchor.load(anchor.beside_data_dir(handle.data_dir)).node_id == "gate-1"
    nodeside.install(enroll.make_bundle(lab.hq_dir, "gate-1", actor="lab"), handle.data_dir, actor="lab")
    lab.add_node("gate-2")
    assert {p.name for p in (tmp_path / "lab" / "nodes").iterdir()} >= {"gate-1", "gate-2"}


def test_provisioning_doc_says_where_roots_record_is_and_what_install_trusts() -> None:
    text = (ROOT / "docs/provisioning.md").read_text()
    assert "/etc/alpr-node/provisioning/" in text and "DATA_DIR.provisioning" in text
    assert "never reads `hq/hq-sign.pub`" in text and "--hq-key-id" in text


def test_a_config_reached_through_a_link_into_the_data_dir_keeps_the_record_beside_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    for config in (data / "node.toml", data / "etc" / "node.toml", tmp_path / "link" / "node.toml"):
        assert anchor.folder_for(data, config) == tmp_path / "data.provisioning", config
    assert anchor.folder_for(data, tmp_path / "etc" / "node.toml") == tmp_path / "etc" / "provisioning"
