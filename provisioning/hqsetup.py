"""HQ's trust anchors: the offline CA, broker and worker certificates, HQ's HPKE and signing keys.

    HQ_DATA_DIR/hq.toml                         for `alpr-hq`
    HQ_DATA_DIR/provisioning.toml               for later `alpr-provision` commands
    HQ_DATA_DIR/registry.db                     node registry and audit trail
    HQ_DATA_DIR/keys/hq-hpke-<kid>.key|.pub     HPKE (X25519) keys; old ones kept after rotation
    HQ_DATA_DIR/keys/hq-sign.key|.pub           Ed25519: acks, hot lists, configuration, bundles
    HQ_DATA_DIR/tls/ca.pem, tls/<worker>.pem|.key   HQ workers' broker client certificates
    HQ_DATA_DIR/tls/hq-push.pem|.key            `alpr-hq push`'s: it may only write hot lists
    HQ_DATA_DIR/broker/                         mosquitto.conf, acl, ca.pem, server.pem|.key, crl.pem
    CA_DIR/                                     the offline CA (see provisioning.authority)
"""
from __future__ import annotations

import hashlib
import logging
import os
import pwd
import secrets
import shlex
import subprocess
import time
import tomllib
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from provisioning import broker as broker_config
from provisioning import safefs, tomlout
from provisioning import state as hq_state
from provisioning.authority import Authority
from provisioning.errors import ProvisioningError, StateError
from provisioning.names import PUSH_CLIENT, is_push_client, worker_problem
from transport import atomic, key_usage, topics
from transport.errors import KeyFileError
from transport.keys import (
    key_id,
    load_private_key,
    raw_public,
    write_private_key,
    write_public_key,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HQSetup:
    """What `init_hq` made, for the caller to print or use."""

    state: hq_state.HQState
    hq_config: Path
    broker_files: broker_config.BrokerFiles
    hq_sign_fingerprint: str
    hpke_key_id: str
    share_group_kept: bool = False  # hq.toml's [ingest] share_group came from an hq.toml already there


def default_ca_dir(hq_dir: Path) -> Path:
    """The CA folder when none is given: a sibling of HQ's data folder, not inside it."""
    hq_dir = Path(hq_dir).resolve()
    return hq_dir.parent / "alpr-ca"


def sign_fingerprint(public: ed25519.Ed25519PublicKey) -> str:
    """HQ signing key fingerprint: SHA-256 of the raw key, hex; its first 16 digits are the key id."""
    return hashlib.sha256(raw_public(public)).hexdigest()


def sign_raw(state: hq_state.HQState) -> bytes:
    """HQ's signing public key, raw bytes."""
    return raw_public(load_sign_key(state).public_key())


def group(fingerprint: str, n: int = 4) -> str:
    """A fingerprint in groups of four for reading aloud or typing."""
    return " ".join(fingerprint[i:i + n] for i in range(0, len(fingerprint), n))


def new_share_group() -> str:
    """A fresh, secret name for HQ ingest's MQTT shared subscription: hq-ingest-<32 hex digits>.

    Secret because mosquitto's ACL file does not check SUBSCRIBE: a node that knew the name
    could join `$share/<group>/...`, be dealt its turn of every node's reads, be refused them
    by the read ACL, and so make the broker drop them for the group. 128 random bits cannot be
    guessed; the name is checked against the rule transport.topics applies to a group.
    """
    group = f"hq-ingest-{secrets.token_hex(16)}"
    topics.ingest_subscriptions(group=group)  # ValueError if the name ever broke the topic rule
    return group


def _kept_sections(hq_config: Path) -> dict[str, dict[str, Any]]:
    """The sections of an hq.toml already at `hq_config` that init carries over (all but
    [broker]), or {} if there is none. StateError if one cannot be written back as it is."""
    try:
        parsed = tomllib.loads(hq_config.read_text())
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StateError(f"{hq_config}: not valid TOML ({exc}): fix it or move it aside") from exc
    kept: dict[str, dict[str, Any]] = {}
    for name, section in parsed.items():
        if name == "broker":
            continue
        if not isinstance(section, dict):
            raise StateError(f"{hq_config}: {name}: expected a [section]; fix it or move it aside")
        for key, v in section.items():
            try:
                tomlout.value(v)
            except TypeError as exc:
                raise StateError(f"{hq_config}: [{name}] {key}: cannot be carried over ({exc}); "
                                 "move the file aside and copy the setting back by hand") from exc
        kept[name] = dict(section)
    return kept


def _kept_share_group(hq_config: Path) -> str | None:
    """The [ingest] share_group an hq.toml already at `hq_config` names, or None if none is there.

    Workers already running with that file subscribe with that group: a new one written over
    it would split them from those not yet restarted. StateError if the file cannot tell.
    """
    try:
        parsed = tomllib.loads(hq_config.read_text())
    except FileNotFoundError:
        return None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StateError(f"{hq_config}: not valid TOML ({exc}); cannot tell which [ingest] share_group HQ "
                         "ingest uses: fix it or move it aside") from exc
    ingest = parsed.get("ingest", {})
    group = ingest.get("share_group") if isinstance(ingest, dict) else None
    if group is None:
        return None
    if not isinstance(group, str):
        raise StateError(f"{hq_config}: [ingest] share_group: expected text, found {type(group).__name__}")
    try:
        topics.ingest_subscriptions(group=group)
    except ValueError as exc:
        raise StateError(f"{hq_config}: [ingest] share_group: {exc}") from exc
    return group


def _audit(state: hq_state.HQState, actor: str, action: str, node_id: str | None, detail: str) -> None:
    with hq_state.registry(state) as registry:
        registry.record(actor, action, node_id, detail)


def init_hq(hq_dir: Path, *, actor: str, ca_dir: Path | None = None, broker_names: list[str] | None = None,
            broker_host: str | None = None, broker_port: int = 8883, broker_bind: str = "",
            broker_reload: str = "", broker_user: str = "mosquitto", workers: int = 1,
            bundle_valid_hours: int = 168) -> HQSetup:
    """Create the CA, broker and worker certificates, HQ keys, hq.toml and the broker config.

    Refuses to run twice on the same HQ folder or CA folder: a second CA would orphan every
    node certificate already issued. hq.toml gets a random secret [ingest] share_group
    (new_share_group), or keeps the one an hq.toml already there names (never replaced silently).
    """
    hq_dir = Path(hq_dir).resolve()
    if (hq_dir / hq_state.FILE_NAME).exists():
        raise StateError(f"{hq_dir / hq_state.FILE_NAME}: HQ is already initialised; refusing to start over")
    if (hq_dir / "keys" / "hq-sign.key").exists():
        raise StateError(f"{hq_dir / 'keys' / 'hq-sign.key'}: an HQ signing key already exists; refusing to replace it")
    ca_dir = Path(ca_dir).resolve() if ca_dir else default_ca_dir(hq_dir)
    if ca_dir == hq_dir or hq_dir in ca_dir.parents:
        raise ProvisioningError(f"--ca-dir {ca_dir}: keep the offline CA outside HQ's data folder {hq_dir}")
    check_reload_command(broker_reload)
    names = broker_names or ["localhost", "127.0.0.1"]
    worker_names = tuple(f"hq-ingest-{i + 1}" for i in range(workers))
    hq_config = hq_dir / "hq.toml"
    # before anything is made: an hq.toml whose group cannot be read stops init here
    kept_group = _kept_share_group(hq_config)
    share_group = kept_group or new_share_group()
    # An hq.toml already there may hold the site's own choices ([store] url, [records]
    # retention_days...): they are kept, only what init owns is written over. Checked before
    # anything is made, so a file that cannot be carried over stops init here.
    kept_sections = _kept_sections(hq_config)
    hq_dir.mkdir(parents=True, exist_ok=True)
    authority = Authority.create(ca_dir)

    keys = hq_dir / "keys"
    hpke = x25519.X25519PrivateKey.generate()
    hpke_kid = key_id(hpke.public_key())
    write_private_key(keys / f"hq-hpke-{hpke_kid}.key", hpke)
    write_public_key(keys / f"hq-hpke-{hpke_kid}.pub", hpke.public_key())
    sign = ed25519.Ed25519PrivateKey.generate()
    write_private_key(keys / "hq-sign.key", sign)
    write_public_key(keys / "hq-sign.pub", sign.public_key())

    tls = hq_dir / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(tls / "ca.pem", authority.pair.cert.read_bytes())
    for worker in worker_names:
        authority.issue(worker, tls, stem=worker)
    # `alpr-hq push hotlist FILE` connects as hq-push: its own name, so it never takes over an
    # ingest worker's session, and an ACL entry that lets it write hot lists only
    authority.issue(PUSH_CLIENT, tls, stem=PUSH_CLIENT)

    state = hq_state.HQState(hq_dir=hq_dir, ca_dir=ca_dir, broker_host=broker_host or names[0],
                             broker_port=broker_port, broker_names=tuple(names), broker_bind=broker_bind,
                             broker_reload=broker_reload, broker_user=broker_user, workers=worker_names,
                             push_clients=(PUSH_CLIENT,), hpke_current=hpke_kid,
                             bundle_valid_hours=bundle_valid_hours)
    bdir = state.broker_dir
    bdir.mkdir(parents=True, exist_ok=True)
    authority.issue("broker", bdir, stem="server", server_names=names)
    atomic.write_bytes(bdir / "ca.pem", authority.pair.cert.read_bytes())
    authority.write_crl(bdir / "crl.pem")
    files = write_broker_config(state)
    state.save()

    # 0600: [ingest] share_group is a secret (a node that knew it could join the workers' shared
    # subscription), and a kept [store] url may carry the database password; alpr-hq runs as root
    atomic.write_text(hq_config, mode=0o600, text=tomlout.document({
        **kept_sections,
        "hq": {**kept_sections.get("hq", {}), "data_dir": str(hq_dir)},
        # the broker section is init's own: its certificates are the ones just issued
        "broker": {"host": broker_host or names[0], "port": broker_port, "client_id": worker_names[0]},
        "ingest": {**kept_sections.get("ingest", {}), "share_group": share_group},
    }, header="Written by alpr-provision ca init.\n"
              "[ingest] share_group is secret: never copy this file to a node (docs/provisioning.md)."))
    fp = sign_fingerprint(sign.public_key())
    _audit(state, actor, "ca-init", None,
           f"ca={ca_dir} broker={','.join(names)}:{broker_port} workers={','.join(worker_names)} push={PUSH_CLIENT} "
           f"hpke={hpke_kid} hq-sign={fp}")
    return HQSetup(state, hq_config, files, fp, hpke_kid, share_group_kept=kept_group is not None)


def write_broker_config(state: hq_state.HQState) -> broker_config.BrokerFiles:
    """(Re)write the broker's mosquitto.conf and ACL from the HQ state.

    Run as root, the broker's folder is given to `broker_user`: mosquitto drops to that user
    and must still read its key and CRL when it reloads on SIGHUP.
    """
    bdir = state.broker_dir
    files = broker_config.write_config(
        bdir, port=state.broker_port, ca_file=bdir / "ca.pem", cert_file=bdir / "server.pem",
        key_file=bdir / "server.key", hq_users=[*state.workers, *state.push_clients], bind=state.broker_bind,
        crl_file=bdir / "crl.pem", clientid_from_cert=True, run_as=state.broker_user or None)
    give_broker_files(state)
    return files


def give_broker_files(state: hq_state.HQState) -> None:
    """chown the broker folder to the broker's user when we are root and that user exists."""
    if os.geteuid() != 0 or not state.broker_user:
        return
    try:
        entry = pwd.getpwnam(state.broker_user)
    except KeyError:
        log.warning("broker user %s does not exist; %s left owned by root", state.broker_user, state.broker_dir)
        return
    _give(state.broker_dir, (entry.pw_uid, entry.pw_gid))


def _give(folder: Path, owner: tuple[int, int]) -> None:
    """Give `folder` and every entry in it to `owner`, never through a symlink or hard link.

    The broker's user owns this folder (mosquitto writes its database and log there), so it can
    put a symlink to /etc/shadow among the entries; os.chown by name would follow it and hand
    the file over. safefs opens each entry with O_NOFOLLOW and fchowns what it opened; an entry
    it refuses is left as it is and named: nothing of ours needs it, and the run goes on.
    """
    safefs.chown(folder, "", owner)
    for name in sorted(os.listdir(folder)):
        try:
            safefs.chown(folder, name, owner)
        except safefs.UnsafePath as exc:
            log.warning("%s (left as it is)", exc)


# Words only a shell understands. The reload command is split into words (shlex) and run
# without a shell, so `kill -HUP $(cat FILE)` would pass "$(cat" to kill: refused when saved.
_SHELL_WORDS = frozenset({"|", "||", "&", "&&", ";", ">", ">>", "<", "<<", "2>", "2>&1", "&>"})
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh"})
_SHELL_CHARS = ("|", "&", ";", ">", "<", "$", "`")


def pid_file(state: hq_state.HQState) -> Path:
    """Where a broker started as `mosquitto -c HQ_DIR/broker/mosquitto.conf` writes its process id."""
    return state.broker_dir / broker_config.PID_FILE


def check_reload_command(command: str, option: str = "--broker-reload") -> list[str]:
    """The broker reload command split into the words it is run as; "" is no command.

    ProvisioningError, naming `option`, when it cannot be split or needs a shell: it is run
    without one, and `kill -HUP $(cat FILE)` would otherwise fail only at the next revocation.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ProvisioningError(f"{option} {command!r}: cannot be split into words ({exc}); check the quotes") from exc
    if argv and Path(argv[0]).name not in _SHELLS:
        # in a word as well as on its own: `mosquitto; echo done` splits into "mosquitto;", ...
        shell = [w for w in argv if w in _SHELL_WORDS or any(ch in w for ch in _SHELL_CHARS)]
        if shell:
            raise ProvisioningError(
                f"{option} {command!r}: {', '.join(repr(w) for w in shell)} only mean something to a shell, and "
                "the command is split into words and run without one: give the signal by pid file, e.g. "
                "'pkill -HUP -F HQ_DIR/broker/mosquitto.pid -u mosquitto -x mosquitto', or run a shell "
                "yourself: sh -c '...'")
    return argv


def set_reload(hq_dir: Path, command: str, *, actor: str) -> hq_state.HQState:
    """Save `command` as the broker reload command (ca init --broker-reload), audited; "" removes it."""
    state = hq_state.load(hq_dir)
    check_reload_command(command, "--set-command")
    old = state.broker_reload
    state = state.with_(broker_reload=command)
    state.save()
    _audit(state, actor, "set-reload", None, f"{old!r} -> {command!r}")
    return state


def reload_broker(state: hq_state.HQState) -> str:
    """Run the configured broker reload command; returns what to tell the technician.

    The command is split into words and run without a shell (check_reload_command).
    """
    if not state.broker_reload:
        return (f"the broker must reread {state.broker_dir}: restart it, as it was started: "
                "`sudo systemctl restart mosquitto` (Debian's service), or stop the "
                f"`mosquitto -c {shlex.quote(str(state.broker_dir / 'mosquitto.conf'))}` process and start it again "
                "(a restart also drops open connections; a reload (SIGHUP), e.g. "
                f"`sudo pkill -HUP -F {shlex.quote(str(pid_file(state)))}"
                + (f" -u {shlex.quote(state.broker_user)}" if state.broker_user else "")
                + " -x mosquitto`, only refuses new ones)")
    argv = check_reload_command(state.broker_reload, f"broker reload command ({state.path})")
    try:
        result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProvisioningError(f"broker reload command {state.broker_reload!r} failed: {exc}") from exc
    if result.returncode != 0:
        said = (result.stderr.strip() or result.stdout.strip() or "no output").replace("\n", " | ")
        raise ProvisioningError(f"broker reload command {state.broker_reload!r} (run as the words "
                                f"{shlex.join(argv)}, without a shell) exited {result.returncode}: {said}")
    return f"ran {state.broker_reload!r}"


def issue_worker(hq_dir: Path, worker: str, *, actor: str, replace: bool = False) -> Path:
    """Issue a client certificate for another HQ worker and add it to the broker ACL.

    A worker that has a certificate already keeps it unless `replace`: then its old
    certificates are revoked (CRL rewritten) and a new key and certificate take their place.
    """
    state = hq_state.load(hq_dir)
    problem = worker_problem(worker)
    if problem:
        raise ProvisioningError(problem)
    authority = Authority(state.ca_dir)
    cert_path = state.hq_dir / "tls" / f"{worker}.pem"
    live = [c for c in authority.issued() if c.common_name == worker and c.revoked_at is None]
    if (live or cert_path.exists()) and not replace:
        raise StateError(f"{cert_path}: HQ worker {worker} has a certificate already (serials "
                         f"{', '.join(format(c.serial, 'x') for c in live) or '-'}); pass --replace to revoke it and "
                         "issue a new one, or pick another --worker name")
    revoked: list[int] = []
    if replace and live:
        # revoke before issuing, so a failure leaves the worker without a certificate, never with two
        revoked = authority.revoke(worker, f"replaced by {actor}")
        authority.write_crl(state.broker_dir / "crl.pem")
        give_broker_files(state)
    pair = authority.issue(worker, state.hq_dir / "tls", stem=worker)
    if worker not in state.workers + state.push_clients:
        # hq-push (and hq-push-*) only send hot lists: kept apart from the ingest workers, with
        # an ACL entry that lets them write alpr/v1/node/+/hotlist and nothing else
        state = (state.with_(push_clients=state.push_clients + (worker,)) if is_push_client(worker)
                 else state.with_(workers=state.workers + (worker,)))
        state.save()
        write_broker_config(state)
    _audit(state, actor, "issue-hq", None, f"worker={worker} cert={pair.cert}"
           + (f" replaced serials={','.join(format(s, 'x') for s in revoked)}" if revoked else ""))
    return pair.cert


def revoke_worker(hq_dir: Path, worker: str, *, actor: str, reason: str) -> list[int]:
    """Revoke every certificate of an HQ worker, take it out of the ACL and rewrite the CRL.

    Returns the revoked serials. The broker must reread its files (`ca reload-broker`).
    Running it again finishes a revocation that stopped halfway.
    """
    if not reason:
        raise ProvisioningError("--reason: required")
    state = hq_state.load(hq_dir)
    problem = worker_problem(worker)
    if problem:
        raise ProvisioningError(problem)
    authority = Authority(state.ca_dir)
    known = state.workers + state.push_clients
    if worker not in known and not any(c.common_name == worker for c in authority.issued()):
        raise StateError(f"HQ worker {worker}: no such worker (known: {', '.join(known) or '-'})")
    serials = authority.revoke(worker, reason)
    authority.write_crl(state.broker_dir / "crl.pem")
    if worker in known:
        state = state.with_(workers=tuple(w for w in state.workers if w != worker),
                            push_clients=tuple(w for w in state.push_clients if w != worker))
        state.save()
    write_broker_config(state)
    _audit(state, actor, "revoke-hq", None, f"worker={worker} serials={','.join(format(s, 'x') for s in serials)} "
           f"reason={reason}")
    return serials


def load_hpke_public(state: hq_state.HQState, kid: str | None = None) -> x25519.X25519PublicKey:
    """HQ's current (or given) HPKE public key, from its private key file."""
    kid = kid or state.hpke_current
    path = state.keys_dir / f"hq-hpke-{kid}.key"
    try:
        return load_private_key(path, x25519.X25519PrivateKey).public_key()
    except KeyFileError as exc:
        raise StateError(str(exc)) from exc


def load_sign_key(state: hq_state.HQState) -> ed25519.Ed25519PrivateKey:
    """HQ's Ed25519 signing key."""
    try:
        return load_private_key(state.keys_dir / "hq-sign.key", ed25519.Ed25519PrivateKey)
    except KeyFileError as exc:
        raise StateError(str(exc)) from exc


def rotate_hpke(hq_dir: Path, *, actor: str) -> tuple[str, list[str]]:
    """Make a new HPKE key pair and make it current; old keys stay to decrypt queued reads.

    Returns (new key id, key ids still kept).
    """
    state = hq_state.load(hq_dir)
    key = x25519.X25519PrivateKey.generate()
    kid = key_id(key.public_key())
    write_private_key(state.keys_dir / f"hq-hpke-{kid}.key", key)
    write_public_key(state.keys_dir / f"hq-hpke-{kid}.pub", key.public_key())
    old = state.hpke_current
    state.with_(hpke_current=kid).save()
    _audit(state, actor, "rotate-hpke", None, f"new={kid} previous={old}")
    kept = sorted(p.stem.removeprefix("hq-hpke-") for p in state.keys_dir.glob("hq-hpke-*.key"))
    return kid, kept


def hpke_users(state: hq_state.HQState, kid: str) -> list[str]:
    """Active nodes whose latest bundle (per the audit trail) carries HPKE key `kid`."""
    # not read-only: retire-hpke, which asks, then deletes a key and writes the audit trail
    with hq_state.registry(state) as registry:
        active = {r.node_id for r in registry.nodes() if r.status == "active"}
        latest: dict[str, str] = {}
        for _, _, action, node_id, detail in registry.audit_log():
            if action == "bundle" and node_id in active:
                fields = dict(part.split("=", 1) for part in detail.split() if "=" in part)
                latest[node_id] = fields.get("hpke", "")
    return sorted(n for n, used in latest.items() if used == kid)


def _utc(t_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t_ns / 1e9))


# hq.config's [ingest] revocation_grace_h default (provisioning must not import hq/; a unit
# test keeps the two equal).
DEFAULT_REVOCATION_GRACE_H = 24.0


def revocation_grace_s(state: hq_state.HQState) -> float:
    """HQ ingest's [ingest] revocation_grace_h from HQ_DIR/hq.toml, in seconds (its default when unset).

    After a revoked node's grace, ingest refuses everything it sends (transport.registry), so
    which HPKE key it seals for no longer matters.
    """
    path = state.hq_dir / "hq.toml"
    try:
        parsed = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return DEFAULT_REVOCATION_GRACE_H * 3600
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: cannot read [ingest] revocation_grace_h ({exc}); fix the file") from exc
    ingest = parsed.get("ingest", {})
    hours = ingest.get("revocation_grace_h", DEFAULT_REVOCATION_GRACE_H) if isinstance(ingest, dict) else None
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 <= hours < float("inf"):
        raise StateError(f"{path}: [ingest] revocation_grace_h: expected a number of hours >= 0, found {hours!r}")
    return float(hours) * 3600


@dataclass(frozen=True)
class RetiredKey:
    """What `retire_hpke` did."""

    path: Path
    # revoked nodes whose grace period is over, left out of the checks: node -> when its grace ended
    skipped: dict[str, int]
    # with --force: the nodes that still used the key
    forced_for: tuple[str, ...] = ()


def _grace_ends(state: hq_state.HQState, nodes: list[str]) -> dict[str, int]:
    """Which of `nodes` are revoked: node -> when its revocation grace period ends (ns)."""
    if not nodes:
        return {}
    grace_ns = int(revocation_grace_s(state) * 1e9)
    with hq_state.registry(state) as registry:  # as hpke_users: retire-hpke writes the audit trail
        records = {r.node_id: r for r in registry.nodes()}
    return {node: records[node].revoked_ns + grace_ns for node in nodes
            if node in records and records[node].status == "revoked" and records[node].revoked_ns is not None}


def retire_hpke(hq_dir: Path, kid: str, *, actor: str, force: bool = False, now_ns: int | None = None) -> RetiredKey:
    """Delete an old HPKE private key (reads still sealed for it can then never be opened).

    Refused while an active node's latest bundle still carries the key (its node seals
    every read for it), or while a node's latest message HQ's ingest opened was sealed for it
    (its new bundle is not installed yet, or it still sends reads sealed before), unless `force`.
    A revoked node whose revocation grace period ([ingest] revocation_grace_h) is over is left
    out: ingest refuses all it sends, and it can never send a message sealed for the new key.
    """
    state = hq_state.load(hq_dir)
    if kid == state.hpke_current:
        raise ProvisioningError(f"HPKE key {kid} is the current one; rotate first (ca rotate-hpke)")
    path = state.keys_dir / f"hq-hpke-{kid}.key"
    if not path.exists():
        raise StateError(f"{path}: no such HPKE key")
    now = time.time_ns() if now_ns is None else now_ns
    users = hpke_users(state, kid)
    if users and not force:
        raise StateError(f"{path}: still used by active nodes whose latest bundle carries key {kid}: "
                         f"{', '.join(users)}; bundle and install a new bundle on each (node bundle ID, node install), "
                         "or pass --force to lose every read they seal until then")
    # A bundle made is not a bundle installed: what ingest last opened from each node says
    # which key the node really seals for (transport.key_usage).
    sealing = key_usage.still_sealing(key_usage.merged(state.keys_dir), kid)
    revoked = _grace_ends(state, sorted(sealing))
    skipped = {node: end for node, end in revoked.items() if now > end}
    sealing = {node: t for node, t in sealing.items() if node not in skipped}
    if sealing and not force:
        seen = ", ".join(f"{node} (last {_utc(t)}" + (f"; revoked: HQ accepts the reads it queued before until "
                                                      f"{_utc(revoked[node])}, then it is left out)"
                                                      if node in revoked else ")")
                         for node, t in sorted(sealing.items()))
        raise StateError(f"{path}: nodes whose latest message HQ opened was sealed for key {kid}: {seen}; they "
                         "have not been seen to use the new key yet (bundle not installed, or reads sealed before "
                         "still queued). Wait until each has sent a message since its new bundle (a revoked node: "
                         "until its revocation grace period, [ingest] revocation_grace_h in hq.toml, is over), or "
                         "pass --force to lose what they seal for it")
    users = users or sorted(sealing)
    os.remove(path)
    (state.keys_dir / f"hq-hpke-{kid}.pub").unlink(missing_ok=True)
    _audit(state, actor, "retire-hpke", None, f"key={kid}" + (f" forced; still used by {','.join(users)}"
                                                              if users else "")
           + (f" skipped revoked nodes past their grace: {','.join(sorted(skipped))}" if skipped else ""))
    return RetiredKey(path, skipped, tuple(users) if force else ())
