"""Evidence packages: the held reads of a case, exported for portable media and verifiable offline.

Layout of a package directory (format "alpr-evidence-v1"):

    manifest.json            case, who, when, release request, HQ public key, SHA-256 of every file
    manifest.sig             Ed25519 signature of HQ (data_dir/keys/hq-sign.key) over manifest.json, hex
    reads.json               the reads' fields as HQ decoded them
    reads/<id>/header.cbor   the node's exact header bytes
    reads/<id>/payload.cbor  the node's exact payload bytes (includes the crop)
    reads/<id>/signature.bin the node's Ed25519 signature over ["alpr-sig-v1", header, payload]
    reads/<id>/crop.jpg      the crop, extracted (also inside payload.cbor)
    nodes/<node>.json        the node's public keys from the registry
    access-log.json          every access-log entry for this case, up to and including this export
    release.json             the approved release request this export fulfils
    holds.json               the holds that kept these reads

The reads are exactly those the release approval recorded (release.json `read_ids`). Folders
are created 0700 and files 0600, then made 0400: a package holds plates and crops.

One approval, one package: the export claims the release request before it writes anything
(hq.releases.claim_export; a second export of the same request is refused and logged) and
marks it exported, in one transaction with the `export-written` log row, only if it still
holds that claim. An export that fails for any reason removes what it wrote, gives the claim
back (the request is approved again, to be retried) and logs `export-failed`.

`verify_package` needs nothing but the directory and HQ's public key, obtained by another
channel. Without that key a package can only vouch for itself: anyone can make a new "HQ"
key and a new "node" key, sign made-up reads with the one and the manifest (which names the
node keys in nodes/*.json) with the other, and every check passes. Such a result is
consistent, not verified (`PackageCheck.ok` is False; `alpr-hq evidence verify` says
UNVERIFIED and exits 3). The node keys are only as good as the HQ signature over them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq import releases, retention
from hq.access import Access, Actor, Grant
from hq.errors import HQError, PolicyError
from hq.files import private_dir, write_private
from hq.store import ReadStore
from transport import cbor
from transport.envelope import signed_bytes
from transport.keys import key_id, raw_public

FORMAT = "alpr-evidence-v1"


@dataclass(frozen=True)
class ExportResult:
    """Where the package is, what it holds, and the manifest's hash (written into the release request)."""

    directory: Path
    reads: int
    manifest_sha256: str


def _write(root: Path, rel: str, data: bytes, files: dict[str, str], written: list[Path]) -> None:
    path = root / rel
    private_dir(path.parent)
    written.append(path)  # before writing: a file half written is removed too
    write_private(path, data)
    files[rel] = hashlib.sha256(data).hexdigest()


def _remove(out: Path, written: list[Path], out_existed: bool) -> None:
    """Remove the files an export wrote and the folders it made under `out` (and `out` itself
    if the export created it): a failed or losing export leaves no package behind."""
    for path in written:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    folders = {parent for path in written for parent in path.parents if out in parent.parents}
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: nothing but what this export wrote is removed
    if not out_existed:
        with contextlib.suppress(OSError):
            out.rmdir()


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()


def export(store: ReadStore, access: Access, actor: Actor, *, case_no: str, release_id: int, out: Path,
           sign_key: ed25519.Ed25519PrivateKey, registry: Any) -> ExportResult:
    """Write the package for an approved release request: exactly the reads its approval
    recorded, or nothing (a read no longer held or no longer stored is named). Every refusal
    is logged. Folders are 0700, files 0600 while written and 0400 after.

    One approval allows one export: the request is claimed (approved -> exporting) as the last
    check before anything is written, so an overlapping export of the same request is refused,
    logged, and writes nothing. The request becomes exported, with the `export-written` log
    row, only after the package is complete; if that fails, or anything before it does, the
    package is removed, the claim given back (approved again) and `export-failed` logged."""
    out = Path(out)
    case_no = (case_no or "").strip()
    claimed_ns: int | None = None

    def problem() -> HQError | None:
        nonlocal claimed_ns
        if out.exists() and not out.is_dir():
            return PolicyError(f"{out}: exists and is not a directory")
        if out.exists() and any(out.iterdir()):
            return PolicyError(f"{out}: output directory is not empty")
        now = access.clock()
        refusal = releases.approval_problem(store, release_id, case_no, now_ns=now)
        if refusal is not None:
            return refusal
        approved = releases.get(store, release_id).read_ids or ()
        held = set(retention.held_read_ids(store, case_no))
        stored = {r[0] for r in store.db.rows(
            f"SELECT id FROM reads WHERE id IN ({','.join('?' * len(approved))})", list(approved))} if approved else set()
        gone = [f"read {i} is no longer in the store" if i not in stored
                else f"read {i} is no longer under an active hold for case {case_no}"
                for i in approved if i not in held or i not in stored]
        if gone:
            return PolicyError(f"release request {release_id} approved reads {list(approved)}, but "
                               + "; ".join(gone) + ": nothing exported (the package must be exactly what was "
                               "approved; file a new request)")
        # Last: the claim that makes this the request's only export (an overlapping export of
        # it passed the checks above too, but only one of them gets the claim).
        if not releases.claim_export(store, release_id, now):
            return releases.claim_problem(store, release_id)
        claimed_ns = now
        return None

    def give_back_claim() -> None:
        if claimed_ns is not None:
            with contextlib.suppress(Exception):  # else it lapses (EXPORT_CLAIM_STALE_NS); the cause is raised
                releases.release_export_claim(store, release_id, claimed_ns)

    filed = releases.find(store, release_id)
    try:
        grant = access.authorize(actor, "export", purpose=filed.purpose if filed else f"release request {release_id}",
                                 case_no=case_no, query={"release": release_id, "reads": list(filed.read_ids or ())
                                                         if filed else [], "out": str(out)}, check=problem)
    except BaseException:
        give_back_claim()  # claimed, but the grant could not be logged: nothing may be written
        raise
    assert claimed_ns is not None  # problem() returned None: it claimed the request
    out_existed = out.exists()
    written: list[Path] = []
    try:
        req = replace(releases.get(store, release_id), status="approved", exported_ns=None)  # as approved
        result = _write_package(store, access, actor, grant, req, out, sign_key, registry, written)
        with store.db.transaction():
            if not releases.mark_exported(store, release_id, result.manifest_sha256, access.clock(),
                                          claimed_ns=claimed_ns):
                raise PolicyError(
                    f"release request {release_id}: this export's claim on it lapsed and another export took it "
                    f"over ({releases.get(store, release_id).status}); one approval allows one export: this package "
                    f"at {out} is removed, nothing exported by this run")
            access.record(grant, "export-written", detail=f"manifest sha256 {result.manifest_sha256}")
    except BaseException as exc:
        _remove(out, written, out_existed)
        give_back_claim()
        with contextlib.suppress(Exception):  # the cause is raised either way
            access.record(grant, "export-failed",
                          detail=f"{type(exc).__name__}: {exc}; files written by this export removed, "
                                 f"release request {release_id} not marked exported")
        raise
    return result


def _write_package(store: ReadStore, access: Access, actor: Actor, grant: Grant, req: releases.ReleaseRequest,
                   out: Path, sign_key: ed25519.Ed25519PrivateKey, registry: Any,
                   written: list[Path]) -> ExportResult:
    """Write the package of `req` (claimed for this export) into `out`; every path written
    goes to `written` first. Files are made 0400 at the end."""
    case_no, release_id = req.case_no, req.id
    read_ids = list(req.read_ids or ())
    files: dict[str, str] = {}
    private_dir(out)
    reads_doc, node_ids = [], set()
    for read_id in read_ids:
        stored = store.read(read_id)
        base = f"reads/{read_id}"
        _write(out, f"{base}/header.cbor", stored.header, files, written)
        _write(out, f"{base}/payload.cbor", stored.payload, files, written)
        _write(out, f"{base}/signature.bin", stored.signature, files, written)
        crop = stored.crop_jpeg()
        if crop:
            _write(out, f"{base}/crop.jpg", crop, files, written)
        reads_doc.append(asdict(stored.row))
        node_ids.add(stored.row.node_id)
    _write(out, "reads.json", _json(reads_doc), files, written)
    for node_id in sorted(node_ids):
        keys = [{"key_id": k.key_id, "public_raw": raw_public(k.public).hex(), "valid_from_ns": k.valid_from_ns,
                 "retired_ns": k.retired_ns} for k in registry.keys(node_id)]
        _write(out, f"nodes/{node_id}.json", _json({"node_id": node_id, "keys": keys}), files, written)
    _write(out, "holds.json", _json([asdict(h) for h in retention.holds(store, case_no)]), files, written)
    _write(out, "release.json", _json(asdict(req)), files, written)
    log_entries = [asdict(e) for e in access.log.entries(case_no=case_no) if e.id <= grant.log_id]
    _write(out, "access-log.json", _json(log_entries), files, written)
    public = sign_key.public_key()
    manifest = {"format": FORMAT, "case": case_no, "created_ns": access.clock(), "created_by": actor.name,
                "release_request": release_id, "reads": read_ids, "hq_public_key": raw_public(public).hex(),
                "hq_key_id": key_id(public), "files": dict(sorted(files.items()))}
    manifest_bytes = _json(manifest)
    for name, data in (("manifest.json", manifest_bytes),
                       ("manifest.sig", (sign_key.sign(manifest_bytes).hex() + "\n").encode())):
        written.append(out / name)
        write_private(out / name, data)
    for path in written:
        os.chmod(path, 0o400)  # evidence: nobody, the owner included, should change it by accident
    return ExportResult(out, len(read_ids), hashlib.sha256(manifest_bytes).hexdigest())


@dataclass(frozen=True)
class PackageCheck:
    """The outcome of verifying a package: problems, what was checked, and whether HQ's
    signature was checked against a key the caller trusts (not the one the package carries)."""

    problems: tuple[str, ...]
    reads_checked: int
    hq_key_id: str
    hq_key_trusted: bool = False

    @property
    def intact(self) -> bool:
        """No problem found: the package agrees with the keys it was checked with. Without a
        trusted HQ key those are the package's own, so this alone proves nothing."""
        return not self.problems

    @property
    def ok(self) -> bool:
        """Verified: intact, and HQ's signature checked against the trusted HQ key (which
        vouches for the node keys in the package, and so for the reads)."""
        return self.intact and self.hq_key_trusted


def verify_package(directory: Path, trusted_hq_key: ed25519.Ed25519PublicKey | None = None) -> PackageCheck:
    """Check a package offline: HQ's signature on the manifest, every file's hash, every read's
    node signature (with the node keys in the package), header/payload binding, crops.

    A package is evidence handed to others, so anything in it may have been altered: each
    malformed file or field becomes a problem naming it, and the remaining checks still run.
    Only with `trusted_hq_key` can the result be `ok`: the node keys come from the package,
    and only HQ's signature over the manifest (which hashes them) ties them to HQ.
    """
    root = Path(directory)
    problems: list[str] = []
    try:
        manifest_bytes = (root / "manifest.json").read_bytes()
        manifest = json.loads(manifest_bytes)
    except (OSError, ValueError) as exc:
        return PackageCheck((f"{root}: not an evidence package: manifest.json: {exc}",), 0, "")
    if not isinstance(manifest, dict):
        return PackageCheck((f"manifest.json: not a JSON object ({type(manifest).__name__})",), 0, "")
    if manifest.get("format") != FORMAT:
        return PackageCheck((f"manifest.json: format {manifest.get('format')!r} is not {FORMAT}",), 0, "")
    problems += _hq_signature_problems(root, manifest, manifest_bytes, trusted_hq_key)
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        problems.append("manifest.json: field files is not a map of file name to SHA-256; file hashes not checked")
        files = {}
    for rel, expected in files.items():
        path = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute() or not path.is_file():
            problems.append(f"{rel}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            problems.append(f"{rel}: SHA-256 differs from the manifest (file changed)")
    extra = sorted(rel for p in root.rglob("*") if p.is_file()
                   and (rel := p.relative_to(root).as_posix()) not in files
                   and rel not in ("manifest.json", "manifest.sig"))
    problems += [f"{rel}: not in the manifest (file added)" for rel in extra]
    node_keys = _node_keys(root, problems)
    read_ids = manifest.get("reads", [])
    if not isinstance(read_ids, list):
        problems.append("manifest.json: field reads is not a list of read ids; no read checked")
        read_ids = []
    checked = 0
    for read_id in read_ids:
        if isinstance(read_id, bool) or not isinstance(read_id, int):
            problems.append(f"manifest.json: field reads: {read_id!r} is not a read id")
            continue
        if _read_problems(root, read_id, node_keys, problems):
            checked += 1
    hq_key_id = manifest.get("hq_key_id", "")
    return PackageCheck(tuple(problems), checked, hq_key_id if isinstance(hq_key_id, str) else "",
                        hq_key_trusted=trusted_hq_key is not None)


def _hq_signature_problems(root: Path, manifest: dict[str, Any], manifest_bytes: bytes,
                           trusted: ed25519.Ed25519PublicKey | None) -> list[str]:
    """Problems with HQ's signature over manifest.json: checked with the key in the manifest,
    which must be the trusted one when one is given (else the trusted key alone is used)."""
    problems: list[str] = []
    public = None
    raw = manifest.get("hq_public_key")
    if raw is None:
        problems.append("manifest.json: field hq_public_key missing")
    else:
        try:
            public = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(raw))
        except (TypeError, ValueError) as exc:
            problems.append(f"manifest.json: field hq_public_key is not an Ed25519 public key in hex ({exc})")
    if public is not None and trusted is not None and raw_public(trusted) != raw_public(public):
        problems.append("manifest.json: signed with a key that is not the trusted HQ key")
    verifier = public or trusted
    if verifier is None:
        problems.append("manifest.sig: not checked (no HQ public key in the manifest; give --hq-key)")
        return problems
    try:
        signature = bytes.fromhex((root / "manifest.sig").read_text().strip())
    except (OSError, ValueError) as exc:
        problems.append(f"manifest.sig: unreadable ({exc})")
        return problems
    try:
        verifier.verify(signature, manifest_bytes)
    except InvalidSignature:
        problems.append("manifest.sig: HQ signature does not verify (manifest edited or not from HQ)")
    return problems


def _node_keys(root: Path, problems: list[str]) -> dict[tuple[str, str], ed25519.Ed25519PublicKey]:
    """The node public keys in nodes/*.json, by (node id, key id); malformed files and keys go to `problems`."""
    node_keys: dict[tuple[str, str], ed25519.Ed25519PublicKey] = {}
    for path in sorted((root / "nodes").glob("*.json")):
        rel = path.relative_to(root).as_posix()
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            problems.append(f"{rel}: not valid JSON ({exc})")
            continue
        if not isinstance(doc, dict):
            problems.append(f"{rel}: not a JSON object ({type(doc).__name__})")
            continue
        node_id, keys = doc.get("node_id"), doc.get("keys")
        if not isinstance(node_id, str):
            problems.append(f"{rel}: field node_id missing or not text")
            continue
        if not isinstance(keys, list):
            problems.append(f"{rel}: field keys missing or not a list")
            continue
        for i, k in enumerate(keys):
            if not isinstance(k, dict) or not isinstance(k.get("key_id"), str):
                problems.append(f"{rel}: keys[{i}]: field key_id missing or not text")
                continue
            try:
                public = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(k["public_raw"]))
            except KeyError:
                problems.append(f"{rel}: keys[{i}]: field public_raw missing")
                continue
            except (TypeError, ValueError) as exc:
                problems.append(f"{rel}: keys[{i}]: field public_raw is not an Ed25519 public key in hex ({exc})")
                continue
            node_keys[(node_id, k["key_id"])] = public
    return node_keys


def _read_problems(root: Path, read_id: int, node_keys: dict[tuple[str, str], ed25519.Ed25519PublicKey],
                   problems: list[str]) -> bool:
    """Check one read's files against its node's signature; False if it could not be checked."""
    base = root / "reads" / str(read_id)
    rel = f"reads/{read_id}"
    try:
        header_bytes = (base / "header.cbor").read_bytes()
        payload_bytes = (base / "payload.cbor").read_bytes()
        sig = (base / "signature.bin").read_bytes()
        header, payload = cbor.loads(header_bytes), cbor.loads(payload_bytes)
    except (OSError, ValueError) as exc:
        problems.append(f"read {read_id}: unreadable ({exc})")
        return False
    decoded = True
    for name, value in (("header.cbor", header), ("payload.cbor", payload)):
        if not isinstance(value, dict):
            problems.append(f"{rel}/{name}: not a CBOR map ({type(value).__name__})")
            decoded = False
    if not decoded:
        return False
    node, sk = header.get("node"), header.get("sk")
    if not isinstance(node, str) or not isinstance(sk, str):
        problems.append(f"{rel}/header.cbor: fields node and sk missing or not text")
        return False
    key = node_keys.get((node, sk))
    if key is None:
        problems.append(f"read {read_id}: no public key for node {node} key {sk}")
        return False
    try:
        key.verify(sig, signed_bytes(header_bytes, payload_bytes))
    except InvalidSignature:
        problems.append(f"read {read_id}: node signature does not verify")
        return False
    for name in ("node", "seq", "kind"):
        if payload.get(name) != header.get(name):
            problems.append(f"read {read_id}: payload field {name} does not match the header")
    crop_path = base / "crop.jpg"
    if crop_path.exists() and crop_path.read_bytes() != payload.get("crop"):
        problems.append(f"read {read_id}: crop.jpg is not the crop the node signed")
    return True
