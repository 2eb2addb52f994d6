"""The node's hot list agrees with HQ's reference matcher, refuses forged or stale lists, persists."""
import secrets
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq.hotlist import HotlistEntry, build_body, match as reference_match
from node.hotlist import HotList
from transport import signed
from transport.payload import Candidate, ReadPayload

pytestmark = pytest.mark.unit
DAY = 86_400 * 10**9


def entries(now):
    rows = [("7ABC123", False, "stolen-vehicle"), ("8XYZ500", False, "warrant"), ("4AB?12*", True, "stolen-plate")]
    return [HotlistEntry(i + 1, plate, pattern, reason, "NCIC", now + DAY, "admin", now, "")
            for i, (plate, pattern, reason) in enumerate(rows)]


def message(key, version=1, now=None, valid=DAY):
    now = now or time.time_ns()
    body = build_body(entries(now), version=version, now_ns=now, key=secrets.token_bytes(32), valid_for_ns=valid)
    return signed.sign("hotlist", body, key), body


def read(plate, candidates=()):
    return ReadPayload(plate=plate, confidence=0.9, capture_time_ns=time.time_ns(), node_id="n1", site_id="s",
                       camera_id="c", crop_jpeg=b"", candidates=tuple(Candidate(c, 0.1) for c in candidates))


@pytest.fixture
def hq_key():
    return ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize("plate", ["7ABC123", "7A8C123", "TABC123", "8XYZ500", "BXYZS00", "4AB912X", "4AB91",
                                   "1234567", "7ABC12"])
def test_node_matches_exactly_as_hq_reference(tmp_path, hq_key, plate):
    msg, body = message(hq_key)
    hot = HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1", match_candidates=False)
    assert hot.update(msg)
    mine = hot.match(read(plate))
    ref = reference_match(body, plate, time.time_ns())
    if ref is None:
        assert mine is None
    else:
        assert {k: mine[k] for k in ref} == ref


def test_candidates_are_matched_too(tmp_path, hq_key):
    hot = HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1")
    hot.update(message(hq_key)[0])
    hit = hot.match(read("7ABC128", candidates=["7ABC128", "7ABC123"]))
    assert hit["via"] == "candidate" and hit["match"] == "exact"


def test_forged_old_and_expired_lists_are_refused(tmp_path, hq_key):
    hot = HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1")
    assert not hot.update(message(ed25519.Ed25519PrivateKey.generate())[0])  # not HQ's key
    assert hot.update(message(hq_key, version=5)[0])
    assert not hot.update(message(hq_key, version=4)[0])                     # rollback refused
    assert hot.version == 5 and hot.rejected == 1
    stale = HotList(tmp_path / "stale.msg", [hq_key.public_key()], "n1")
    stale.update(message(hq_key, now=time.time_ns() - 2 * DAY, valid=DAY)[0])
    assert stale.match(read("7ABC123")) is None  # a stale list gives no alerts


def test_list_survives_restart(tmp_path, hq_key):
    HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1").update(message(hq_key, version=3)[0])
    again = HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1")
    assert again.version == 3 and again.match(read("7ABC123"))["reason"] == "stolen-vehicle"


def _body_with(entries_, key=None, now=None):
    now = now or time.time_ns()
    return build_body(entries_, version=1, now_ns=now, key=key or secrets.token_bytes(32), valid_for_ns=DAY)


@pytest.mark.parametrize("live_first", [True, False])
def test_a_plate_listed_twice_matches_the_entry_still_in_force(tmp_path, hq_key, live_first):
    # One plate entered twice (a warrant for a month, a stolen-plate report that has lapsed):
    # both entries share a hash, and the lapsed one must not hide the other.
    now = time.time_ns()
    live = HotlistEntry(1, "7ABC123", False, "warrant", "NCIC", now + DAY, "admin", now, "")
    lapsed = HotlistEntry(2, "7ABC123", False, "stolen-plate", "SVS", now - 1, "admin", now, "")
    body = _body_with([live, lapsed] if live_first else [lapsed, live], now=now)
    hot = HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1", match_candidates=False)
    assert hot.update(signed.sign("hotlist", body, hq_key))
    for plate, how in (("7ABC123", "exact"), ("7A8C123", "confusable")):
        hit = hot.match(read(plate))
        assert hit is not None and hit["entry"] == "1" and hit["match"] == how
        assert {k: hit[k] for k in ("entry", "reason", "match")} == \
            {k: v for k, v in reference_match(body, plate, time.time_ns()).items() if k != "list_version"}


def test_plates_sharing_a_skeleton_match_the_entry_still_in_force(tmp_path, hq_key):
    # 7ABC123 (in force) and 7A8C123 (lapsed) have one confusable skeleton. Entries are sorted by
    # hash, so which of the two comes last depends on the list's key: pick a key that puts the
    # lapsed one last (the order that hid the live entry), so the check does not depend on luck.
    now = time.time_ns()
    rows = [HotlistEntry(1, "7ABC123", False, "warrant", "NCIC", now + DAY, "admin", now, ""),
            HotlistEntry(2, "7A8C123", False, "stolen-plate", "SVS", now - 1, "admin", now, "")]
    body = next(b for b in (_body_with(rows, key=bytes([i]) * 32, now=now) for i in range(64))
                if b["exact"][-1]["id"] == 2)
    hot = HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1", match_candidates=False)
    assert hot.update(signed.sign("hotlist", body, hq_key))
    hit = hot.match(read("7A8C123"))
    ref = reference_match(body, "7A8C123", time.time_ns())
    assert ref is not None and ref["entry"] == "1" and ref["match"] == "confusable"
    assert hit is not None and {k: hit[k] for k in ref} == ref


@pytest.mark.parametrize("v", [2, True, "1", None])
def test_a_body_of_another_format_version_is_refused(tmp_path, hq_key, caplog, v):
    body = _body_with(entries(time.time_ns()))
    if v is None:
        del body["v"]
    else:
        body["v"] = v
    hot = HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1")
    with caplog.at_level("WARNING", logger="node.hotlist"):
        assert not hot.update(signed.sign("hotlist", body, hq_key))
    assert hot.version == 0 and hot.rejected == 1 and hot.match(read("7ABC123")) is None
    assert not (tmp_path / "hotlist.msg").exists()
    if v is True:
        # The others are already refused by the generic control-message check; CBOR true equals
        # 1 in Python but is not format 1, and the error says which field is wrong.
        assert "field 'v'" in caplog.text


def test_a_kept_copy_of_another_format_version_is_not_used_and_does_not_stop_the_node(tmp_path, hq_key):
    body = _body_with(entries(time.time_ns()))
    body["v"] = True  # kept by a node from before the format check
    (tmp_path / "hotlist.msg").write_bytes(signed.sign("hotlist", body, hq_key))
    hot = HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1")
    assert hot.version == 0 and hot.match(read("7ABC123")) is None
    assert hot.update(message(hq_key, version=2)[0]) and hot.version == 2


def test_a_planted_temp_file_symlink_is_not_written_through(tmp_path, hq_key):
    """The list is kept with transport.atomic: a symlink at hotlist.msg.tmp is removed, not followed."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"not the hot list")
    (tmp_path / "hotlist.msg.tmp").symlink_to(victim)
    hot = HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1")
    msg = message(hq_key, version=3)[0]
    assert hot.update(msg)
    assert victim.read_bytes() == b"not the hot list"
    kept = tmp_path / "hotlist.msg"
    assert not kept.is_symlink() and kept.read_bytes() == msg and not (tmp_path / "hotlist.msg.tmp").exists()
    assert HotList(kept, [hq_key.public_key()], "n1").version == 3


def test_a_stale_temp_file_cannot_widen_the_kept_lists_mode(tmp_path, hq_key):
    """0600 (the list's hash key is in it) even when a crash left a world-readable temp file."""
    stale = tmp_path / "hotlist.msg.tmp"
    stale.write_bytes(b"half a list")
    stale.chmod(0o644)
    assert HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1").update(message(hq_key)[0])
    assert (tmp_path / "hotlist.msg").stat().st_mode & 0o777 == 0o600


def test_a_list_that_cannot_be_saved_is_still_used(tmp_path, hq_key, monkeypatch, caplog):
    """A verified list the node cannot write to its disk (full, read-only) used to be thrown
    away: the old list kept missing the new stolen vehicles until it expired."""
    from transport import atomic

    hot = HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1", match_candidates=False)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "write_bytes", disk_full)
    assert hot.update(message(hq_key, version=2)[0])
    assert hot.version == 2 and hot.match(read("7ABC123")) is not None
    assert "not saved" in caplog.text and "No space left" in caplog.text


def _mangled(body, path, value):
    """A copy of `body` with the field at `path` (keys and list indexes) set to `value`."""
    import copy
    out = copy.deepcopy(body)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


@pytest.mark.parametrize("path, value, named", [
    (("exact", 0, "exp"), "tomorrow", "exact[0]: field 'exp' is str"),
    (("exact", 0, "x"), b"short", "exact[0]: field 'x' is 5 bytes"),
    (("exact", 0, "id"), True, "exact[0]: field 'id' is bool"),
    (("patterns", 0, "exp"), -1, "patterns[0]: field 'exp' is negative"),
    (("patterns", 0, "p"), "4AB.*\n", "patterns[0]: pattern"),
    (("list_version",), "7", "body: field 'list_version' is str"),
    (("hash", "key"), "k", "body 'hash': field 'key' is str"),
    (("confusable", 0), ["0O"], "confusable[0]"),
])
def test_a_signed_list_the_matcher_cannot_use_is_refused_naming_the_field(tmp_path, hq_key, caplog, path, value,
                                                                          named):
    # HQ's signature says who sent it, not that it is well formed: a list with a text `exp` used
    # to be installed, and every later match then raised inside the pipeline.
    hot = HotList(tmp_path / "hotlist.msg", [hq_key.public_key()], "n1")
    good, body = message(hq_key, version=1)
    assert hot.update(good)
    bad = _mangled(dict(body, list_version=2), path, value)
    assert not hot.update(signed.sign("hotlist", bad, hq_key))
    assert named in caplog.text
    assert hot.version == 1 and hot.match(read("7ABC123"))["match"] == "exact"  # the old list stays in use
