"""docs/wire-format.md against the code: its test vectors, their sizes, and its topic tree.

An implementer in another language copies the vectors from the page, not from
tests/vectors/envelope-v1.json, so the page itself must show the bytes the code makes.
"""
import re
from pathlib import Path

import pytest

from tests.support import vectors
from transport import cbor, envelope, topics
from transport.keys import key_id
from transport.payload import ReadPayload

pytestmark = pytest.mark.unit
DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
# `name` (N bytes), a blank line, then a fenced block of hex split over lines.
VECTOR = re.compile(r"^`(\w+)` \((\d+) bytes\)\n\n```\n([0-9a-f\n]+)```$", re.MULTILINE)


def doc_vectors() -> dict[str, tuple[int, str]]:
    section = DOC.read_text().split("## Test vectors", 1)[1]
    found = {}
    for name, size, block in VECTOR.findall(section):
        assert name not in found, f"{name} appears twice"
        found[name] = (int(size), "".join(block.split()))
    return found


def test_the_doc_shows_every_vector_the_code_builds_and_no_other():
    assert sorted(doc_vectors()) == sorted(vectors.build())


@pytest.mark.parametrize("name", sorted(vectors.build()))
def test_each_vector_in_the_doc_is_the_codes_bytes_and_its_stated_size(name):
    size, hex_text = doc_vectors()[name]
    assert hex_text == vectors.build()[name], f"docs/wire-format.md: {name} differs from tests/support/vectors.py"
    assert len(bytes.fromhex(hex_text)) == size, f"docs/wire-format.md: {name} is not {size} bytes"


def test_the_docs_message_opens_with_the_production_code():
    docs = {name: bytes.fromhex(h) for name, (_, h) in doc_vectors().items()}
    node, hq, _ = vectors.keys()
    opened = envelope.open_envelope(docs["message"], signer_for=lambda h: node.public_key(),
                                    decryption_keys={key_id(hq.public_key()): hq})
    assert opened.header_bytes == docs["header_cbor"]
    assert opened.payload_bytes == docs["payload_cbor"]
    assert opened.signature == docs["signature"]
    assert envelope.hpke_info(opened.header_bytes) == docs["hpke_info"]
    assert envelope.signed_bytes(opened.header_bytes, opened.payload_bytes) == docs["signed_bytes"]
    assert cbor.dumps([opened.header_bytes, docs["sealed"]]) == docs["message"]
    assert ReadPayload.from_wire(opened.payload) == vectors.sample_read()
    # "sk" and "rk" are the first 8 bytes of SHA-256 of the raw public keys, as the page says.
    header = cbor.loads(docs["header_cbor"])
    assert header["sk"] == key_id(node.public_key())
    assert header["rk"] == key_id(hq.public_key())


def test_the_docs_topic_tree_is_the_codes():
    text = DOC.read_text()
    block = text.split("## Topics", 1)[1].split("```")[1]
    rows = re.findall(r"^alpr/v1/node/<id>/(\w+)\s+(node → HQ|HQ → node)\s", block, re.MULTILINE)
    assert [leaf for leaf, way in rows if way == "node → HQ"] == list(topics.UP)
    assert [leaf for leaf, way in rows if way == "HQ → node"] == list(topics.DOWN)
    assert topics.node_topic("node-0001", "read") == "alpr/v1/node/node-0001/read"
    assert f"`{topics.ingest_subscriptions()[0]}`" in text
