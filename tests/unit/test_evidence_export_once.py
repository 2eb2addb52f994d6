"""One approved release request, one evidence package: overlapping exports of the same request,
an export that fails half way, a crashed export's claim, a slow export whose claim lapsed.

Overlap is made deterministic by running the second export from inside the first (a hook on
a function the first calls), on a second database connection, as another HQ process would.
Each scenario runs on SQLite and on a real PostgreSQL server.
"""
from __future__ import annotations

import datetime as dt

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq import evidence, releases, retention
from hq.access import Access, Actor
from hq.errors import PolicyError
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode, tiny_jpeg
from tests.postgres.conftest import pg_server, pg_url  # noqa: F401  (fixtures for the postgres variants)
from transport.registry import Registry

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
PW = "correct horse battery"
ADA, BEA, IVAN = Actor("ada", "administrator"), Actor("bea", "administrator"), Actor("ivan", "investigator")
KEY = ed25519.Ed25519PrivateKey.generate()


class Site:
    """Two HQ connections to one store (two processes), a shared clock, an approved request."""

    def __init__(self, target, tmp_path):
        self.clock = FakeClock(NOW)
        hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        self.store = ReadStore(target)
        self.access = Access(self.store.db, clock=self.clock, hasher=hasher)
        self.access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
        for name, role in (("bea", "administrator"), ("ivan", "investigator")):
            self.access.add_user(ADA, name, role, PW, NOW + 400 * DAY)
        node = SyntheticNode.create("node-a", "main-st")
        self.registry = Registry(tmp_path / "registry.db")
        self.registry.enroll("node-a", "main-st", node.key.public_key(), actor="installer")
        self.store.store([node.read(i, p, NOW - i * DAY, crop=tiny_jpeg(p))
                          for i, p in enumerate(["7ABC123", "8XYZ999"], 1)])
        self.ids = [r.id for r in self.store.reads_after(0)]
        retention.place_hold(self.store, self.access, IVAN, case_no="C1", reason="robbery", read_ids=self.ids)
        req = releases.request(self.store, self.access, IVAN, case_no="C1", agency="County DA",
                               requester="DDA Smith", purpose="prosecution of robbery")
        self.req_id = releases.review(self.store, self.access, BEA, req.id, approve=True, note="DA subpoena").id
        # The second HQ process: its own connection to the same store.
        self.store2 = ReadStore(target)
        self.access2 = Access(self.store2.db, clock=self.clock, hasher=hasher)

    def export(self, out, *, second=False):
        store, access = (self.store2, self.access2) if second else (self.store, self.access)
        return evidence.export(store, access, IVAN, case_no="C1", release_id=self.req_id, out=out, sign_key=KEY,
                               registry=self.registry)

    def request(self):
        return releases.get(self.store, self.req_id)

    def log(self):
        return [(e.user, e.action, e.outcome, e.detail) for e in self.access.log.entries()]

    def close(self):
        self.store2.close()
        self.registry.close()
        self.store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def site(request, tmp_path):
    target = tmp_path / "hq.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = Site(target, tmp_path)
    yield s
    s.close()


def _files(path):
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_a_second_export_during_the_first_is_refused_and_writes_nothing(site, tmp_path, monkeypatch):
    """The reviewer's reproduction: the second export runs while the first writes its package."""
    first, second = tmp_path / "first", tmp_path / "second"
    caught: list[BaseException] = []
    started: list[bool] = []
    real_private_dir = evidence.private_dir

    def private_dir_then_second_export(path):
        if not started:
            started.append(True)  # once: not again from inside the second export
            with pytest.raises(PolicyError) as exc:
                site.export(second, second=True)
            caught.append(exc.value)
        return real_private_dir(path)

    monkeypatch.setattr(evidence, "private_dir", private_dir_then_second_export)
    result = site.export(first)
    assert caught, "the second export did not run"
    msg = str(caught[0])
    assert f"release request {site.req_id} is being exported by another export" in msg
    assert "one approval allows one export" in msg and "nothing exported" in msg
    assert not second.exists()  # the loser wrote nothing
    req = site.request()
    assert (req.status, req.export_manifest_sha256) == ("exported", result.manifest_sha256)
    assert evidence.verify_package(first, KEY.public_key()).ok
    denied = [row for row in site.log() if row[1] == "export" and row[2] == "denied"]
    assert len(denied) == 1 and f"release request {site.req_id} is being exported" in denied[0][3]
    assert [row[1] for row in site.log()].count("export-written") == 1


def test_of_two_exports_past_the_checks_only_the_first_to_claim_writes(site, tmp_path, monkeypatch):
    """Both exports see the request approved; the second one's claim comes first and wins."""
    first, second = tmp_path / "first", tmp_path / "second"
    won: list[evidence.ExportResult] = []
    real_held = retention.held_read_ids

    def held_then_second_export(store, case_no):
        if not won:
            won.append(None)  # type: ignore[arg-type]  (no recursion from the second export)
            won[0] = site.export(second, second=True)
        return real_held(store, case_no)

    monkeypatch.setattr(retention, "held_read_ids", held_then_second_export)
    with pytest.raises(PolicyError, match=f"release request {site.req_id} is exported: another export used this "
                                          "approval first"):
        site.export(first)
    assert not first.exists() and _files(second)
    req = site.request()
    assert (req.status, req.export_manifest_sha256) == ("exported", won[0].manifest_sha256)
    assert evidence.verify_package(second, KEY.public_key()).ok
    assert [row[1] for row in site.log()].count("export-written") == 1
    assert site.log()[-1][1:3] == ("export", "denied") and "another export used this approval" in site.log()[-1][3]


@pytest.mark.parametrize("out_exists", [False, True])
def test_a_failed_export_removes_its_files_and_the_request_can_be_exported_again(site, tmp_path, monkeypatch,
                                                                                  out_exists):
    out = tmp_path / "usb" / "pkg"
    if out_exists:
        out.mkdir(parents=True)  # e.g. an empty removable medium's mount point: kept
    real_keys = site.registry.keys

    def keys_fail(node_id):
        raise OSError("medium removed")

    monkeypatch.setattr(site.registry, "keys", keys_fail)
    with pytest.raises(OSError, match="medium removed"):
        site.export(out)
    assert _files(out) == [] and out.exists() == out_exists
    req = site.request()
    assert (req.status, req.exported_ns, req.export_manifest_sha256) == ("approved", None, None)
    user, action, _outcome, detail = site.log()[-1]
    assert (user, action) == ("ivan", "export-failed")
    assert "medium removed" in detail and f"release request {site.req_id} not marked exported" in detail

    monkeypatch.setattr(site.registry, "keys", real_keys)
    result = site.export(out)
    assert site.request().status == "exported" and evidence.verify_package(out, KEY.public_key()).ok
    assert result.reads == len(site.ids)


def test_a_crashed_exports_claim_lapses_and_the_request_is_exported_once(site, tmp_path):
    # An export claimed the request and its process died before writing or giving it back.
    assert releases.claim_export(site.store2, site.req_id, site.clock())
    assert site.request().status == "exporting"
    with pytest.raises(PolicyError, match=f"release request {site.req_id} is being exported by another export .*"
                                          "can be exported again after 2026-09-15 13:00:00Z"):
        site.export(tmp_path / "early")
    assert not (tmp_path / "early").exists()
    assert site.log()[-1][1:3] == ("export", "denied")

    site.clock.advance(releases.EXPORT_CLAIM_STALE_NS / 1e9 + 1)
    result = site.export(tmp_path / "pkg")
    req = site.request()
    assert (req.status, req.export_manifest_sha256) == ("exported", result.manifest_sha256)
    with pytest.raises(PolicyError, match="was already exported on .*: one approval allows one export; file a new request"):
        site.export(tmp_path / "again")


def test_a_slow_export_whose_claim_was_taken_over_removes_its_package(site, tmp_path, monkeypatch):
    slow, other = tmp_path / "slow", tmp_path / "other"
    done: list[evidence.ExportResult] = []
    real_private_dir = evidence.private_dir

    def stall_then_other_export(path):
        if not done:
            done.append(None)  # type: ignore[arg-type]
            site.clock.advance(releases.EXPORT_CLAIM_STALE_NS / 1e9 + 1)  # the slow export looks crashed
            done[0] = site.export(other, second=True)
        return real_private_dir(path)

    monkeypatch.setattr(evidence, "private_dir", stall_then_other_export)
    with pytest.raises(PolicyError, match=f"release request {site.req_id}: this export's claim on it lapsed"):
        site.export(slow)
    assert not slow.exists() and evidence.verify_package(other, KEY.public_key()).ok
    req = site.request()
    assert (req.status, req.export_manifest_sha256) == ("exported", done[0].manifest_sha256)
    actions = [row[1] for row in site.log()]
    assert actions.count("export-written") == 1 and actions[-1] == "export-failed"


def test_claim_is_atomic_and_only_for_approved_requests(site):
    assert releases.claim_export(site.store, site.req_id, NOW)
    assert not releases.claim_export(site.store2, site.req_id, NOW)  # already claimed
    assert not releases.release_export_claim(site.store2, site.req_id, NOW - 1)  # not that claim
    assert releases.release_export_claim(site.store2, site.req_id, NOW)
    assert site.request().status == "approved"
    pending = releases.request(site.store, site.access, IVAN, case_no="C1", agency="County DA",
                               requester="DDA Smith", purpose="prosecution")
    assert not releases.claim_export(site.store, pending.id, NOW)
    assert releases.get(site.store, pending.id).status == "pending"
