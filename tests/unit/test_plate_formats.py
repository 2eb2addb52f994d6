"""The labels' O / 0 convention, settled by each state's serial formats."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference.errors import ModelError
from inference.manifest import Manifest
from inference.models_dir import OCR_MODEL, shipped_model
from inference.ocr import PlateReader
from inference.plate_formats import PlateFormats, mask_of
from inference.training.plates import PlateGenerator

pytestmark = pytest.mark.unit

FORMATS = PlateFormats.from_labels([
    ("ia", "778AOS"), ("ia", "123ABC"),        # Iowa: DDDLLL
    ("ca", "5AOJ230"), ("ca", "L0VEY0U"),      # California: DLLLDDD, and a vanity word written with 0
    ("il", "CHICAG0"), ("il", "GOBEARS"),      # all-letter masks are vanity words, never formats
    ("mo", "ABC123"), ("mo", "AB1234"),        # two formats of one length that disagree at place 2
    (None, "XYZ123"), ("tx", ""),              # no state, no text: skipped
])


def test_formats_are_the_mixed_masks_of_each_states_labels() -> None:
    assert mask_of("778AOS") == "DDDLLL"
    assert FORMATS.to_dict() == {"ca": ["DLLLDDD", "LDLLLDL"], "ia": ["DDDLLL"], "il": ["LLLLLLD"],
                                 "mo": ["LLDDDD", "LLLDDD"]}


@pytest.mark.parametrize(("state", "read", "settled"), [
    ("ia", "778A0S", "778AOS"),    # the format has a letter there: O
    ("ia", "O00XXX", "000XXX"),    # ... and digits there: 0
    ("IA", "778A0S", "778AOS"),    # state codes in either case
    ("ca", "5A0J230", "5AOJ230"),
    ("ca", "LOVEYOU", "L0VEY0U"),  # fits the vanity mask seen with 0s
    ("il", "CHICAGO", "CHICAG0"),
    ("ia", "CUSTOM", "CUSTOM"),    # no format fits: as read (a vanity word, a foreign plate)
    ("ia", "OKL0817", "OKL0817"),
    ("mo", "AB0123", "AB0123"),    # the fitting formats disagree there: 0
    ("tx", "LOVEYOU", "LOVEYOU"),  # a state without formats: as read
    (None, "778A0S", "778A0S"),    # no state: as read
    ("ia", "ABC123", "ABC123"),    # nothing round to settle
])
def test_settle_writes_o_only_where_every_fitting_format_has_a_letter(state: str | None, read: str, settled: str) -> None:
    assert FORMATS.settle(read, state) == settled


def test_settled_candidates_merge_and_stay_ranked() -> None:
    settled = FORMATS.settle_candidates([("778A0S", 0.5), ("77BA0S", 0.2), ("778AOS", 0.3)], "ia")
    assert settled == [("778AOS", pytest.approx(0.8)), ("77BA0S", pytest.approx(0.2))]


def test_manifest_keeps_formats_and_names_a_bad_entry() -> None:
    data = Manifest.load(shipped_model(OCR_MODEL).with_suffix(".json")).to_dict()
    data["output"]["plate_formats"] = FORMATS.to_dict()
    assert Manifest.from_dict(data, "m.json").plate_formats == FORMATS
    assert Manifest.from_dict(data, "m.json").to_dict()["output"]["plate_formats"] == FORMATS.to_dict()
    data["output"]["plate_formats"] = {"ca": ["DLLLDDD", "D-LL"]}
    with pytest.raises(ModelError, match=r"m\.json: manifest key 'output\.plate_formats'\.ca must be a list of masks"):
        Manifest.from_dict(data, "m.json")
    data["output"]["plate_formats"] = ["DLLLDDD"]
    with pytest.raises(ModelError, match=r"'output\.plate_formats' must be an object"):
        Manifest.from_dict(data, "m.json")


def _ocr_copy(tmp_path: Path, formats: dict[str, list[str]] | None) -> Path:
    model = shipped_model(OCR_MODEL)
    shutil.copy(model, tmp_path / model.name)
    manifest = json.loads(model.with_suffix(".json").read_text(encoding="utf-8"))
    manifest["output"].pop("plate_formats", None)
    if formats is not None:
        manifest["output"]["plate_formats"] = formats
    (tmp_path / model.with_suffix(".json").name).write_text(json.dumps(manifest), encoding="utf-8")
    return tmp_path / model.name


def test_reader_settles_every_candidate_by_the_predicted_state(tmp_path: Path) -> None:
    plate = PlateGenerator(3).clean_plate("40K0XY")
    plain = PlateReader(_ocr_copy(tmp_path, None)).read(plate)
    assert plain.region is not None and plain.text == "40K0XY"
    # a made-up format for the state the network predicts, with letters where the 0s are
    (tmp_path / "f").mkdir()
    formats = PlateFormats({plain.region: frozenset({"DLLLLL"})})
    reader = PlateReader(_ocr_copy(tmp_path / "f", formats.to_dict()), min_state_confidence=0.0)
    reading = reader.read(np.ascontiguousarray(plate))
    assert (reading.region, reading.text) == (plain.region, "4OKOXY")
    assert reading.candidates == formats.settle_candidates(plain.candidates, plain.region)
    assert reading.confidence == pytest.approx(reading.candidates[0][1])
    assert reading.char_confidences == pytest.approx(plain.char_confidences)  # the greedy path, settled
    # a format of another state changes nothing
    other = PlateReader(_ocr_copy(tmp_path / "f", {"zz" if plain.region != "zz" else "yy": ["DLLLLL"]}),
                        min_state_confidence=0.0).read(plate)
    assert (other.text, other.candidates) == (plain.text, plain.candidates)


def test_reader_leaves_the_reading_alone_when_the_state_is_unsure(tmp_path: Path) -> None:
    plate = PlateGenerator(3).clean_plate("40K0XY")
    plain = PlateReader(_ocr_copy(tmp_path, None)).read(plate)
    (tmp_path / "f").mkdir()
    model = _ocr_copy(tmp_path / "f", {plain.region: ["DLLLLL"]})
    # the gate is on the head's confidence in this very plate: just above it, nothing is settled
    unsure = PlateReader(model, min_state_confidence=plain.region_confidence + 1e-6).read(plate)
    assert (unsure.text, unsure.candidates) == (plain.text, plain.candidates)
    sure = PlateReader(model, min_state_confidence=plain.region_confidence).read(plate)
    assert sure.text == "4OKOXY"
