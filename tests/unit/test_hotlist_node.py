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
