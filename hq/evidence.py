"""Evidence packages: the held reads of a case, exported for portable media and verifiable offline.

Layout of a package directory (format "alpr-evidence-v1", format_revision 2; docs/records.md
"Evidence package" describes every field):

    README.txt               what the package is, for whom, who released and exported it, how to verify it
    manifest.json            case, release request, approver, exporter, time, access-log head,
                             HQ public key, SHA-256 of every other file
    manifest.sig             Ed25519 signature of HQ (data_dir/keys/hq-sign.key) over manifest.json, hex
    reads.json               each read as its node signed it (decoded from payload.cbor), plus HQ's receipt time
    reads/<id>/header.cbor   the node's exact header bytes
    reads/<id>/payload.cbor  the node's exact payload bytes (includes the crop)
    reads/<id>/signature.bin the node's Ed25519 signature over ["alpr-sig-v1", header, payload]
    reads/<id>/crop.jpg      the crop, extracted (also inside payload.cbor)
    nodes/<node>.json        the node's registry record (status, revocation) and public keys
    nodes/<node>/<key id>.certificate.pem   the chain the CA issued at enrolment, naming that key
    nodes/<node>/<key id>.rotation.json     the rotation request that key was added by, signed by
                             it and the key it replaced (transport.provenance; none for a node
                             enrolled before HQ kept them)
    access-log.json          the access-log entries for this case or naming these reads, up to this export
    release.json             the approved release request this export fulfils
    holds.json               the holds that kept these reads

The reads are exactly those the release approval recorded (release.json `read_ids`), and the
package discloses nothing else: holds.json and access-log.json are limited to the approved reads
(other reads' ids and other plates are redacted). reads.json is made from the signed payloads,
never from HQ's database columns, and `verify_package` compares the two. Folders are created
0700 and files 0600, then made 0400: a package holds plates and crops.

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
UNVERIFIED and exits 3). Which key is a node's rests on HQ's signature over nodes/*.json, and,
where the package carries the keys' proofs, also on the CA that enrolled the node: given the CA
certificate (obtained separately, as HQ's key is), `verify_package` follows each read's key back
through its rotations to the certificate the CA issued for that node and key.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq import plates, releases, retention
from hq.access import Access, Actor, Grant
from hq.accesslog import AccessLog, Entry, entry_hash
from hq.errors import HQError, PolicyError
from hq.files import private_dir, write_private
from hq.store import ReadStore
from transport import cbor, provenance
from transport.envelope import signed_bytes
from transport.keys import key_id, raw_public
from transport.payload import SCALE

FORMAT = "alpr-evidence-v1"
# Revision 2 of the layout: reads.json from the signed payloads, node status, README.txt,
# limited holds/access log. A package without it was written before and is checked with the
# files it has (its missing parts are warnings, not failures).
FORMAT_REVISION = 2
REQUIRED_FILES = ("README.txt", "reads.json", "release.json", "holds.json", "access-log.json")
REDACTED = "[redacted]"


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
           sign_key: ed25519.Ed25519PrivateKey, registry: Any, agency_name: str | None = None) -> ExportResult:
    """Write the package for an approved release request: exactly the reads its approval
    recorded, or nothing (a read no longer held or no longer stored is named). Every refusal
    is logged. Folders are 0700, files 0600 while written and 0400 after. `agency_name` (the
    agency running HQ) goes into README.txt and the manifest when given.

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
        result = _write_package(store, access, actor, grant, req, out, sign_key, registry, written,
                                agency_name=agency_name)
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


def iso_utc(t_ns: Any) -> str | None:
    """UTC nanoseconds as ISO 8601 with all nine digits and `Z` (2026-12-01T22:07:03.383866297Z);
    None for anything that is not such a time. Integer arithmetic: a float would lose the ns."""
    if isinstance(t_ns, bool) or not isinstance(t_ns, int) or not 0 <= t_ns < 2**63:
        return None
    seconds, ns = divmod(t_ns, 10**9)
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


def _fraction(units: Any) -> float | None:
    """A confidence in 1/10000 (as signed) as a fraction 0..1; None if it is not an integer."""
    if isinstance(units, bool) or not isinstance(units, int):
        return None
    return units / SCALE


def _alternatives(alts: Any) -> Any:
    """The signed alternates [[plate, units], ...] as objects with both units and fraction; a
    value of another shape is passed through as it is, so that verify still compares it."""
    if not isinstance(alts, list) or not all(isinstance(a, list) and len(a) == 2 for a in alts):
        return alts
    return [{"plate": a[0], "conf_units": a[1], "confidence": _fraction(a[1])} for a in alts]


def signed_fields(read_id: int, header: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """A read's reads.json entry as it follows from the node's signed header and payload: the
    export writes it and `verify_package` recomputes it from payload.cbor and compares every
    key. Confidences are given both as signed (`*_units`, 1/10000) and as a fraction 0..1;
    times as signed (UTC ns) and as ISO 8601 UTC."""
    crop = payload.get("crop")
    has_crop = isinstance(crop, bytes) and len(crop) > 0
    return {
        "id": read_id,
        "node_id": payload.get("node"),
        "seq": payload.get("seq"),
        "kind": payload.get("kind"),
        "plate": payload.get("plate"),
        "confidence": _fraction(payload.get("conf")),
        "conf_units": payload.get("conf"),
        "char_conf_units": payload.get("char_conf"),
        "alternatives": _alternatives(payload.get("alts")),
        "region": payload.get("region"),
        "region_conf_units": payload.get("region_conf"),
        "capture_ns": payload.get("t_ns"),
        "capture_utc": iso_utc(payload.get("t_ns")),
        "clock": payload.get("clock"),
        "site_id": payload.get("site"),
        "camera_id": payload.get("camera"),
        "direction": payload.get("dir"),
        "lane": payload.get("lane"),
        "trigger": payload.get("trigger"),
        "trigger_id": payload.get("trigger_id"),
        "box": payload.get("box"),
        "models": payload.get("models"),
        "hotlist": payload.get("hotlist"),
        "signer_key_id": header.get("sk"),
        "crop": f"reads/{read_id}/crop.jpg" if has_crop else None,
        "crop_sha256": hashlib.sha256(crop).hexdigest() if has_crop else None,
    }


def _decode_stored(read_id: int, header_bytes: bytes, payload_bytes: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored header and payload of a read as maps; PolicyError if the store holds anything else."""
    try:
        header, payload = cbor.loads(header_bytes), cbor.loads(payload_bytes)
    except ValueError as exc:
        raise PolicyError(f"read {read_id}: its stored header or payload is not valid CBOR ({exc}): HQ's store "
                          "is damaged; nothing exported") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise PolicyError(f"read {read_id}: its stored header or payload is not a CBOR map: HQ's store is "
                          "damaged; nothing exported")
    return header, payload


# A node id that can name a file and folder in a package (nodes/<node>.json, nodes/<node>/).
_NODE_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_PROOF_SUFFIX = {provenance.CERTIFICATE: "certificate.pem", provenance.ROTATION: "rotation.json"}
_PROOF_KIND = {suffix: kind for kind, suffix in _PROOF_SUFFIX.items()}
_PROOF_FILE = re.compile(rf"nodes/({_NODE_NAME})/([0-9a-f]{{16}})\.({'|'.join(map(re.escape, _PROOF_KIND))})")


def proof_file(node_id: str, kid: str, kind: str) -> str:
    """Where a package keeps a proof of a node's key (nodes/<node>/<key id>.<kind suffix>)."""
    if not re.fullmatch(r"[0-9a-f]{16}", kid):
        raise PolicyError(f"node {node_id}: key id {kid!r} in the registry's proofs cannot name a file: "
                          "HQ's registry is damaged; nothing exported")
    return f"nodes/{node_id}/{kid}.{_PROOF_SUFFIX[kind]}"


def _node_doc(registry: Any, node_id: str) -> dict[str, Any]:
    """nodes/<node>.json: the registry's record of the node (status, revocation and its reason)
    and its public keys with their validity windows, so a verifier can judge each read's time."""
    from transport.registry import RegistryError

    try:
        record = registry.node(node_id)
    except RegistryError as exc:
        raise PolicyError(f"node {node_id}: not in the node registry ({exc}): its reads could not be verified; "
                          "nothing exported") from exc
    reason = None
    if record.status == "revoked":  # the registry keeps the reason only in its audit trail
        reason = next((detail for _t, _actor, action, node, detail in reversed(registry.audit_log())
                       if action == "revoke" and node == node_id), None)
    keys = [{"key_id": k.key_id, "public_raw": raw_public(k.public).hex(), "valid_from_ns": k.valid_from_ns,
             "valid_from_utc": iso_utc(k.valid_from_ns), "retired_ns": k.retired_ns,
             "retired_utc": iso_utc(k.retired_ns)} for k in registry.keys(node_id)]
    return {"node_id": node_id, "site_id": record.site_id, "status": record.status,
            "enrolled_ns": record.enrolled_ns, "enrolled_utc": iso_utc(record.enrolled_ns),
            "enrolled_by": record.enrolled_by, "revoked_ns": record.revoked_ns,
            "revoked_utc": iso_utc(record.revoked_ns), "revoked_by": record.revoked_by, "revoke_reason": reason,
            "keys": keys}


# Query keys of access-log rows that hold a plate or plate pattern, and those that hold free text.
_PLATE_KEYS = ("plate", "pattern", "add", "text", "matched_text")
_TEXT_KEYS = ("note", "reason", "why", "purpose")
# A plate as people write it in free text: letters and digits, maybe split by single spaces,
# dashes or tabs ("XYZ 789", "XYZ-789"), which hq.plates.normalize drops.
_WORD = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]+(?:[ \t-][A-Za-z0-9]+)*(?![A-Za-z0-9])")
_PIECE = re.compile(r"[A-Za-z0-9]+")


def _norm_plate(text: str) -> str:
    return plates.normalize(text)


class _Redactor:
    """Keeps holds.json and access-log.json within the approval: other reads' ids and plates
    other than the approved reads' are replaced with "[redacted]"; each changed row names its
    changed fields in `redacted`. Free text (purpose, detail, notes) is redacted for words that
    are the plate of a read in HQ's store."""

    def __init__(self, store: ReadStore, read_ids: set[int], plates: set[str]) -> None:
        self.store, self.read_ids, self.plates = store, read_ids, {_norm_plate(p) for p in plates}
        self._known: dict[str, bool] = {}

    def _stored_plate(self, word: str) -> bool:
        norm = _norm_plate(word)
        if norm not in self._known:
            self._known[norm] = self.store.db.value("SELECT 1 FROM reads WHERE plate_norm=? LIMIT 1", (norm,)) is not None
        return self._known[norm]

    def text(self, value: str) -> str:
        """Free text with the plates of other reads replaced, however they are split."""
        def swap(m: re.Match[str]) -> str:
            run = m.group(0)
            pieces = [(p.start(), p.end()) for p in _PIECE.finditer(run)]
            out, i = [], 0
            while i < len(pieces):
                # the longest run of pieces from here that is a plate of another read
                for j in range(len(pieces), i, -1):
                    candidate = run[pieces[i][0]:pieces[j - 1][1]]
                    norm = _norm_plate(candidate)
                    if 2 <= len(norm) <= plates.MAX_PLATE and norm not in self.plates and self._stored_plate(norm):
                        out.append(REDACTED)
                        break
                else:
                    j = i + 1
                    out.append(run[pieces[i][0]:pieces[i][1]])
                if j < len(pieces):
                    out.append(run[pieces[j - 1][1]:pieces[j][0]])  # the separator kept as written
                i = j
            return "".join(out)
        return _WORD.sub(swap, value)

    def query(self, query: Any, changed: list[str]) -> Any:
        """An access-log query (decoded JSON) limited to the approved reads and plates."""
        if not isinstance(query, dict):
            return query
        out = dict(query)
        for key, value in query.items():
            new = value
            other_plate = key in _PLATE_KEYS and isinstance(value, str) and _norm_plate(value) not in self.plates
            other_read = key in ("read", "alert") and isinstance(value, int) and value not in self.read_ids
            if other_plate or other_read:
                new = REDACTED
            elif key == "reads" and isinstance(value, list):
                new = [i for i in value if i in self.read_ids]
            elif key in _TEXT_KEYS and isinstance(value, str):
                new = self.text(value)
            if new != value:
                out[key] = new
                changed.append(f"query.{key}")
        return out


def _ids_named(query: Any) -> set[int]:
    """The read ids an access-log query names ({"read": N}, {"alert": N}, {"reads": [...]})."""
    if not isinstance(query, dict):
        return set()
    ids = [query.get("read"), query.get("alert")]
    if isinstance(query.get("reads"), list):
        ids += query["reads"]
    return {i for i in ids if isinstance(i, int) and not isinstance(i, bool)}


def _log_extract(store: ReadStore, grant: Grant, case_no: str, redactor: _Redactor) -> list[dict[str, Any]]:
    """The access-log rows up to this export's grant that carry the case number or name one of
    the exported reads (a view, a crop copy, a hold or search under another case), redacted to
    the approval. `hash` is the row's hash in HQ's log: it recomputes from the row as given
    only where nothing was redacted."""
    # The LIKE spares decoding the many rows (logins, searches) that name no read.
    rows = store.db.rows(f"SELECT {AccessLog.COLUMNS} FROM access_log WHERE id <= ? AND (case_no = ? OR "
                         "query LIKE '%\"read%' OR query LIKE '%\"alert\"%') ORDER BY id", (grant.log_id, case_no))
    extract = []
    for entry in (Entry(*r) for r in rows):
        try:
            query = json.loads(entry.query)
        except ValueError:
            query = None
        if entry.case_no != case_no and not _ids_named(query) & redactor.read_ids:
            continue
        doc = asdict(entry)
        doc["utc"] = iso_utc(entry.t_ns)
        changed: list[str] = []
        new_query = redactor.query(query, changed)
        if changed:
            doc["query"] = json.dumps(new_query, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
        for name in ("purpose", "detail"):
            text = redactor.text(doc[name])
            if text != doc[name]:
                doc[name] = text
                changed.append(name)
        if changed:
            doc["redacted"] = changed
        extract.append(doc)
    return extract


def _holds_doc(store: ReadStore, case_no: str, redactor: _Redactor) -> list[dict[str, Any]]:
    """The case's holds that kept approved reads, with only those reads (a hold of other reads
    only is left out: the approval did not release them)."""
    doc = []
    for hold in retention.holds(store, case_no):
        kept = [i for i in hold.read_ids if i in redactor.read_ids]
        if not kept:
            continue
        entry = asdict(hold)
        entry.update(read_ids=kept, created_utc=iso_utc(hold.created_ns), released_utc=iso_utc(hold.released_ns))
        changed = ["read_ids"] if len(kept) < len(hold.read_ids) else []
        reason = redactor.text(hold.reason)
        if reason != hold.reason:
            entry["reason"] = reason
            changed.append("reason")
        if changed:
            entry["redacted"] = changed
        doc.append(entry)
    return doc


def _log_head(store: ReadStore) -> str | None:
    """The access log's head as `audit verify` prints it (ID:HASH)."""
    head = store.db.one("SELECT last_id, last_hash FROM access_log_head WHERE k=1")
    return f"{int(head[0])}:{head[1]}" if head else None


def _readme(manifest: dict[str, Any], req: releases.ReleaseRequest, agency_name: str | None) -> bytes:
    """README.txt: the package explained for a court or a receiving agency."""
    reads = manifest["reads"]
    lines = [
        "ALPR EVIDENCE PACKAGE (alpr-evidence-v1)",
        "",
        f"Issued by:          {agency_name or '(agency name not configured)'}, ALPR HQ records system",
        f"Case:               {req.case_no}",
        f"Release request:    {req.id}, for {req.agency} (requested by {req.requester}); purpose: {req.purpose}",
        f"Approved by:        {req.reviewed_by} at {iso_utc(req.reviewed_ns)} (administrator; note: {req.review_note})",
        f"Exported by:        {manifest['created_by']} ({manifest['created_by_role']}) at {manifest['created_utc']}",
        f"Reads:              {len(reads)} (ids {', '.join(map(str, reads))})",
        f"Access log head:    {manifest['access_log_head']} (as `alpr-hq audit verify` prints it)",
        f"HQ signing key id:  {manifest['hq_key_id']}",
        "",
        "All times are UTC (ISO 8601, ending in Z; *_ns fields are nanoseconds since 1970-01-01 UTC).",
        "A read's time is the capturing node's clock; reads.json `clock` says whether that clock was",
        "synchronised (\"synced\") when the read was made.",
        "",
        "What is here: each read exactly as the roadside node signed it (reads/<id>/header.cbor,",
        "payload.cbor, signature.bin), its plate crop (crop.jpg), the reads decoded (reads.json), the",
        "nodes' registry records and public keys with their proofs (nodes/: the certificate the CA",
        "issued for each node at enrolment names its first key; each later key comes with a rotation",
        "request signed by the key it replaced), the approved release request (release.json),",
        "the holds that kept the reads (holds.json) and the access-log entries for this case or these",
        "reads (access-log.json). Other reads and plates are redacted from holds.json and",
        "access-log.json: the approval released these reads only.",
        "",
        "How to verify: obtain HQ's public signing key (hq-sign.pub) and its CA certificate (ca.pem)",
        "from the agency by another channel, then run",
        f"    alpr-hq evidence verify THIS_FOLDER --hq-key hq-sign.pub --ca-cert ca.pem --case {req.case_no} "
        f"--release {req.id}",
        "It prints OK and exits 0 only if HQ's signature, every file hash and every node signature hold,",
        "and says how many of the reads' node keys the CA's certificates attest.",
        "To verify by hand (no HQ software), follow \"Evidence package\" in docs/records.md and the",
        "signature format in docs/wire-format.md of the ALPR system's source.",
        "",
        "Limits: a node enrolled before HQ kept key proofs has none here, so its keys rest on HQ's",
        "registry alone; manifest.sig is made with HQ's online signing key, without an external timestamp.",
        "",
    ]
    return "\n".join(lines).encode()


def _write_package(store: ReadStore, access: Access, actor: Actor, grant: Grant, req: releases.ReleaseRequest,
                   out: Path, sign_key: ed25519.Ed25519PrivateKey, registry: Any,
                   written: list[Path], agency_name: str | None = None) -> ExportResult:
    """Write the package of `req` (claimed for this export) into `out`; every path written
    goes to `written` first. Files are made 0400 at the end."""
    case_no, release_id = req.case_no, req.id
    read_ids = list(req.read_ids or ())
    files: dict[str, str] = {}
    private_dir(out)
    reads_doc, node_ids, plates = [], set(), set()
    for read_id in read_ids:
        stored = store.read(read_id)
        # Everything about the read comes from the bytes its node signed, never from HQ's
        # index columns, which anyone who can write hq.db could have changed.
        header, payload = _decode_stored(read_id, stored.header, stored.payload)
        base = f"reads/{read_id}"
        _write(out, f"{base}/header.cbor", stored.header, files, written)
        _write(out, f"{base}/payload.cbor", stored.payload, files, written)
        _write(out, f"{base}/signature.bin", stored.signature, files, written)
        crop = payload.get("crop")
        if isinstance(crop, bytes) and crop:
            _write(out, f"{base}/crop.jpg", crop, files, written)
        entry = signed_fields(read_id, header, payload)
        # HQ's own record, not signed by the node: when ingest stored the read.
        entry.update(stored_ns=stored.row.stored_ns, stored_utc=iso_utc(stored.row.stored_ns))
        reads_doc.append(entry)
        node = header.get("node")
        if not isinstance(node, str) or not re.fullmatch(_NODE_NAME, node):
            raise PolicyError(f"read {read_id}: node id {node!r} in its stored header cannot name a file "
                              "(nodes/<node>.json): HQ's store is damaged; nothing exported")
        node_ids.add(node)
        if isinstance(payload.get("plate"), str):
            plates.add(payload["plate"])
    _write(out, "reads.json", _json(reads_doc), files, written)
    for node_id in sorted(node_ids):
        _write(out, f"nodes/{node_id}.json", _json(_node_doc(registry, node_id)), files, written)
        for proof in registry.proofs(node_id):
            _write(out, proof_file(node_id, proof.key_id, proof.kind), proof.document, files, written)
    redactor = _Redactor(store, set(read_ids), plates)
    _write(out, "holds.json", _json(_holds_doc(store, case_no, redactor)), files, written)
    _write(out, "release.json", _json(asdict(req)), files, written)
    _write(out, "access-log.json", _json(_log_extract(store, grant, case_no, redactor)), files, written)
    public = sign_key.public_key()
    created_ns = access.clock()
    manifest = {"format": FORMAT, "format_revision": FORMAT_REVISION, "case": case_no,
                "release_request": release_id, "agency": req.agency, "requester": req.requester,
                "approved_by": req.reviewed_by, "approved_ns": req.reviewed_ns, "hq_name": agency_name,
                "created_ns": created_ns, "created_utc": iso_utc(created_ns), "created_by": actor.name,
                "created_by_role": actor.role, "reads": read_ids, "access_log_head": _log_head(store),
                "hq_public_key": raw_public(public).hex(), "hq_key_id": key_id(public)}
    _write(out, "README.txt", _readme(manifest, req, agency_name), files, written)
    manifest["files"] = dict(sorted(files.items()))
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
    """The outcome of verifying a package: problems, warnings, what was checked, what the
    package says it is (`summary`), and whether HQ's signature was checked against a key the
    caller trusts (not the one the package carries)."""

    problems: tuple[str, ...]
    reads_checked: int
    hq_key_id: str
    hq_key_trusted: bool = False
    warnings: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)

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


@dataclass
class _NodeInfo:
    """A node as nodes/<node>.json states it: keys by key id with their windows, and its status."""

    keys: dict[str, tuple[ed25519.Ed25519PublicKey, Any, Any]] = field(default_factory=dict)
    status: Any = None
    revoked_ns: Any = None
    reason: Any = None


class _Package:
    """The package's plain files, found without following links: anything else is a problem,
    and only plain files are ever read (a link could point anywhere, a folder cannot be read)."""

    def __init__(self, root: Path, problems: list[str]) -> None:
        self.root = root
        self.files: set[str] = set()
        for folder, dirs, names in os.walk(root, followlinks=False):
            for name in sorted(dirs + names):
                path = Path(folder) / name
                rel = path.relative_to(root).as_posix()
                try:
                    mode = path.lstat().st_mode
                except OSError as exc:
                    problems.append(f"{rel}: unreadable ({exc})")
                    continue
                if stat.S_ISLNK(mode):
                    problems.append(f"{rel}: is a symbolic link (a package holds only plain files and folders; "
                                    "what it points to is not checked)")
                elif stat.S_ISREG(mode):
                    self.files.add(rel)
                elif not stat.S_ISDIR(mode):
                    problems.append(f"{rel}: not a regular file (a device, socket or pipe)")

    def read(self, rel: str) -> bytes:
        """A plain file of the package; OSError naming it if it is missing or anything else."""
        if rel not in self.files:
            path = self.root / rel
            what = "is a folder" if path.is_dir() and not path.is_symlink() else "missing or not a plain file"
            raise FileNotFoundError(f"{rel}: {what}")
        # O_NOFOLLOW: a link put in place since the walk is refused, not followed.
        fd = os.open(self.root / rel, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            return f.read()


def verify_package(directory: Path, trusted_hq_key: ed25519.Ed25519PublicKey | None = None, *,
                   expect_case: str | None = None, expect_release: int | None = None,
                   trusted_ca: x509.Certificate | None = None) -> PackageCheck:
    """Check a package offline: HQ's signature on the manifest, every file's hash, that no file
    was added (no links, no special files), every read's node signature (with the node keys in
    the package), header/payload binding (node, seq, kind, time), the signing key's validity at
    the read's time, the node's revocation, reads.json against the signed payloads, crops, the
    manifest's reads against the approval in release.json, and access-log entry hashes.
    `expect_case` / `expect_release`: the case and release request the package must be for.
    `trusted_ca`: the CA certificate, obtained separately, that the keys' proofs are checked
    against (else the one the proofs carry, which proves nothing; `_key_proof_problems`).

    A package is evidence handed to others, so anything in it may have been altered: each
    malformed file or field becomes a problem naming it, and the remaining checks still run.
    Warnings (a node clock that was not synchronised, a read made before its key was enrolled,
    a revoked node) do not fail the package. Only with `trusted_hq_key` can the result be `ok`:
    the node keys come from the package, and only HQ's signature over the manifest (which
    hashes them) ties them to HQ.
    """
    root = Path(directory)
    problems: list[str] = []
    warnings: list[str] = []
    if not root.is_dir():
        return PackageCheck((f"{root}: not an evidence package: not a folder",), 0, "")
    pkg = _Package(root, problems)
    try:
        manifest_bytes = pkg.read("manifest.json")
        manifest = json.loads(manifest_bytes)
    except (OSError, ValueError, RecursionError) as exc:
        return PackageCheck(tuple(problems) + (f"{root}: not an evidence package: manifest.json: {exc}",), 0, "")
    if not isinstance(manifest, dict):
        return PackageCheck((f"manifest.json: not a JSON object ({type(manifest).__name__})",), 0, "")
    if manifest.get("format") != FORMAT:
        return PackageCheck((f"manifest.json: format {manifest.get('format')!r} is not {FORMAT}",), 0, "")
    revision = manifest.get("format_revision")
    current = isinstance(revision, int) and not isinstance(revision, bool) and revision >= FORMAT_REVISION
    problems += _hq_signature_problems(pkg, manifest, manifest_bytes, trusted_hq_key)
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        problems.append("manifest.json: field files is not a map of file name to SHA-256; file hashes not checked")
        files = {}
    for rel, expected in files.items():
        if ".." in Path(rel).parts or Path(rel).is_absolute() or rel not in pkg.files:
            problems.append(f"{rel}: missing")
            continue
        try:
            data = pkg.read(rel)
        except OSError as exc:
            problems.append(f"{rel}: unreadable ({exc})")
            continue
        if hashlib.sha256(data).hexdigest() != expected:
            problems.append(f"{rel}: SHA-256 differs from the manifest (file changed)")
    extra = sorted(pkg.files - set(files) - {"manifest.json", "manifest.sig"})
    problems += [f"{rel}: not in the manifest (file added)" for rel in extra]
    for rel in REQUIRED_FILES:
        if rel not in files:
            if current:
                problems.append(f"{rel}: not in the package (manifest format_revision {revision} requires it)")
            else:
                warnings.append(f"{rel}: not in the package (written before format_revision {FORMAT_REVISION}); "
                                "what it would show is not checked")
    nodes = _node_infos(pkg, current, problems)
    read_ids = manifest.get("reads", [])
    if not isinstance(read_ids, list):
        problems.append("manifest.json: field reads is not a list of read ids; no read checked")
        read_ids = []
    release = _release_problems(pkg, manifest, read_ids, files, problems)
    reads_doc = _reads_doc(pkg, read_ids, files, problems)
    checked = 0
    used: set[tuple[str, str]] = set()
    for read_id in read_ids:
        if isinstance(read_id, bool) or not isinstance(read_id, int):
            problems.append(f"manifest.json: field reads: {read_id!r} is not a read id")
            continue
        if _read_problems(pkg, read_id, nodes, reads_doc, current, problems, warnings, used):
            checked += 1
    attested = _key_proof_problems(pkg, nodes, used, trusted_ca, problems, warnings)
    if "access-log.json" in files:
        _access_log_problems(pkg, problems, warnings)
    case, release_id = manifest.get("case"), manifest.get("release_request")
    if expect_case is not None and case != expect_case:
        problems.append(f"manifest.json: this package is for case {case!r}, not case {expect_case!r} (--case)")
    if expect_release is not None and release_id != expect_release:
        problems.append(f"manifest.json: this package is for release request {release_id!r}, not {expect_release} "
                        "(--release)")
    hq_key_id = manifest.get("hq_key_id", "")
    summary = {"case": case, "release_request": release_id,
               "agency": manifest.get("agency", release.get("agency")),
               "requester": manifest.get("requester", release.get("requester")),
               "approved_by": manifest.get("approved_by", release.get("reviewed_by")),
               "created_by": manifest.get("created_by"), "created_by_role": manifest.get("created_by_role"),
               "created_utc": iso_utc(manifest.get("created_ns")), "hq_name": manifest.get("hq_name"),
               "reads": read_ids, "access_log_head": manifest.get("access_log_head"),
               "node_keys": len(used), "node_keys_attested": attested,
               "ca": (_ca_name(trusted_ca) + " (--ca-cert)") if trusted_ca is not None else None}
    return PackageCheck(tuple(problems), checked, hq_key_id if isinstance(hq_key_id, str) else "",
                        hq_key_trusted=trusted_hq_key is not None, warnings=tuple(warnings), summary=summary)


def _hq_signature_problems(pkg: _Package, manifest: dict[str, Any], manifest_bytes: bytes,
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
        signature = bytes.fromhex(pkg.read("manifest.sig").decode().strip())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        problems.append(f"manifest.sig: unreadable ({exc})")
        return problems
    try:
        verifier.verify(signature, manifest_bytes)
    except InvalidSignature:
        problems.append("manifest.sig: HQ signature does not verify (manifest edited or not from HQ)")
    return problems


def _json_file(pkg: _Package, rel: str, kind: type, problems: list[str]) -> Any:
    """A JSON file of the package of the given type, or None (the problem recorded)."""
    try:
        doc = json.loads(pkg.read(rel))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than json can
        problems.append(f"{rel}: not valid JSON ({exc})")
        return None
    if not isinstance(doc, kind):
        problems.append(f"{rel}: not a JSON {'object' if kind is dict else 'list'} ({type(doc).__name__})")
        return None
    return doc


def _node_infos(pkg: _Package, current: bool, problems: list[str]) -> dict[str, _NodeInfo]:
    """The nodes in nodes/*.json with their keys and status; malformed files and keys go to `problems`."""
    nodes: dict[str, _NodeInfo] = {}
    for rel in sorted(f for f in pkg.files if f.startswith("nodes/") and f.endswith(".json") and f.count("/") == 1):
        doc = _json_file(pkg, rel, dict, problems)
        if doc is None:
            continue
        node_id, keys = doc.get("node_id"), doc.get("keys")
        if not isinstance(node_id, str):
            problems.append(f"{rel}: field node_id missing or not text")
            continue
        if rel != f"nodes/{node_id}.json":
            problems.append(f"{rel}: field node_id {node_id!r} is not the file's name")
        if not isinstance(keys, list):
            problems.append(f"{rel}: field keys missing or not a list")
            continue
        info = nodes.setdefault(node_id, _NodeInfo())
        info.status, info.revoked_ns, info.reason = doc.get("status"), doc.get("revoked_ns"), doc.get("revoke_reason")
        if current and info.status not in ("active", "revoked"):
            problems.append(f"{rel}: field status {info.status!r} is not active or revoked")
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
            if key_id(public) != k["key_id"]:
                problems.append(f"{rel}: keys[{i}]: key_id {k['key_id']} is not the id of its public key "
                                f"({key_id(public)})")
                continue
            if current and not _is_time(k.get("valid_from_ns")):
                problems.append(f"{rel}: keys[{i}]: field valid_from_ns missing or not a time in ns")
            if current and k.get("retired_ns") is not None and not _is_time(k.get("retired_ns")):
                problems.append(f"{rel}: keys[{i}]: field retired_ns is not a time in ns")
            info.keys[k["key_id"]] = (public, k.get("valid_from_ns"), k.get("retired_ns"))
    return nodes


def _is_time(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _release_problems(pkg: _Package, manifest: dict[str, Any], read_ids: list[Any], files: dict[str, str],
                      problems: list[str]) -> dict[str, Any]:
    """Check release.json against the manifest: same request and case, approved by an
    administrator other than the one who filed it, and exactly the approved reads exported."""
    if "release.json" not in files:
        return {}
    release = _json_file(pkg, "release.json", dict, problems)
    if release is None:
        return {}
    if release.get("id") != manifest.get("release_request"):
        problems.append(f"release.json: request {release.get('id')!r} is not the manifest's release_request "
                        f"{manifest.get('release_request')!r}")
    if release.get("case_no") != manifest.get("case"):
        problems.append(f"release.json: case {release.get('case_no')!r} is not the manifest's case "
                        f"{manifest.get('case')!r}")
    if release.get("status") != "approved" or not release.get("reviewed_by"):
        problems.append(f"release.json: status {release.get('status')!r}, reviewed by {release.get('reviewed_by')!r}: "
                        "not an approved request")
    elif release.get("reviewed_by") == release.get("requested_by"):
        problems.append(f"release.json: approved by {release.get('reviewed_by')}, who filed it: approval needs "
                        "another administrator")
    approved = release.get("read_ids")
    if not isinstance(approved, list) or sorted(map(str, approved)) != sorted(map(str, read_ids)):
        problems.append(f"manifest.json: reads {read_ids} are not the reads the release approved "
                        f"(release.json read_ids {approved})")
    if "approved_by" in manifest and manifest["approved_by"] != release.get("reviewed_by"):
        problems.append(f"manifest.json: approved_by {manifest['approved_by']!r} is not release.json reviewed_by "
                        f"{release.get('reviewed_by')!r}")
    return release


def _reads_doc(pkg: _Package, read_ids: list[Any], files: dict[str, str],
               problems: list[str]) -> dict[int, dict[str, Any]] | None:
    """reads.json by read id (None if absent or unreadable); its reads must be the manifest's."""
    if "reads.json" not in files:
        return None
    doc = _json_file(pkg, "reads.json", list, problems)
    if doc is None:
        return {}
    by_id: dict[int, dict[str, Any]] = {}
    for i, entry in enumerate(doc):
        if not isinstance(entry, dict) or isinstance(entry.get("id"), bool) or not isinstance(entry.get("id"), int):
            problems.append(f"reads.json: [{i}]: not an object with an integer id")
            continue
        if entry["id"] in by_id:
            problems.append(f"reads.json: read {entry['id']} is listed twice")
        by_id[entry["id"]] = entry
    listed = {i for i in read_ids if isinstance(i, int)}
    for read_id in sorted(set(by_id) - listed):
        problems.append(f"reads.json: read {read_id} is not in the manifest's reads")
    return by_id


def _read_problems(pkg: _Package, read_id: int, nodes: dict[str, _NodeInfo],
                   reads_doc: dict[int, dict[str, Any]] | None, current: bool,
                   problems: list[str], warnings: list[str], used: set[tuple[str, str]]) -> bool:
    """Check one read's files against its node's signature, key and status, and its reads.json
    entry against the signed payload; False if it could not be checked. The (node, key id)
    whose signature verified goes to `used`."""
    rel = f"reads/{read_id}"
    try:
        header_bytes = pkg.read(f"{rel}/header.cbor")
        payload_bytes = pkg.read(f"{rel}/payload.cbor")
        sig = pkg.read(f"{rel}/signature.bin")
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
    info = nodes.get(node)
    key = info.keys.get(sk) if info else None
    if key is None:
        problems.append(f"read {read_id}: no public key for node {node} key {sk}")
        return False
    try:
        key[0].verify(sig, signed_bytes(header_bytes, payload_bytes))
    except InvalidSignature:
        problems.append(f"read {read_id}: node signature does not verify")
        return False
    used.add((node, sk))
    for name in ("node", "seq", "kind", "t_ns"):
        if payload.get(name) != header.get(name):
            problems.append(f"read {read_id}: payload field {name} ({payload.get(name)!r}) does not match the header "
                            f"({header.get(name)!r})")
    if header.get("v") != 1 or isinstance(header.get("v"), bool):
        problems.append(f"{rel}/header.cbor: field v is {header.get('v')!r}, not 1")
    _time_problems(read_id, header.get("t_ns"), node, sk, key, info, problems, warnings)
    clock = payload.get("clock")
    if clock != "synced":
        warnings.append(f"read {read_id}: the node's clock was {clock!r} (not synchronised) when it was made: its "
                        f"time {iso_utc(payload.get('t_ns'))} is the node's own and may be off")
    crop = payload.get("crop")
    crop_rel = f"{rel}/crop.jpg"
    if crop_rel in pkg.files or (pkg.root / crop_rel).exists() or (pkg.root / crop_rel).is_symlink():
        try:
            if pkg.read(crop_rel) != crop:
                problems.append(f"read {read_id}: crop.jpg is not the crop the node signed")
        except OSError as exc:
            problems.append(f"read {read_id}: crop.jpg unreadable ({exc})")
    elif isinstance(crop, bytes) and crop:
        problems.append(f"read {read_id}: crop.jpg missing, though the node signed a crop")
    if reads_doc is not None:
        _reads_json_problems(read_id, header, payload, reads_doc.get(read_id), current, problems)
    return True


def _time_problems(read_id: int, t_ns: Any, node: str, sk: str, key: tuple[ed25519.Ed25519PublicKey, Any, Any],
                   info: _NodeInfo, problems: list[str], warnings: list[str]) -> None:
    """The read's (header) time against its key's window and its node's revocation, as ingest judged it."""
    if not _is_time(t_ns):
        problems.append(f"read {read_id}: header t_ns {t_ns!r} is not a time in ns")
        return
    _public, valid_from, retired = key
    if _is_time(retired) and t_ns >= retired:
        problems.append(f"read {read_id}: made {iso_utc(t_ns)}, at or after its key {sk} was retired "
                        f"{iso_utc(retired)}: HQ would not accept it")
    if _is_time(valid_from) and t_ns < valid_from:
        # Ingest accepts it (a node's backlog from before HQ recorded the key, or a node clock
        # behind HQ's): a warning for the reader, not a failure.
        warnings.append(f"read {read_id}: made {iso_utc(t_ns)}, before HQ recorded its key {sk} "
                        f"({iso_utc(valid_from)}): the node's clock or a backlog from before enrolment")
    if info.status == "revoked":
        reason = f" (reason: {info.reason})" if info.reason else ""
        if not _is_time(info.revoked_ns):
            problems.append(f"nodes/{node}.json: node revoked, but revoked_ns {info.revoked_ns!r} is not a time")
        elif t_ns >= info.revoked_ns:
            problems.append(f"read {read_id}: made {iso_utc(t_ns)}, at or after node {node} was revoked "
                            f"{iso_utc(info.revoked_ns)}{reason}: HQ would not accept it")
        else:
            warnings.append(f"read {read_id}: node {node} was revoked {iso_utc(info.revoked_ns)}{reason}, after this "
                            "read was made")


def _key_proof_problems(pkg: _Package, nodes: dict[str, _NodeInfo], used: set[tuple[str, str]],
                        trusted_ca: x509.Certificate | None, problems: list[str], warnings: list[str]) -> int:
    """Follow each key that signed a read back to the CA: through rotation requests (each signed
    by the key it replaced) to the certificate the CA issued for the node and its first key.
    Returns how many of `used` were so attested by `trusted_ca` (0 without it: the certificates
    are then checked against the CA they carry, with a warning, since anyone can make a CA).

    A proof that is there but does not hold is a problem (the registry's keys and the CA's
    record disagree), and so is a key without one on a node whose enrolment certificate is
    there: every key such a node was given has a proof. On a node with no certificate a missing
    proof is a warning: a node enrolled before HQ kept proofs has none, and its keys rest on
    HQ's signature alone, as in earlier packages."""
    proofs: dict[tuple[str, str], dict[str, str]] = {}
    enrolments: dict[str, str] = {}  # node -> a certificate proof of it, the first by name
    for rel in sorted(pkg.files):
        m = _PROOF_FILE.fullmatch(rel)
        if m:
            kind = _PROOF_KIND[m.group(3)]
            proofs.setdefault((m.group(1), m.group(2)), {})[kind] = rel
            if kind == provenance.CERTIFICATE:
                enrolments.setdefault(m.group(1), rel)
    attested = 0
    carried: set[str] = set()
    for node, sk in sorted(used):
        info = nodes[node]
        chain: list[str] = []
        kid: str | None = sk
        verdict: bool | None = None  # True attested, False a problem recorded
        while verdict is None:
            if kid in chain:
                problems.append(f"nodes/{node}/: the rotation proofs of key {sk} go round in a loop "
                                f"({' <- '.join(chain)})")
                verdict = False
                break
            chain.append(kid)
            mine, key = proofs.get((node, kid), {}), info.keys.get(kid)
            if key is None:
                problems.append(f"nodes/{node}/: key {kid}, which key {sk}'s rotations lead to, is not in "
                                f"nodes/{node}.json")
                verdict = False
            elif provenance.CERTIFICATE in mine:
                verdict = _certificate_step(pkg, mine[provenance.CERTIFICATE], node, key[0], trusted_ca, carried,
                                            problems)
            elif provenance.ROTATION in mine:
                kid = _rotation_step(pkg, mine[provenance.ROTATION], node, info, key[0], problems)
                verdict = False if kid is None else None
            else:
                _unproven(node, sk, kid, enrolments.get(node), problems, warnings)
                verdict = False
        attested += verdict is True
    if carried:
        warnings.append(f"node keys checked against the CA certificate the package carries ({', '.join(sorted(carried))}),"
                        " which anyone can make: give --ca-cert with HQ's CA certificate obtained separately")
    return attested if trusted_ca is not None else 0


def _certificate_step(pkg: _Package, rel: str, node: str, public: ed25519.Ed25519PublicKey,
                      trusted_ca: x509.Certificate | None, carried: set[str], problems: list[str]) -> bool:
    """Whether the certificate proof `rel` attests `public` as `node`'s (with `trusted_ca`, or
    the CA the proof carries, whose name goes to `carried`); a problem recorded if not."""
    document = _proof_bytes(pkg, rel, problems)
    if document is None:
        return False
    ca = trusted_ca or provenance.carried_ca(document)
    if ca is None:
        problems.append(f"{rel}: carries no CA certificate and none was given (--ca-cert)")
        return False
    problem = provenance.certificate_problem(document, ca, node, public)
    if problem:
        problems.append(f"{rel}: {problem}")
        return False
    if trusted_ca is None:
        carried.add(_ca_name(ca))
    return True


def _rotation_step(pkg: _Package, rel: str, node: str, info: _NodeInfo, public: ed25519.Ed25519PublicKey,
                   problems: list[str]) -> str | None:
    """The key id the rotation proof `rel` hands `public` over from, if it holds; else None,
    a problem recorded."""
    document = _proof_bytes(pkg, rel, problems)
    if document is None:
        return None
    old_kid = provenance.rotation_old_key_id(document)
    old = info.keys.get(old_kid) if old_kid else None
    if old is None:
        problems.append(f"{rel}: names old key {old_kid!r}, which is not in nodes/{node}.json")
        return None
    problem = provenance.rotation_problem(document, node, public, old[0])
    if problem:
        problems.append(f"{rel}: {problem}")
        return None
    return old_kid


def _unproven(node: str, sk: str, kid: str, enrolment: str | None, problems: list[str],
              warnings: list[str]) -> None:
    """Key `kid` (key `sk` or one its rotations lead to) has no proof: a problem on a node
    whose enrolment certificate is in the package (`enrolment`, its file), else a warning."""
    how = f"key {sk}" if kid == sk else f"key {sk} comes from key {kid} by rotation, which"
    if enrolment:
        # Enrolled since HQ keeps proofs, so every key it was given has one: a key without is
        # one the registry gained without the node handing it over.
        problems.append(f"nodes/{node}/: {how} has no proof in the package, though the node's enrolment has one "
                        f"({enrolment}): a key added without a rotation request")
    else:
        warnings.append(f"node {node}: {how} has no proof in the package (enrolled or rotated before HQ kept "
                        "them): which key is the node's rests on HQ's signature alone")


def _proof_bytes(pkg: _Package, rel: str, problems: list[str]) -> bytes | None:
    try:
        return pkg.read(rel)
    except OSError as exc:
        problems.append(f"{rel}: unreadable ({exc})")
        return None


def _ca_name(ca: x509.Certificate) -> str:
    name = provenance.ca_name(ca)
    return f"CA {name!r}" if name else "CA"


# Keys of reads.json that are HQ's own record (not signed by the node), so not compared.
_UNSIGNED_KEYS = ("stored_ns", "stored_utc")


def _reads_json_problems(read_id: int, header: dict[str, Any], payload: dict[str, Any], entry: dict[str, Any] | None,
                         current: bool, problems: list[str]) -> None:
    """Compare a read's reads.json entry with what its node signed, field by field: every field
    of a current package; those present in one written before reads.json came from the payload."""
    if entry is None:
        problems.append(f"reads.json: read {read_id} is missing")
        return
    expected = signed_fields(read_id, header, payload)
    for name, value in expected.items():
        if name not in entry:
            if current:
                problems.append(f"reads.json: read {read_id}: field {name} missing (the node signed {value!r})")
            continue
        if entry[name] != value or type(entry[name]) is not type(value):
            problems.append(f"reads.json: read {read_id}: {name} is {entry[name]!r}, but the node signed {value!r}")
    for name in sorted(set(entry) - set(expected) - set(_UNSIGNED_KEYS)):
        if current:
            problems.append(f"reads.json: read {read_id}: field {name} is not one HQ writes (not signed by the node)")


def _access_log_problems(pkg: _Package, problems: list[str], warnings: list[str]) -> None:
    """Every access-log row that was not redacted must recompute to its hash (the chain's
    formula, docs/records.md); redacted rows cannot, and say which fields were redacted."""
    doc = _json_file(pkg, "access-log.json", list, problems)
    if doc is None:
        return
    fields = ("id", "t_ns", "user", "role", "action", "outcome", "purpose", "case_no", "query", "detail", "prev_hash")
    for i, row in enumerate(doc):
        if not isinstance(row, dict) or any(name not in row for name in fields + ("hash",)):
            problems.append(f"access-log.json: [{i}]: not an access-log entry (fields {', '.join(fields)}, hash)")
            continue
        if row.get("redacted"):
            continue
        if entry_hash(*(row[name] for name in fields)) != row["hash"]:
            problems.append(f"access-log.json: entry {row['id']}: hash does not recompute (entry edited)")
