"""HQ records: plate search, hot lists, alerts, retention with evidence holds."""
from __future__ import annotations

import datetime as dt

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq import alerts, hotlist, partitions, retention
from hq.access import SYSTEM, Access, Actor
from hq.errors import AccessDenied, PolicyError
from hq.plates import PlateQueryError, skeleton
from hq.search import SearchQuery, search
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode, tiny_jpeg
from transport import signed

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
PW = "correct horse battery"
IVAN = Actor("ivan", "investigator")
ADA = Actor("ada", "administrator")


@pytest.fixture
def env(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    clock = FakeClock(NOW)
    access = Access(store.db, clock=clock, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
    access.add_user(ADA, "ivan", "investigator", PW, NOW + 400 * DAY)
    access.add_user(ADA, "tom", "technician", PW, NOW + 400 * DAY)
    a, b = SyntheticNode.create("node-a", "main-st"), SyntheticNode.create("node-b", "harbor")
    reads = [
        a.read(1, "7ABC123", NOW - 1 * DAY, crop=tiny_jpeg("7ABC123")),
        a.read(2, "7ABD125", NOW - 2 * DAY),
        b.read(1, "7ABC123", NOW - 3 * DAY),
        b.read(2, "7A8C1Z3", NOW - 4 * DAY),    # 8/B and Z/2 confusions of 7ABC123
        b.read(3, "8XYZ999", NOW - 5 * DAY),
        a.read(3, "TABC123", NOW - 40 * DAY),   # not a confusion (T)
    ]
    store.store(reads)
    yield store, access, clock, (a, b)
    store.close()


def plates_of(hits):
    return sorted((h.row.plate, h.match) for h in hits)


def test_exact_search(env):
    store, access, _, _ = env
    hits = search(store, access, IVAN, SearchQuery("7abc-123"), purpose="robbery", case_no="C1")
    assert plates_of(hits) == [("7ABC123", "exact"), ("7ABC123", "exact")]


def test_partial_search_with_wildcards(env):
    store, access, _, _ = env
    hits = search(store, access, IVAN, SearchQuery("7AB?12*"), purpose="robbery")
    assert plates_of(hits) == [("7ABC123", "pattern"), ("7ABC123", "pattern"), ("7ABD125", "pattern")]
    hits = search(store, access, IVAN, SearchQuery("*999"), purpose="robbery")
    assert plates_of(hits) == [("8XYZ999", "pattern")]


def test_confusable_search(env):
    store, access, _, _ = env
    assert skeleton("7ABC123") == skeleton("7A8C1Z3") == skeleton("IA8CI23")
    hits = search(store, access, IVAN, SearchQuery("7ABC123", confusable=True), purpose="robbery")
    assert plates_of(hits) == [("7A8C1Z3", "confusable"), ("7ABC123", "exact"), ("7ABC123", "exact")]
    # 7ABD125: D is confusable with 0 not C, so it must not match 7ABC123
    hits = search(store, access, IVAN, SearchQuery("7ABC1??", confusable=True), purpose="robbery")
    assert ("7ABD125", "confusable") not in plates_of(hits) and len(hits) == 3


def test_time_range_and_site(env):
    store, access, _, _ = env
    q = SearchQuery("7ABC123", confusable=True, since_ns=NOW - 3 * DAY - 1, until_ns=NOW, site="harbor")
    assert plates_of(search(store, access, IVAN, q, purpose="p")) == [("7ABC123", "exact")]
    q = SearchQuery("7*", since_ns=NOW - 2 * DAY - 1)
    assert len(search(store, access, IVAN, q, purpose="p")) == 2


def test_bad_queries_are_refused_with_the_reason(env):
    store, access, _, _ = env
    with pytest.raises(PlateQueryError, match="at least one letter"):
        search(store, access, IVAN, SearchQuery("*?*"), purpose="p")
    with pytest.raises(PlateQueryError, match="letters and digits"):
        search(store, access, IVAN, SearchQuery("7AB%"), purpose="p")
    with pytest.raises(PlateQueryError, match="pattern '7A\\[B\\]\\*'"):
        search(store, access, IVAN, SearchQuery("7A[B]*"), purpose="p")
    with pytest.raises(PolicyError, match="--to must be after"):
        search(store, access, IVAN, SearchQuery("7ABC123", since_ns=NOW, until_ns=NOW - 1), purpose="p")


def test_search_is_logged_with_query_and_crops_as_image_access(env, tmp_path):
    store, access, _, _ = env
    out = tmp_path / "crops"
    hits = search(store, access, IVAN, SearchQuery("7ABC123", site="main-st"), purpose="robbery", case_no="C9",
                  crops_dir=out)
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"{hits[0].row.id}-7ABC123.jpg"]
    assert (out / files[0]).read_bytes()[:2] == b"\xff\xd8"
    search_entry, image_entry = access.log.entries()[-2:]
    assert (search_entry.action, search_entry.case_no, search_entry.purpose) == ("search", "C9", "robbery")
    assert '"plate":"7ABC123"' in search_entry.query and '"site":"main-st"' in search_entry.query
    assert image_entry.action == "image" and str(hits[0].row.id) in image_entry.query


def test_hotlist_compiles_to_signed_message_without_exact_plates_in_clear(env):
    store, access, _, _ = env
    key = ed25519.Ed25519PrivateKey.generate()
    e1 = hotlist.add_entry(store, access, IVAN, plate="7ABC123", reason="stolen-vehicle", source="NCIC",
                           expires_ns=NOW + 10 * DAY, purpose="stolen vehicle report", case_no="C1")
    hotlist.add_entry(store, access, IVAN, plate="8XY?99*", reason="warrant", source="DA", expires_ns=NOW + 10 * DAY,
                      purpose="warrant")
    gone = hotlist.add_entry(store, access, IVAN, plate="5SSS555", reason="missing-person", source="MUPS",
                             expires_ns=NOW + DAY, purpose="x")
    hotlist.remove_entry(store, access, IVAN, gone.id, purpose="found")
    with pytest.raises(PolicyError, match="reason"):
        hotlist.add_entry(store, access, IVAN, plate="1", reason="parking", source="x", expires_ns=NOW + DAY,
                          purpose="x")
    with pytest.raises(AccessDenied, match="may not hotlist-publish"):
        hotlist.publish(store, access, IVAN, key, purpose="daily")
    v1 = hotlist.publish(store, access, ADA, key, purpose="daily")
    v2 = hotlist.publish(store, access, ADA, key, purpose="daily")
    assert (v1.version, v2.version) == (1, 2)
    body = signed.verify("hotlist", v2.message, [key.public_key()], "node-a")
    assert body["list_version"] == 2 and len(body["exact"]) == 1 and body["patterns"][0]["p"] == "8XY?99*"
    assert b"7ABC123" not in v2.message and b"5SSS555" not in v2.message
    assert v1.body["hash"]["key"] != v2.body["hash"]["key"]  # fresh key per version
    assert hotlist.match(body, "7ABC123", NOW) == {"list_version": "2", "entry": str(e1.id),
                                                    "reason": "stolen-vehicle", "match": "exact"}
    assert hotlist.match(body, "7A8C1Z3", NOW)["match"] == "confusable"
    assert hotlist.match(body, "8XYZ999", NOW)["match"] == "pattern"
    assert hotlist.match(body, "5SSS555", NOW) is None
    assert hotlist.match(body, "7ABC123", NOW + 11 * DAY) is None  # the list itself is no longer valid


def test_alerts_stay_unverified_until_an_outcome_is_recorded(env):
    store, access, _, (a, _) = env
    hit = {"list_version": "2", "entry": "1", "reason": "stolen-vehicle", "match": "exact"}
    store.store([a.read(10, "7ABC123", NOW, kind="alert", hotlist=hit)])
    [alert] = alerts.list_alerts(store, access, IVAN, purpose="dispatch")
    assert alert.status == "unverified" and alert.hotlist == hit
    with pytest.raises(PolicyError, match="--note"):
        alerts.verify_alert(store, access, IVAN, alert.row.id, outcome="confirmed", note=" ")
    alerts.verify_alert(store, access, IVAN, alert.row.id, outcome="not-confirmed", note="CLETS 123: recovered")
    assert alerts.list_alerts(store, access, IVAN, purpose="dispatch") == []
    [done] = alerts.list_alerts(store, access, IVAN, purpose="dispatch", unverified_only=False)
    assert (done.status, done.verified_by) == ("not-confirmed", "ivan")


def test_retention_cutoff_is_a_whole_month_past_the_minimum():
    now = int(dt.datetime(2026, 9, 15, tzinfo=dt.UTC).timestamp()) * 10**9
    cutoff = partitions.retention_cutoff_ns(now, 365)  # now - 365 d = 2025-09-15 → purge before 2025-09-01
    assert cutoff == int(dt.datetime(2025, 9, 1, tzinfo=dt.UTC).timestamp()) * 10**9


def test_purge_keeps_minimum_and_held_reads(env):
    store, access, _, (a, _) = env
    old = [a.read(100 + i, f"OLD{i:04d}", NOW - 400 * DAY + i * 10**9) for i in range(12)]
    store.store(old)
    ids = [r.id for r in store.reads_after(0, 1000) if r.plate.startswith("OLD")]
    with pytest.raises(AccessDenied, match="case number"):
        retention.place_hold(store, access, IVAN, case_no="", reason="x", read_ids=ids[:1])
    hold = retention.place_hold(store, access, IVAN, case_no="C7", reason="robbery suspect", read_ids=ids[:2])
    with pytest.raises(AccessDenied):
        retention.purge(store, access, IVAN, min_days=365)
    before = store.count()
    result = retention.purge(store, access, SYSTEM, min_days=365)
    assert (result.reads_deleted, result.held_kept) == (10, 2)
    assert store.count() == before - 10
    assert all(store.read(i) for i in ids[:2])
    assert access.log.entries()[-1].action == "purge"
    retention.release_hold(store, access, IVAN, hold.id, note="case closed")
    assert retention.purge(store, access, Actor("tom", "technician"), min_days=365).reads_deleted == 2
    assert store.count() == before - 12  # recent reads untouched
    assert store.db.value("SELECT COUNT(*) FROM purges") == 2


def test_purge_refuses_a_minimum_below_the_configured_retention(env):
    store, access, _, (a, _) = env
    store.store([a.read(200, "MONTHOLD", NOW - 60 * DAY)])
    before = store.count()
    with pytest.raises(PolicyError, match=r"min_days 30: below records.retention_days \(365\)"):
        retention.purge(store, access, SYSTEM, min_days=30, retention_days=365)
    assert store.count() == before
    assert store.db.value("SELECT COUNT(*) FROM purges") == 0
    # Keeping reads longer than configured is allowed.
    assert retention.purge(store, access, SYSTEM, min_days=400, retention_days=365).reads_deleted == 0


@pytest.mark.parametrize("days", [1, 30, 364])
def test_config_refuses_a_retention_shorter_than_a_year(tmp_path, days):
    """The law keeps reads at least a year: hq.toml cannot configure a purge before that."""
    from hq import config as hq_config
    from hq.errors import BadConfig
    path = tmp_path / "hq.toml"
    path.write_text(f"[records]\nretention_days = {days}\n")
    with pytest.raises(BadConfig, match="records.retention_days: Input should be greater than or equal to 365"):
        hq_config.load(path)
    path.write_text("[records]\nretention_days = 365\n")
    assert hq_config.load(path).records.retention_days == 365


def test_a_hold_placed_while_retention_purges_its_read_is_refused_not_kept_on_nothing(env, monkeypatch):
    """The reads are checked before the hold's transaction; a purge between the two removes
    them. The hold must then be refused (nothing is held), not record a hold on nothing."""
    from hq.errors import NotFound

    store, access, _, _ = env
    first = store.db.value("SELECT MIN(id) FROM reads")
    real_rows = store.db.rows
    purged = []

    def rows_then_purge(sql, params=()):
        out = real_rows(sql, params)
        if "FROM reads WHERE id IN" in sql and not purged:
            purged.append(first)  # the retention job, on another connection, between check and hold
            other = ReadStore(store.path)
            other.db.execute("DELETE FROM reads WHERE id = ?", (first,))
            other.close()
        return out

    monkeypatch.setattr(store.db, "rows", rows_then_purge)
    with pytest.raises(NotFound, match=rf"reads \[{first}\]: purged by retention while the hold was being placed"):
        retention.place_hold(store, access, IVAN, case_no="C9", reason="robbery", read_ids=[first])
    monkeypatch.undo()
    assert purged and store.db.value("SELECT COUNT(*) FROM holds") == 0


@pytest.mark.parametrize("limit", [-1, 0, 10_001])
def test_alert_listing_limits_are_checked_and_refusals_logged(env, limit):
    """SQLite reads LIMIT -1 as no limit at all: every alert and its crop into memory."""
    store, access, _, _ = env
    with pytest.raises(PolicyError, match=f"limit {limit}: must be 1..10000"):
        alerts.list_alerts(store, access, IVAN, purpose="dispatch", limit=limit)
    last = access.log.entries()[-1]
    assert (last.user, last.action, last.outcome) == ("ivan", "alerts", "denied")
