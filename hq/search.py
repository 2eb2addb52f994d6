"""Plate search: exact, partial with wildcards, OCR-confusable; within a time range and site.

Every search passes the access gate first (who, purpose, case, the query itself are logged
before any row is read). Matching uses the indexed columns reads.plate_norm and
reads.plate_skel (hq.plates), so an exact or prefix-anchored query is an index range scan.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hq import plates
from hq.db import MAX_INT64
from hq.access import Access, Actor, Grant
from hq.errors import HQError, PolicyError
from hq.files import private_dir, write_private
from hq.plates import PlateQueryError
from hq.store import READ_COLUMNS, ReadRow, ReadStore, row_from_db

MAX_LIMIT = 10000


@dataclass(frozen=True)
class SearchQuery:
    """What to look for. `plate` is an exact plate or a pattern (`?` one char, `*` any run)."""

    plate: str
    confusable: bool = False
    since_ns: int | None = None
    until_ns: int | None = None
    site: str | None = None
    limit: int = 500

    def checked(self) -> SearchQuery:
        """The query with the plate in normal form; PlateQueryError / PolicyError if unusable."""
        text = plates.check_pattern(self.plate) if plates.is_pattern(self.plate) else plates.check_plate(self.plate)
        if not 0 < self.limit <= MAX_LIMIT:
            raise PolicyError(f"limit {self.limit}: must be 1..{MAX_LIMIT}")
        for name, t_ns in (("--from", self.since_ns), ("--to", self.until_ns)):
            if t_ns is not None and not 0 <= t_ns <= MAX_INT64:
                raise PolicyError(f"time range: {name} is outside the times HQ stores (1970 to 2262)")
        if self.since_ns is not None and self.until_ns is not None and self.until_ns <= self.since_ns:
            raise PolicyError("time range: --to must be after --from")
        return SearchQuery(text, self.confusable, self.since_ns, self.until_ns, self.site, self.limit)

    def as_log(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, False)}


@dataclass(frozen=True)
class Hit:
    """One read found, and how it matched: "exact", "pattern" or "confusable"."""

    row: ReadRow
    match: str


def build_sql(query: SearchQuery, postgres: bool) -> tuple[str, list[Any]]:
    """The SELECT for a checked query (exposed for tests and EXPLAIN in the bench)."""
    column = "plate_skel" if query.confusable else "plate_norm"
    text = plates.skeleton(query.plate) if query.confusable else query.plate
    where, params = [], []
    if plates.is_pattern(text):
        if postgres:
            where.append(f"{column} LIKE ?")
            params.append(plates.to_like(text))
        else:
            where.append(f"{column} GLOB ?")  # GLOB is case-sensitive and can use the index for a literal prefix
            params.append(text)
    else:
        where.append(f"{column} = ?")
        params.append(text)
    if query.since_ns is not None:
        where.append("capture_ns >= ?")
        params.append(query.since_ns)
    if query.until_ns is not None:
        where.append("capture_ns < ?")
        params.append(query.until_ns)
    if query.site:
        where.append("site_id = ?")
        params.append(query.site)
    params.append(query.limit)
    # Find the keys from a covering index first, then visit only those rows (see migration 3):
    # a row holds the signed bytes and crop, so testing plates row by row is slow.
    outer, inner = ("(capture_ns, id)", "capture_ns, id") if postgres else ("id", "id")
    sql = (f"SELECT {READ_COLUMNS}, plate_norm FROM reads WHERE {outer} IN (SELECT {inner} FROM reads WHERE "
           f"{' AND '.join(where)} ORDER BY capture_ns DESC LIMIT ?) ORDER BY capture_ns DESC")
    return sql, params


def _how(query: SearchQuery, plate_norm: str) -> str:
    if plates.is_pattern(query.plate):
        return "pattern" if plates.to_regex(query.plate).match(plate_norm) else "confusable"
    return "exact" if plate_norm == query.plate else "confusable"


def run_search(store: ReadStore, query: SearchQuery) -> list[Hit]:
    """Run a checked query with no access check: callers are `search` and the benchmark."""
    sql, params = build_sql(query, store.db.postgres)
    return [Hit(row_from_db(r[:12]), _how(query, r[12])) for r in store.db.rows(sql, params)]


def search(store: ReadStore, access: Access, actor: Actor, query: SearchQuery, *, purpose: str, case_no: str = "",
           crops_dir: Path | None = None) -> list[Hit]:
    """Authorise, log, search; with `crops_dir`, also write each hit's crop JPEG there (logged as "image").

    The gate comes first: a malformed plate or pattern, a bad limit or time range, or a
    `crops_dir` that is not a folder is refused only for a user who may search (logged with
    the reason), so a user without rights learns nothing about how queries are checked.
    """
    problem: HQError | None = None
    try:
        query = query.checked()
    except (PlateQueryError, PolicyError) as exc:  # raised below, after the gate
        problem = exc
    if problem is None and crops_dir is not None:
        problem = crops_problem(Path(crops_dir))
    grant = access.authorize(actor, "search", purpose=purpose, case_no=case_no, query=query.as_log(),
                             check=lambda: problem)
    hits = run_search(store, query)
    if crops_dir is not None and hits:
        write_crops(store, access, grant, [h.row.id for h in hits], Path(crops_dir))
    return hits


def crops_problem(out: Path) -> PolicyError | None:
    """Why crops cannot be written into `out` (it exists and is not a folder), or None."""
    if out.exists() and not out.is_dir():
        return PolicyError(f"{out}: exists and is not a folder (--crops)")
    return None


def write_crops(store: ReadStore, access: Access, grant: Grant, read_ids: list[int], out: Path) -> list[Path]:
    """Write crops as `<read id>-<plate>.jpg` (folder 0700 if HQ creates it, files 0600);
    recorded in the access log as an image access."""
    access.authorize(grant.actor, "image", purpose=grant.purpose, case_no=grant.case_no,
                     query={"reads": read_ids, "out": str(out)}, check=lambda: crops_problem(Path(out)))
    private_dir(out)
    written = []
    for read_id in read_ids:
        stored = store.read(read_id)
        crop = stored.crop_jpeg()
        if crop:
            path = out / f"{read_id}-{plates.safe_name(stored.row.plate)}.jpg"
            write_private(path, crop)
            written.append(path)
    return written
