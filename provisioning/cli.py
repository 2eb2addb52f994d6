"""`alpr-provision`: from a blank Pi to an enrolled, trusted node in a few technician commands.

HQ side:   ca init | ca issue-hq | ca revoke-hq | ca rotate-hpke | ca retire-hpke | ca crl
           node enroll | node bundle | node add-key | node list | node revoke | audit
Node side: node keygen | node rotate-key | node install

Every command needs --actor (the technician's name, kept in the audit trail) except the
read-only ones, and prints what it did and what comes next.
"""
from __future__ import annotations

import argparse
import os
import pwd
import shlex
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from provisioning.errors import ProvisioningError
from transport.errors import TransportError

DEFAULT_HQ_DIR = Path("/var/lib/alpr-hq")
DEFAULT_NODE_DIR = Path("/var/lib/alpr-node")
# Where removable media are mounted: an --out below one of these must land on a mounted stick.
REMOVABLE_ROOTS = (Path("/media"), Path("/mnt"), Path("/run/media"))


def _q(value: object) -> str:
    """A value as it must be typed in a shell: the hints below are meant to be pasted."""
    return shlex.quote(str(value))


def _sudo(hq_dir: Path) -> str:
    """"sudo " for a hint to run at HQ, unless the person at the keyboard owns HQ's folder.

    HQ's keys and registry are root's: a technician who ran this command with sudo needs it
    for the next one too. Someone who owns --dir (a lab, a test, a root shell) does not.
    """
    try:
        owner = Path(hq_dir).stat().st_uid
        typed_by = int(os.environ.get("SUDO_UID") or os.getuid())
    except (OSError, ValueError):
        return "sudo "
    return "" if owner == typed_by else "sudo "


def _checked_out(out: Path | None, example: str) -> Path | None:
    """--out as given; refused before anything is made when it cannot be where the technician meant.

    A folder that does not exist is a stick that is not mounted (/media/usb/...): writing there
    would create the folder on this machine's own disk and report success. Below /media, /mnt
    or /run/media, an existing folder that is not on a mounted file system is the empty mount
    point of a stick that is not there. `example` is a file name to suggest for a folder.
    """
    if out is None:
        return None
    out = Path(out)
    if out.is_dir():
        raise ProvisioningError(f"--out {out}: is a folder; give the file's name in it, e.g. --out {out / example}")
    parent = Path(os.path.abspath(out.parent))
    if not parent.is_dir():
        raise ProvisioningError(f"--out {out}: folder {parent} does not exist (is the stick mounted?); mount it and "
                                "run the command again (nothing was made)")
    for root in REMOVABLE_ROOTS:
        if parent == root or not parent.is_relative_to(root):
            continue
        folders = [parent, *parent.parents]
        below = folders[:folders.index(root)]  # parent up to, not including, /media
        if not any(os.path.ismount(f) for f in below):
            raise ProvisioningError(f"--out {out}: {parent} is on this machine's own disk, not on a mounted stick "
                                    "(is the stick mounted?); mount it and run the command again (nothing was made)")
    return out


def _when(t_ns: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t_ns / 1e9)) if t_ns else "-"


# -- ca ------------------------------------------------------------------------------------
def _ca_init(args: argparse.Namespace) -> int:
    from provisioning import hqsetup
    names = [n.strip() for item in args.broker_name for n in item.split(",") if n.strip()] or None
    setup = hqsetup.init_hq(args.dir, actor=args.actor, ca_dir=args.ca_dir, broker_names=names,
                            broker_host=args.broker_host, broker_port=args.broker_port, broker_bind=args.broker_bind,
                            broker_reload=args.broker_reload, broker_user=args.broker_user, workers=args.workers,
                            bundle_valid_hours=args.bundle_hours)
    s = setup.state
    print(f"offline CA:          {s.ca_dir} (ca.key: keep this folder offline, e.g. on removable media)")
    print(f"HQ config:           {setup.hq_config} ([ingest] share_group: "
          f"{'kept from the hq.toml already there' if setup.share_group_kept else 'a new random name'}; "
          "secret, never copy hq.toml to a node)")
    print(f"HQ HPKE key:         {s.keys_dir}/hq-hpke-{setup.hpke_key_id}.key (key id {setup.hpke_key_id})")
    print(f"HQ signing key:      {s.keys_dir}/hq-sign.key")
    print(f"HQ workers:          {', '.join(s.workers)} (certificates in {s.hq_dir / 'tls'})")
    print(f"hot-list sender:     {', '.join(s.push_clients)} (for `alpr-hq push hotlist FILE`; the broker ACL lets it "
          "write every node's retained hot list and nothing else)")
    print(f"broker:              {s.broker_dir} (mosquitto.conf, acl, server.pem for {', '.join(s.broker_names)}, "
          "crl.pem)")
    print()
    print("HQ signing key fingerprint (give it to technicians: `node keygen/install --hq-key-id`):")
    print(f"    {hqsetup.group(setup.hq_sign_fingerprint)}")
    print()
    print("next: start the broker with this config:")
    print(f"    mosquitto -c {_q(setup.broker_files.conf)}")
    print(f"  or, under Debian's mosquitto service: sudo ln -s {_q(setup.broker_files.include)} "
          "/etc/mosquitto/conf.d/ && sudo systemctl restart mosquitto")
    print(f"then on each Pi: sudo alpr-provision node keygen --data-dir {DEFAULT_NODE_DIR} --node-id ID --user alpr "
          f"--actor NAME --hq-key-id {setup.hq_sign_fingerprint[:16]}")
    return 0


def _ca_issue_hq(args: argparse.Namespace) -> int:
    from provisioning import hqsetup
    from provisioning.names import PUSH_CLIENT, is_push_client
    cert = hqsetup.issue_worker(args.dir, args.worker, actor=args.actor, replace=args.replace)
    push = is_push_client(args.worker)
    may = ("write every node's retained hot list, nothing else (sign a list first: alpr-hq hotlist publish "
           "--out FILE)" if push else "read every node")
    print(f"issued {cert} (and its key) for HQ {'hot-list sender' if push else 'worker'} {args.worker}; "
          f"the broker ACL now lets it {may}")
    if args.replace:
        print("    its earlier certificates are revoked in the CRL")
    sudo = _sudo(args.dir)
    hq = f"{sudo}alpr-hq --config {_q(Path(args.dir) / 'hq.toml')}"
    if push:
        then = f"{hq} push hotlist FILE" + ("" if args.worker == PUSH_CLIENT else f" --worker {_q(args.worker)}")
    else:
        then = f"{hq} ingest --worker {_q(args.worker)}"
    print(f"next: {sudo}alpr-provision ca reload-broker --dir {_q(args.dir)} --actor {_q(args.actor)}, then run: {then}")
    return 0


def _ca_revoke_hq(args: argparse.Namespace) -> int:
    from provisioning import hqsetup
    serials = hqsetup.revoke_worker(args.dir, args.worker, actor=args.actor, reason=args.reason)
    print(f"revoked HQ worker {args.worker}: certificates {', '.join(format(s, 'x') for s in serials) or '-'}; "
          "removed from the broker ACL; CRL rewritten")
    print(f"next: {_sudo(args.dir)}alpr-provision ca reload-broker --dir {_q(args.dir)} --actor {_q(args.actor)} "
          "(a restart drops its open connection)")
    return 0


def _ca_rotate_hpke(args: argparse.Namespace) -> int:
    from provisioning import hqsetup
    kid, kept = hqsetup.rotate_hpke(args.dir, actor=args.actor)
    print(f"new HQ HPKE key {kid} is current; kept for queued reads: {', '.join(k for k in kept if k != kid) or '-'}")
    print("next: restart HQ ingest workers (they load every hq-hpke-*.key), then make and install a new bundle "
          "for each node (node bundle ID / node install); retire an old key only once no node uses it: "
          "ca retire-hpke KID")
    return 0


def _ca_retire_hpke(args: argparse.Namespace) -> int:
    from provisioning import hqsetup
    done = hqsetup.retire_hpke(args.dir, args.key_id, actor=args.actor, force=args.force)
    print(f"deleted {done.path}; reads sealed for key {args.key_id} can no longer be opened")
    if done.skipped:
        print("    skipped revoked nodes whose revocation grace period is over (HQ ingest refuses all they send): "
              + ", ".join(f"{node} (grace ended {_when(t)})" for node, t in sorted(done.skipped.items())))
    if done.forced_for:
        print(f"    --force: still used by {', '.join(done.forced_for)}")
    return 0


def _ca_crl(args: argparse.Namespace) -> int:
    from provisioning import enroll
    path = enroll.regenerate_crl(args.dir, actor=args.actor)
    print(f"wrote a fresh CRL to {path}")
    return _reload_after(args, "fresh CRL written")


# A generated broker file is a few kB; one much bigger was not written by us (and is not copied).
MAX_BROKER_FILE_BYTES = 4 * 1024 * 1024


def _broker_file(broker_dir: Path, name: str) -> bytes | None:
    """A generated broker file as it is now, read without following a link (the broker's user
    owns the folder); None if it is missing, not a plain file or too big (no copy is kept)."""
    from provisioning import safefs
    try:
        if os.lstat(broker_dir / name).st_size > MAX_BROKER_FILE_BYTES:
            print(f"warning: {broker_dir / name}: over {MAX_BROKER_FILE_BYTES} bytes: no copy of it kept",
                  file=sys.stderr)
            return None
        return safefs.read_bytes(broker_dir, name)[0]
    except FileNotFoundError:
        return None
    except safefs.UnsafePath as exc:
        print(f"warning: {exc}: no copy of it kept", file=sys.stderr)
        return None


def _keep_previous(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` as folder/NAME.<UTC time>[.N], never over an earlier copy; returns its path."""
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        path = folder / (f"{name}.{stamp}" + (f".{n}" if n else ""))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return path
    raise OSError(f"{folder}: a thousand copies of {name} in one second")


def _ca_reload_broker(args: argparse.Namespace) -> int:
    from provisioning import broker as broker_config
    from provisioning import enroll, hqsetup
    from provisioning import state as hq_state
    if args.set_command is not None:
        state = hqsetup.set_reload(args.dir, args.set_command, actor=args.actor)
        if state.broker_reload:
            print(f"reload command saved in {state.path}: {state.broker_reload!r} (run as the words "
                  f"{shlex.join(hqsetup.check_reload_command(state.broker_reload))}, without a shell)")
        else:
            print(f"reload command removed from {state.path}: the command to run is printed instead")
    # The files are written from HQ's state first, so that a reload after an upgrade also
    # brings the ACL entries a new release needs (alpr/v1/hq/ingest, for instance). A file
    # that changes keeps its previous text beside it (.bak): a hand edit is not lost unseen.
    # The copies live in HQ's own folder, not in the broker's: the broker's user owns that one
    # and could plant a link there for root to copy (and a copy there would be handed to it).
    state = hq_state.load(args.dir)
    names = ("mosquitto.conf", broker_config.INCLUDE_NAME, "acl")
    before = {name: _broker_file(state.broker_dir, name) for name in names}
    hqsetup.write_broker_config(state)
    for name in names:
        old = before[name]
        if old is not None and old != _broker_file(state.broker_dir, name):
            backup = _keep_previous(state.hq_dir / "broker-previous", name, old)
            print(f"broker file {state.broker_dir / name} rewritten from HQ's state; its previous text is "
                  f"kept as {backup} (compare them if it was edited by hand)")
    print(f"broker: {enroll.reload_broker(args.dir, actor=args.actor)}")
    return 0


def _reload_after(args: argparse.Namespace, done: str, node_id: str | None = None) -> int:
    """Run the broker reload command after a step that is already done (`done` says which).

    What is done is on the screen before the command runs; a failing command leaves it done,
    says so, and exits 1 so that a script sees the broker step is still owed.
    """
    from provisioning import enroll
    sys.stdout.flush()
    try:
        told = enroll.reload_broker(args.dir, actor=args.actor, node_id=node_id)
    except ProvisioningError as exc:
        sudo, again = _sudo(args.dir), f"--dir {_q(args.dir)} --actor {_q(args.actor)}"
        print(f"alpr-provision: error: {done}; broker not reloaded: {exc}\n"
              f"    fix the command, then run `{sudo}alpr-provision ca reload-broker {again}` "
              f"(`{sudo}alpr-provision ca reload-broker --set-command 'NEW COMMAND' {again}` saves a new one "
              "and runs it)", file=sys.stderr)
        return 1
    print(f"    broker: {told}")
    return 0


# -- node, HQ side ------------------------------------------------------------------------
def _node_enroll(args: argparse.Namespace) -> int:
    from provisioning import enroll
    done = enroll.enroll(args.dir, args.request, site=args.site, actor=args.actor, camera=args.camera,
                         lane=args.lane or "", expect_fingerprint=args.fingerprint)
    r = done.record
    print(f"enrolled node {r.node_id} at site {r.site_id} by {r.enrolled_by}")
    print(f"    request fingerprint {done.fingerprint}  (must match what the Pi printed at keygen)")
    print(f"    signing key {done.sign_key_id}, certificate {done.cert} serial {done.cert_serial}")
    print(f"next: {_sudo(args.dir)}alpr-provision node bundle {_q(r.node_id)} --dir {_q(args.dir)} "
          f"--actor {_q(args.actor)}")
    return 0


def _node_bundle(args: argparse.Namespace) -> int:
    from provisioning import bundle, enroll, hqsetup, state
    wanted = _checked_out(args.out, f"{args.node_id}.alprbundle")
    out = enroll.make_bundle(args.dir, args.node_id, actor=args.actor, out=wanted, valid_hours=args.hours)
    st = state.load(args.dir)
    fp = bundle.fingerprint(hqsetup.sign_raw(st))
    print(f"wrote {out} for node {args.node_id}, signed by HQ key {hqsetup.group(fp[:16])}")
    print(f"next: copy it to the Pi and run: sudo alpr-provision node install {_q(out.name)} --data-dir DIR "
          f"--actor NAME [--extra site.toml on the first install] [--hq-key-id {fp[:16]} if not pinned at keygen]")
    return 0


def _node_add_key(args: argparse.Namespace) -> int:
    from provisioning import enroll
    node_id, kid = enroll.add_key(args.dir, args.request, actor=args.actor, grace_hours=args.grace_hours)
    print(f"node {node_id}: key {kid} enrolled; the old key is accepted for messages made in the next "
          f"{args.grace_hours:g} h (reads already queued on the node stay valid whenever they arrive): "
          f"install the bundle on the node within {args.grace_hours:g} h, or the reads it signs after that "
          "with the old key are refused")
    print(f"next: {_sudo(args.dir)}alpr-provision node bundle {_q(node_id)} --dir {_q(args.dir)} "
          f"--actor {_q(args.actor)}, then install it on the Pi and restart alpr-node")
    return 0


def _node_list(args: argparse.Namespace) -> int:
    from provisioning import enroll
    rows = enroll.nodes(args.dir)
    print(f"{'NODE':<20} {'SITE':<12} {'STATUS':<8} {'ENROLLED':<21} {'BY':<12} {'REVOKED':<21} KEYS")
    for r, keys in rows:
        print(f"{r.node_id:<20} {r.site_id:<12} {r.status:<8} {_when(r.enrolled_ns):<21} {r.enrolled_by:<12} "
              f"{_when(r.revoked_ns):<21} {','.join(keys)}")
    if not rows:
        print("(no nodes enrolled)")
    return 0


def _node_revoke(args: argparse.Namespace) -> int:
    from provisioning import enroll
    # the revocation first, the broker after: a failing reload command must not hide that
    # the node is revoked already (registry and CRL)
    done = enroll.revoke(args.dir, args.node_id, actor=args.actor, reason=args.reason, reload=False)
    print(f"revoked node {args.node_id}: HQ ingest rejects anything it made from {_when(done.record.revoked_ns)}")
    print(f"    certificates revoked: {', '.join(done.serials) or '-'}; CRL written to {done.crl}")
    if args.no_reload:
        print(f"    broker: not reloaded (--no-reload); next: {_sudo(args.dir)}alpr-provision ca reload-broker "
              f"--dir {_q(args.dir)} --actor {_q(args.actor)}")
        return 0
    return _reload_after(args, "revoked", node_id=args.node_id)


def _audit(args: argparse.Namespace) -> int:
    from provisioning import enroll
    for t_ns, actor, action, node_id, detail in enroll.audit(args.dir, node_id=args.node):
        print(f"{_when(t_ns)}  {actor:<12} {action:<13} {node_id or '-':<16} {detail}")
    return 0


# -- node, Pi side ------------------------------------------------------------------------
def _node_keygen(args: argparse.Namespace) -> int:
    from provisioning import nodeside
    out = _checked_out(args.out, f"{args.node_id}.json")
    done = nodeside.keygen(args.data_dir, args.node_id, actor=args.actor, user=args.user, hq_key_id=args.hq_key_id,
                           out=out, config_path=args.config)
    data_dir = Path(args.data_dir).resolve()
    print(f"made keys for node {done.node_id} in {data_dir} (private keys stay on this Pi)")
    print(f"    signing key id {done.sign_key_id}")
    print(f"    request {done.request}" + (f" (also kept as {data_dir / nodeside.REQUEST})" if out else ""))
    print(f"    request fingerprint: {done.fingerprint}   <- write this down; HQ checks it at enrol")
    print(f"next: carry {done.request} to HQ: sudo alpr-provision node enroll {_q(done.request.name)} --site SITE "
          f"--actor NAME --fingerprint {done.fingerprint}")
    return 0


def _node_rotate_key(args: argparse.Namespace) -> int:
    from provisioning import nodeside
    out = _checked_out(args.out, "rotate-request.json")
    done = nodeside.rotate_key(args.data_dir, actor=args.actor, out=out, replace=args.replace,
                               config_path=args.config)
    print(f"node {done.node_id}: new signing key {done.sign_key_id} made (kept aside until HQ's bundle names it)")
    print(f"    request {done.request}, fingerprint {done.fingerprint}"
          + (f" (also kept as {Path(args.data_dir).resolve() / nodeside.ROTATE_REQUEST})" if out else ""))
    print(f"next: at HQ: sudo alpr-provision node add-key {_q(done.request.name)} --actor NAME; "
          f"sudo alpr-provision node bundle {_q(done.node_id)} --actor NAME; then here: "
          "sudo alpr-provision node install BUNDLE --actor NAME and restart alpr-node")
    return 0


def _node_install(args: argparse.Namespace) -> int:
    from provisioning import nodeside
    extra = args.extra.read_text() if args.extra else None
    done = nodeside.install(args.bundle, args.data_dir, actor=args.actor, hq_key_id=args.hq_key_id,
                            config_path=args.config, extra_toml=extra, extra_source=f"--extra {args.extra}",
                            check_config=True)
    print(f"bundle verified (HQ key {done.hq_key_id}) and installed for node {done.node_id}:")
    for path in done.written:
        print(f"    {path}")
    if done.rotated_to:
        print(f"    signing key rotated to {done.rotated_to}")
    if done.dropped:
        print(f"    --extra replaces the local sections; dropped from the existing {done.config.name}: "
              f"{', '.join(done.dropped)} (to keep them, copy them from {_q(done.dropped_kept_in)} into "
              f"{_q(args.extra)} and install again)")
    print(f"    certificate valid until {done.cert_not_after:%Y-%m-%d}")
    if done.first_record:
        print(f"note: {done.first_record}")
    if done.config_problem:
        print(f"warning: {done.config} (its local sections kept as they were) does not pass "
              f"`alpr-node check-config --toml-only` yet:\n{done.config_problem}\n"
              "  fix it (or install again with --extra site.toml) before starting the node", file=sys.stderr)
    config = _q(done.config)
    # alpr-node runs as the service user: run as root once, it leaves root-owned files in the data
    # folder (outbox.db, sequence.reserved) that the service then cannot open.
    as_user = _as_service_user(done.user)
    if done.config == nodeside.DEFAULT_CONFIG:
        print(f"next: {_as_service_user(done.user or 'alpr')}alpr-node check-config --config {config}; then sudo "
              "systemctl enable --now alpr-node (or restart it)")
    else:
        print(f"next: {as_user}alpr-node check-config --config {config}; then {as_user}alpr-node run --config {config}"
              + (f" (as {done.user}, the data folder's owner: not as root)" if as_user else ""))
    return 0


def _as_service_user(user: str) -> str:
    """`sudo -u USER ` to run alpr-node as the node's service user, "" when that is whoever types it."""
    if not user:
        return ""
    typed_by = os.environ.get("SUDO_USER") if os.geteuid() == 0 else None
    try:
        me = typed_by or pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry (a container): say sudo -u, to be safe
        me = ""
    return "" if user == me else f"sudo -u {_q(user)} "


def _default_node_config() -> Path:
    """Where `node install` writes node.toml by default: where alpr-node reads it."""
    from provisioning.nodeside import DEFAULT_CONFIG
    return DEFAULT_CONFIG


def build_parser() -> argparse.ArgumentParser:
    """The `alpr-provision` parser."""
    parser = argparse.ArgumentParser(prog="alpr-provision", description="ALPR provisioning: CA, nodes, revocation")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def hq(p: argparse.ArgumentParser, actor: bool = True) -> argparse.ArgumentParser:
        # $ALPR_HQ_DIR is read when the parser is built, not frozen at import.
        p.add_argument("--dir", type=Path, default=Path(os.environ.get("ALPR_HQ_DIR", DEFAULT_HQ_DIR)),
                       help=f"HQ data dir (default $ALPR_HQ_DIR or {DEFAULT_HQ_DIR})")
        if actor:
            p.add_argument("--actor", required=True, help="your name, for the audit trail")
        return p

    def record_config(p: argparse.ArgumentParser) -> None:
        # the --config install is given: root keeps its record of the node (trusted HQ key, pin,
        # service user) in provisioning/ beside it, never in the service user's data dir
        p.add_argument("--config", type=Path, default=_default_node_config(),
                       help=f"the node.toml `node install` writes (default {_default_node_config()}); root keeps "
                            "its record of this node's HQ key pin and service user in provisioning/ beside it")

    def pi(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", type=Path, default=DEFAULT_NODE_DIR, help=f"node data dir (default {DEFAULT_NODE_DIR})")
        p.add_argument("--actor", required=True, help="your name, for the node's audit log")
        return p

    ca = sub.add_parser("ca", help="HQ trust anchors").add_subparsers(dest="ca_command", required=True, metavar="STEP")
    p = hq(ca.add_parser("init", help="create the offline CA, broker and HQ certificates, HQ keys, hq.toml"))
    p.add_argument("--ca-dir", type=Path, help="offline CA folder (default: alpr-ca next to --dir)")
    p.add_argument("--broker-name", action="append", default=[],
                   help="broker DNS name or IP for its certificate; repeat or comma-separate (default localhost,127.0.0.1)")
    p.add_argument("--broker-host", help="address nodes and HQ connect to (default: the first --broker-name)")
    p.add_argument("--broker-port", type=int, default=8883)
    p.add_argument("--broker-bind", default="", help="listener address (default: every address)")
    p.add_argument("--broker-reload", default="",
                   help="command run after a revocation and after ca crl, e.g. 'systemctl restart mosquitto' (default: print it); "
                        "split into words and run without a shell; change it later with ca reload-broker "
                        "--set-command")
    p.add_argument("--broker-user", default="mosquitto",
                   help="user mosquitto runs as; when run as root its folder is given to it (default mosquitto)")
    p.add_argument("--workers", type=int, default=1, help="HQ ingest worker certificates hq-ingest-1..N")
    p.add_argument("--bundle-hours", type=int, default=168, help="how long a provisioning bundle stays valid")
    p.set_defaults(func=_ca_init)
    p = hq(ca.add_parser("issue-hq", help="certificate for another HQ worker (CN hq-...)"))
    p.add_argument("--worker", required=True, help="worker name, e.g. hq-ingest-2")
    p.add_argument("--replace", action="store_true",
                   help="the worker has a certificate: revoke it and issue a new key and certificate")
    p.set_defaults(func=_ca_issue_hq)
    p = hq(ca.add_parser("revoke-hq", help="revoke an HQ worker's certificates and drop it from the ACL"))
    p.add_argument("--worker", required=True, help="worker name, e.g. hq-ingest-2")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_ca_revoke_hq)
    hq(ca.add_parser("rotate-hpke", help="new HQ HPKE key; old ones kept for queued reads")).set_defaults(
        func=_ca_rotate_hpke)
    p = hq(ca.add_parser("retire-hpke", help="delete an old HQ HPKE key"))
    p.add_argument("key_id")
    p.add_argument("--force", action="store_true",
                   help="delete it even though active nodes' latest bundles still carry it")
    p.set_defaults(func=_ca_retire_hpke)
    hq(ca.add_parser("crl", help="write a fresh CRL (before the current one expires)")).set_defaults(func=_ca_crl)
    p = hq(ca.add_parser("reload-broker", help="run the broker reload command (after --no-reload, issue-hq, crl, "
                                               "or a reload that failed)"))
    p.add_argument("--set-command", metavar="COMMAND",
                   help="save COMMAND as the reload command (as ca init --broker-reload; '' removes it), then run "
                        "it. It is split into words and run without a shell, e.g. 'systemctl restart mosquitto' or "
                        "'pkill -HUP -F HQ_DIR/broker/mosquitto.pid -u mosquitto -x mosquitto'")
    p.set_defaults(func=_ca_reload_broker)

    node = sub.add_parser("node", help="node enrolment, bundles, revocation").add_subparsers(
        dest="node_command", required=True, metavar="STEP")
    p = pi(node.add_parser("keygen", help="(on the Pi) make the node's keys and enrolment request"))
    p.add_argument("--node-id", required=True)
    p.add_argument("--user", help="service user to own the files (needs root)")
    p.add_argument("--hq-key-id", help="pin HQ's signing key fingerprint now (16+ hex digits)")
    p.add_argument("--out", type=Path, help="also write the request here (e.g. a USB stick)")
    record_config(p)
    p.set_defaults(func=_node_keygen)
    p = hq(node.add_parser("enroll", help="(at HQ) sign the node's CSR and register it"))
    p.add_argument("request", type=Path)
    p.add_argument("--site", required=True)
    p.add_argument("--camera", default="cam0")
    p.add_argument("--lane")
    p.add_argument("--fingerprint", help="the request fingerprint the Pi printed; refused if different")
    p.set_defaults(func=_node_enroll)
    p = hq(node.add_parser("bundle", help="(at HQ) write the node's signed provisioning bundle"))
    p.add_argument("node_id")
    p.add_argument("--out", type=Path)
    p.add_argument("--hours", type=float, help="validity (default from ca init)")
    p.set_defaults(func=_node_bundle)
    p = pi(node.add_parser("install", help="(on the Pi) verify the bundle and put files in place"))
    p.add_argument("bundle", type=Path)
    p.add_argument("--hq-key-id", help="HQ signing key fingerprint (16+ hex digits), unless pinned at keygen")
    p.add_argument("--config", type=Path, default=_default_node_config(),
                   help=f"node.toml to write (default {_default_node_config()}, where alpr-node reads it)")
    p.add_argument("--extra", type=Path, help="the site's local TOML sections ([source], [camera], [[triggers]], "
                   "[pipeline], ...): they replace all the local sections of the existing node.toml (without "
                   "--extra those are kept)")
    p.set_defaults(func=_node_install)
    p = pi(node.add_parser("rotate-key", help="(on the Pi) new signing key and a rotation request"))
    p.add_argument("--out", type=Path)
    p.add_argument("--replace", action="store_true",
                   help="discard a rotated key still waiting for HQ's bundle and make a new one")
    record_config(p)
    p.set_defaults(func=_node_rotate_key)
    p = hq(node.add_parser("add-key", help="(at HQ) enrol a rotated signing key"))
    p.add_argument("request", type=Path)
    p.add_argument("--grace-hours", type=float, default=24.0,
                   help="the old key stays valid for messages made this long from now (default 24)")
    p.set_defaults(func=_node_add_key)
    hq(node.add_parser("list", help="enrolled nodes"), actor=False).set_defaults(func=_node_list)
    p = hq(node.add_parser("revoke", help="revoke a node: registry, CRL, broker"))
    p.add_argument("node_id")
    p.add_argument("--reason", required=True)
    p.add_argument("--no-reload", action="store_true", help="do not run the broker reload command")
    p.set_defaults(func=_node_revoke)
    p = hq(sub.add_parser("audit", help="the provisioning audit trail"), actor=False)
    p.add_argument("--node", help="only this node")
    p.set_defaults(func=_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: errors print `alpr-provision: error: ...` and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ProvisioningError, TransportError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"alpr-provision: error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:  # the registry, where provisioning did not turn it into a StateError
        if args.debug:
            raise
        print(f"alpr-provision: error: HQ's node registry (registry.db): {exc}; if it is a matter of rights, "
              "run alpr-provision with sudo (HQ's keys and registry are root's)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
