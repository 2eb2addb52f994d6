"""The audit report (Civil Code 1798.90.51(b)(2)(D), 1798.90.52): who accessed ALPR information,
why, with which case; searches without a case number; refusals; releases (filed, reviewed or
exported in the period); purges; holds; node provisioning events; and whether the access
log's hash chain is intact.

The report shows counts and entry ids, not plates: auditors do not need plate data to audit.
"""
from __future__ import annotations

import collections
from dataclasses import asdict
from typing import Any

from hq import releases
from hq.access import Access, Actor
from hq.store import ReadStore


def build(store: ReadStore, access: Access, actor: Actor, *, since_ns: int, until_ns: int,
          registry: Any = None) -> dict[str, Any]:
    """Assemble the report for [since, until); the request itself is logged."""
    grant = access.authorize(actor, "audit", purpose="audit report", query={"from_ns": since_ns, "to_ns": until_ns})
    entries = [e for e in access.log.entries(since_ns, until_ns) if e.id != grant.log_id]
    per_user: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in entries:
        if e.outcome == "ok":
            per_user[e.user][f"{e.action} | {e.purpose}"] += 1
    no_case = [{"id": e.id, "t_ns": e.t_ns, "user": e.user, "purpose": e.purpose}
               for e in entries if e.action == "search" and e.outcome == "ok" and not e.case_no]
    denied = [{"id": e.id, "t_ns": e.t_ns, "user": e.user, "action": e.action, "why": e.detail}
              for e in entries if e.outcome == "denied"]
    purges = [dict(zip(("t_ns", "by", "cutoff_ns", "reads_deleted", "partitions_dropped", "held_kept", "seconds"), r))
              for r in store.db.rows("SELECT t_ns, by_user, cutoff_ns, reads_deleted, partitions_dropped, held_kept, "
                                     "seconds FROM purges WHERE t_ns >= ? AND t_ns < ? ORDER BY id",
                                     (since_ns, until_ns))]
    holds = [dict(zip(("id", "case", "reason", "by", "created_ns", "released_ns", "released_by", "reads"), r))
             for r in store.db.rows(
                 "SELECT h.id, h.case_no, h.reason, h.created_by, h.created_ns, h.released_ns, h.released_by, "
                 "(SELECT COUNT(*) FROM hold_reads r WHERE r.hold_id = h.id) FROM holds h "
                 "WHERE (h.created_ns >= ? AND h.created_ns < ?) OR (h.released_ns >= ? AND h.released_ns < ?) "
                 "ORDER BY h.id", (since_ns, until_ns, since_ns, until_ns))]
    provisioning = []
    if registry is not None:
        provisioning = [dict(zip(("t_ns", "actor", "action", "node", "detail"), r))
                        for r in registry.audit_log(since_ns) if r[0] < until_ns]
    chain = access.log.verify()
    return {
        "from_ns": since_ns, "to_ns": until_ns,
        "accesses_per_user": {u: dict(sorted(c.items())) for u, c in sorted(per_user.items())},
        "searches_without_case": no_case,
        "denied": denied,
        # Filed, reviewed or exported in the period, as holds placed or released in it: a
        # request filed last month and approved and exported in this one belongs to this audit.
        "releases": [asdict(r) for r in releases.requests_in_period(store, since_ns, until_ns)],
        "purges": purges,
        "holds": holds,
        "provisioning": provisioning,
        "access_log": {"entries": chain.entries, "intact": chain.ok, "problems": list(chain.problems),
                       "head_id": chain.head_id, "head_hash": chain.head_hash},
    }
