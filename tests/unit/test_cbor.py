import pytest

from transport import cbor
from transport.errors import EncodingError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value, encoded", [
    (0, "00"), (23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"), (65536, "1a00010000"),
    (2**32, "1b0000000100000000"), (-1, "20"), (-25, "3818"), (b"", "40"), (b"\x01\x02", "420102"),
    ("", "60"), ("a", "6161"), ("ü", "62c3bc"), ([], "80"), ([1, [2, 3]], "8201820203"),
    ({}, "a0"), (True, "f5"), (False, "f4"), (None, "f6"),
])
def test_known_encodings_rfc8949(value, encoded):
    assert cbor.dumps(value).hex() == encoded
    assert cbor.loads(bytes.fromhex(encoded)) == value


def test_map_keys_sorted_bytewise_by_encoding():
    # RFC 8949 §4.2.1: "b" (0x6162) sorts before "aa" (0x626161): shorter encoding first.
    assert cbor.dumps({"aa": 1, "b": 2, 10: 3}).hex() == "a30a03616202626161" + "01"


@pytest.mark.parametrize("bad, why", [
    ("1817", "shortest"),          # 23 with a one-byte head
    ("5f4100ff", "indefinite"),    # indefinite byte string
    ("a2616101616101", "order"),   # repeated key
    ("a2616201616101", "order"),   # unsorted keys
    ("f93c00", "floats"),          # half float
    ("c11a514b67b0", "tags"),      # tagged date
    ("0000", "trailing"),
    ("62c3", "truncated"),
    ("6180", "UTF-8"),
])
def test_decoder_refuses_non_deterministic_or_malformed(bad, why):
    with pytest.raises(EncodingError, match=why):
        cbor.loads(bytes.fromhex(bad))


def test_floats_refused_on_encode():
    with pytest.raises(EncodingError, match="floats"):
        cbor.dumps({"conf": 0.5})


def test_nesting_bomb_refused():
    with pytest.raises(EncodingError, match="deep"):
        cbor.loads(bytes.fromhex("81" * 100 + "00"))
