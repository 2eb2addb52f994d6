"""End-to-end recognition with the shipped models on plates and scenes the project renders itself."""
from __future__ import annotations

import numpy as np
import pytest

from inference.detector import Detection, PlateDetector
from inference.errors import ModelError
from inference.metrics import box_iou
from inference.ocr import PlateReader, PlateText
from inference.recognizer import MIN_READ_CONFIDENCE, Recognizer, expand_box, looks_like_plate_crop
from inference.training.plates import PlateGenerator

pytestmark = pytest.mark.unit

TEXTS = ["ABC1234", "7XYZ123", "KLM4821", "2G8834", "WPT509"]


@pytest.fixture(scope="module")
def reader() -> PlateReader:
    return PlateReader()


@pytest.fixture(scope="module")
def recognizer(reader: PlateReader) -> Recognizer:
    return Recognizer(PlateDetector(), reader)


def scene_with_plate(plate: np.ndarray, width: int = 1280, height: int = 720, plate_w: int = 220) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A plain grey 'car front' scene with the plate pasted at a known box."""
    rng = np.random.default_rng(0)
    scene = np.full((height, width, 3), 90, np.uint8)
    scene[150:650, 300:1000] = (150, 30, 30)  # car body
    scene[250:420, 380:920] = (40, 40, 45)  # windscreen / grille
    scene = np.clip(scene + rng.normal(0, 4, scene.shape), 0, 255).astype(np.uint8)
    import cv2

    plate_h = int(plate_w * plate.shape[0] / plate.shape[1])
    x, y = 540, 470
    scene[y:y + plate_h, x:x + plate_w] = cv2.resize(plate, (plate_w, plate_h), interpolation=cv2.INTER_AREA)
    return scene, (x, y, plate_w, plate_h)


@pytest.mark.parametrize("text", TEXTS)
def test_reader_reads_rendered_plates(reader: PlateReader, text: str) -> None:
    plate = PlateGenerator(0).clean_plate(text)
    result = reader.read(plate)
    assert isinstance(result, PlateText)
    assert 0.0 < result.confidence <= 1.0
    assert len(result.char_confidences) == len(result.text)
    assert 1 <= len(result.candidates) <= 10
    assert result.candidates[0][0] == result.text
    # One view may take a letter for its look-alike (the single R OCR read WPT509 as WPI509 at
    # 0.65, WPT509 at 0.34); the three views that `recognize` reads a still image with settle it.
    assert text in [c for c, _ in result.candidates[:2]]
    assert reader.read_views(plate).text == text
    probs = [p for _, p in result.candidates]
    assert probs == sorted(probs, reverse=True)
    assert result.region is None or len(result.region) == 2


def test_recognizer_finds_and_reads_a_plate_in_a_scene(recognizer: Recognizer) -> None:
    scene, box = scene_with_plate(PlateGenerator(0).clean_plate("KLM4821"))
    results = recognizer.recognize(scene)
    assert results, "no plate found"
    best = results[0]
    assert best.source == "detector"
    assert box_iou(best.box, box) >= 0.5
    assert best.plate == "KLM4821"
    assert best.detect_ms > 0 and best.ocr_ms > 0


def test_recognizer_reads_a_tight_crop_as_a_whole_image(recognizer: Recognizer) -> None:
    import cv2

    crop = cv2.resize(PlateGenerator(0).clean_plate("ABC1234"), (300, 150), interpolation=cv2.INTER_AREA)
    results = recognizer.recognize(crop)
    assert results and results[0].plate == "ABC1234"
    assert any(r.source == "whole_image" and r.box == (0, 0, 300, 150) for r in results)


def test_empty_scene_gives_no_confident_plate(recognizer: Recognizer) -> None:
    scene = np.full((720, 1280, 3), 128, np.uint8)
    detections = recognizer.detector.detect(scene)
    assert detections == [] or all(isinstance(d, Detection) for d in detections)
    assert len(detections) <= 2


def test_a_plate_shaped_non_plate_is_not_reported_below_the_read_floor(reader: PlateReader) -> None:
    """Plate-shaped images of a few bars and blocks (a cut-out of road or a sign, not a plate):
    before, a whole read that was not sure was reported whatever its confidence ('7' at 0.002)."""
    rng = np.random.default_rng(1)
    recognizer = Recognizer(PlateDetector(), reader, views=3)
    reported = []
    for _ in range(30):
        image = np.full((100, 240, 3), rng.integers(60, 200), np.uint8)
        for _ in range(rng.integers(1, 6)):
            x, y = rng.integers(0, 220), rng.integers(0, 80)
            image[y:y + rng.integers(5, 60), x:x + rng.integers(3, 40)] = rng.integers(0, 255)
        reported += recognizer.recognize(image)
    assert reported, "the blocks should give some (unsure) readings, or this test checks nothing"
    assert all(r.confidence >= MIN_READ_CONFIDENCE for r in reported), \
        [(r.plate, round(r.confidence, 4)) for r in reported if r.confidence < MIN_READ_CONFIDENCE]


def test_crop_heuristics_and_box_expansion() -> None:
    assert looks_like_plate_crop(320, 160) and looks_like_plate_crop(200, 50)
    assert not looks_like_plate_crop(1280, 720) and not looks_like_plate_crop(640, 480)
    assert not looks_like_plate_crop(320, 240)  # a thumbnail of a car, not a plate
    assert expand_box((10, 10, 100, 50), 1000, 1000) == (4, 4, 112, 62)
    assert expand_box((0, 0, 100, 50), 105, 52) == (0, 0, 105, 52)


def test_recognizer_rejects_unknown_whole_image_mode(reader: PlateReader) -> None:
    with pytest.raises(ValueError, match="whole_image"):
        Recognizer(PlateDetector(), reader, whole_image="sometimes")


def test_default_loads_shipped_models() -> None:
    rec = Recognizer.default(threads=1)
    assert rec.detector.model.path.name == "plate_detector.tflite"
    assert rec.reader.model.path.name == "plate_ocr.tflite"


def test_tiles_find_a_small_plate_in_a_full_hd_frame() -> None:
    scene, box = scene_with_plate(PlateGenerator(0).clean_plate("WPT509"), 1920, 1080, plate_w=70)
    found = PlateDetector(tiles=2).detect(scene)
    assert any(box_iou(d.box, box) >= 0.5 for d in found)


def test_margin_views_and_fused_reading():
    from inference.ocr import PlateReader, margin_views

    crop = np.zeros((40, 100, 3), np.uint8)
    views = margin_views(crop)
    assert [v.shape[:2] for v in views] == [(40, 100), (44, 108), (36, 94)]
    reader = PlateReader()
    one = reader.read_views(crop, views=1)
    fused = reader.read_views(crop, views=3)
    assert one == reader.read(crop)
    assert len(fused.candidates) <= reader.top_k
    assert fused.candidates == sorted(fused.candidates, key=lambda c: -c[1])
    assert fused.text == fused.candidates[0][0]


def test_fused_reading_votes_the_state_over_the_views():
    from inference.ocr import margin_views

    reader = PlateReader()
    crop = PlateGenerator(5).clean_plate("7XYZ123")
    readings = [reader.read(v) for v in margin_views(crop)]
    classes = reader.model.manifest.region_classes
    assert all(len(r.region_probs) == len(classes) and r.region_confidence == max(r.region_probs) for r in readings)
    mean = np.mean([r.region_probs for r in readings], axis=0)
    fused = reader.read_views(crop, views=3)
    assert fused.region == classes[int(np.argmax(mean))]
    assert fused.region_confidence == pytest.approx(float(mean.max()))
    assert fused.region_probs == pytest.approx(tuple(mean))


@pytest.mark.parametrize("size", [(1280, 1280), (640, 480), (720, 1280), (3000, 800)])
def test_aspect_windows_cover_the_frame_at_the_model_shape(size: tuple[int, int]) -> None:
    from inference.detector import aspect_windows

    width, height = size
    windows = aspect_windows(width, height, 512, 288)
    assert len(windows) >= 2
    covered = np.zeros((height, width), bool)
    for x, y, w, h in windows:
        assert abs(w / h - 512 / 288) < 0.01
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
        covered[y:y + h, x:x + w] = True
    assert covered.all()
    # neighbours overlap by at least half a window, so a plate near a seam is whole in one
    along_y = width / height < 512 / 288
    size = windows[0][3] if along_y else windows[0][2]
    starts = sorted(y if along_y else x for x, y, _, _ in windows)
    assert max(b - a for a, b in zip(starts, starts[1:])) <= size / 2 + 1


def test_aspect_windows_leave_frames_of_the_model_shape_alone() -> None:
    from inference.detector import aspect_windows

    assert aspect_windows(1920, 1080, 512, 288) == []
    assert aspect_windows(1280, 760, 512, 288) == []  # a window would gain under 15 %


def test_windows_find_a_plate_in_a_square_still_in_image_coordinates() -> None:
    scene, box = scene_with_plate(PlateGenerator(0).clean_plate("KLM4821"), 1280, 1280, plate_w=120)
    found = PlateDetector(windows=True).detect(scene)
    assert any(box_iou(d.box, box) >= 0.5 for d in found)
    # merged across passes: no two boxes left on the same plate
    on_plate = [d for d in found if box_iou(d.box, box) >= 0.3]
    assert len(on_plate) == 1


def test_reported_plates_rank_by_reading_and_detection_and_drop_short_reads(reader: PlateReader) -> None:
    from inference.recognizer import PlateResult, rank

    sure_badge = PlateResult((0, 0, 10, 5), "AUDI", 0.9, None, 0.0, detection_score=0.45)
    plate = PlateResult((0, 0, 10, 5), "7XYZ123", 0.7, None, 0.0, detection_score=0.95)
    whole = PlateResult((0, 0, 10, 5), "7XYZ123", 0.6, None, 0.0, source="whole_image")
    assert rank(plate) > rank(sure_badge)
    assert rank(whole) == 0.6

    class OneBox:
        """A detector stand-in with PlateDetector's detect() signature: one fixed box."""

        tiles = 1

        def __init__(self, box: tuple[int, int, int, int]) -> None:
            self.box = box

        def detect(self, image_rgb: np.ndarray, windows: bool | None = None) -> list[Detection]:
            return [Detection(self.box, 0.9)]

        def input_fraction(self, box: tuple[int, int, int, int], width: int, height: int) -> float:
            return 0.1  # a plate of the size the detector boxes well: no zoomed-out pass

    scene, box = scene_with_plate(PlateGenerator(0).clean_plate("KLM4821"))
    # a box on the car body reads as nothing plate-like and is not reported
    body = Recognizer(OneBox((320, 170, 40, 40)), reader, whole_image="never", windows="off", tiles="off")  # type: ignore[arg-type]
    assert body.recognize(scene) == []
    on_plate = Recognizer(OneBox(box), reader, whole_image="never", windows="off", tiles="off")  # type: ignore[arg-type]
    assert [r.plate for r in on_plate.recognize(scene)] == ["KLM4821"]


class WindowsOnly:
    """A detector stand-in with PlateDetector's detect() / detect_windows() / detect_tiles()
    signatures that finds the plate only in its window passes, and records which it was asked for."""

    def __init__(self, box: tuple[int, int, int, int], score: float = 0.9, tiles: int = 1) -> None:
        self.box = box
        self.score = score
        self.tiles = tiles
        self.calls: list[str] = []

    def detect(self, image_rgb: np.ndarray, windows: bool | None = None) -> list[Detection]:
        self.calls.append("windows" if windows else "single")
        return [Detection(self.box, self.score)] if windows else []

    def detect_windows(self, image_rgb: np.ndarray) -> list[Detection]:
        self.calls.append("windows only")
        return [Detection(self.box, self.score)]

    def detect_tiles(self, image_rgb: np.ndarray, tiles: int = 2) -> list[Detection]:
        self.calls.append("tiles only")
        return []

    def input_fraction(self, box: tuple[int, int, int, int], width: int, height: int) -> float:
        return 0.1  # a plate of the size the detector boxes well: no zoomed-out pass


class Everywhere(WindowsOnly):
    """Finds the plate in the single pass too."""

    def detect(self, image_rgb: np.ndarray, windows: bool | None = None) -> list[Detection]:
        self.calls.append("windows" if windows else "single")
        return [Detection(self.box, self.score)]


def test_windows_auto_looks_again_only_when_one_pass_reads_no_sure_plate(reader: PlateReader) -> None:
    scene, box = scene_with_plate(PlateGenerator(0).clean_plate("WPT509"), 1280, 1280)
    detector = WindowsOnly(box)
    auto = Recognizer(detector, reader, windows="auto", tiles="off")  # type: ignore[arg-type]
    assert [r.plate for r in auto.recognize(scene)] == ["WPT509"]
    assert detector.calls == ["single", "windows only"]

    confident = Everywhere(box)
    assert [r.plate for r in Recognizer(confident, reader, windows="auto", tiles="off").recognize(scene)] == ["WPT509"]  # type: ignore[arg-type]
    assert confident.calls == ["single"]  # read confidently from a sure box at once: no window passes
    # a confident reading of a box the detector is unsure of (a badge, say) is no reason to stop looking
    unsure = Everywhere(box, score=0.4)
    Recognizer(unsure, reader, windows="auto", tiles="off").recognize(scene)  # type: ignore[arg-type]
    assert unsure.calls == ["single", "windows only"]
    never = WindowsOnly(box)
    Recognizer(never, reader, windows="off", tiles="off").recognize(scene)  # type: ignore[arg-type]
    assert never.calls == ["single"]
    always = WindowsOnly(box)
    assert [r.plate for r in Recognizer(always, reader, windows="on", tiles="off").recognize(scene)] == ["WPT509"]  # type: ignore[arg-type]
    assert always.calls == ["windows"]
    with pytest.raises(ValueError, match="windows"):
        Recognizer(never, reader, windows="sometimes", tiles="off")  # type: ignore[arg-type]


def test_a_plate_framed_twice_is_reported_once(reader: PlateReader) -> None:
    scene, box = scene_with_plate(PlateGenerator(0).clean_plate("KLM4821"))
    x, y, w, h = box

    class TwoBoxes(WindowsOnly):
        def detect(self, image_rgb: np.ndarray, windows: bool | None = None) -> list[Detection]:
            # a tight and a loose box on one plate, as two passes can leave them
            return [Detection(box, 0.9), Detection((x - w // 8, y - h // 4, w + w // 4, h + h // 2), 0.8)]

    results = Recognizer(TwoBoxes(box), reader, windows="off").recognize(scene)  # type: ignore[arg-type]
    assert [r.plate for r in results] == ["KLM4821"]


def test_a_scene_read_whole_for_want_of_detections_must_read_like_a_plate(reader: PlateReader) -> None:
    noise = np.random.default_rng(1).integers(0, 255, (720, 1280, 3)).astype(np.uint8)
    nothing = WindowsOnly((0, 0, 1, 1))
    nothing.detect_windows = lambda image_rgb: []  # type: ignore[method-assign]
    results = Recognizer(nothing, reader, windows="auto").recognize(noise)  # type: ignore[arg-type]
    assert all(len(r.plate) >= 3 and r.confidence >= MIN_READ_CONFIDENCE for r in results)
    assert all(r.source == "whole_image_fallback" for r in results)


class TilesOnly(WindowsOnly):
    """Finds the plate only in its tile passes."""

    def detect(self, image_rgb: np.ndarray, windows: bool | None = None) -> list[Detection]:
        self.calls.append("single")
        return []

    def detect_windows(self, image_rgb: np.ndarray) -> list[Detection]:
        self.calls.append("windows only")
        return []

    def detect_tiles(self, image_rgb: np.ndarray, tiles: int = 2) -> list[Detection]:
        self.calls.append(f"tiles only {tiles}")
        return [Detection(self.box, self.score)]


def test_tiles_auto_look_for_small_plates_only_when_nothing_sure_is_found(reader: PlateReader) -> None:
    scene, box = scene_with_plate(PlateGenerator(0).clean_plate("WPT509"), 1920, 1080)
    auto = TilesOnly(box)
    assert [r.plate for r in Recognizer(auto, reader).recognize(scene)] == ["WPT509"]  # type: ignore[arg-type]
    assert auto.calls == ["single", "windows only", "tiles only 2"]
    off = TilesOnly(box)
    assert Recognizer(off, reader, tiles="off", whole_image="never").recognize(scene) == []  # type: ignore[arg-type]
    assert "tiles only 2" not in off.calls
    sure = Everywhere(box)
    Recognizer(sure, reader).recognize(scene)  # type: ignore[arg-type]
    assert sure.calls == ["single"]  # a sure plate at once: neither windows nor tiles
    tiling = TilesOnly(box, tiles=2)  # a detector that tiles every frame itself is not asked again
    Recognizer(tiling, reader, whole_image="never").recognize(scene)  # type: ignore[arg-type]
    assert tiling.calls == ["single", "windows only"]
    with pytest.raises(ValueError, match="tiles"):
        Recognizer(off, reader, tiles="on")  # type: ignore[arg-type]


def test_detect_tiles_adds_only_the_tile_passes_and_only_on_big_frames() -> None:
    detector = PlateDetector()
    small, _ = scene_with_plate(PlateGenerator(0).clean_plate("WPT509"), 1000, 720)
    assert detector.detect_tiles(small) == []  # not more than twice the input width: no tiles
    scene, box = scene_with_plate(PlateGenerator(0).clean_plate("WPT509"), 1920, 1080, plate_w=70)
    found = detector.detect_tiles(scene)
    assert any(box_iou(d.box, box) >= 0.5 for d in found)
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)


def test_tile_grid_grows_with_the_frame_so_plates_keep_their_scale() -> None:
    from inference.detector import MAX_TILE_GRID, tile_grid

    assert tile_grid(1280, 512) == 2 and tile_grid(1536, 512) == 2  # tiles at most 2x the input width
    assert tile_grid(1920, 512) == 3
    assert tile_grid(8000, 512) == MAX_TILE_GRID  # bounded time on huge stills
    for width in range(1025, 1537, 37):
        n = tile_grid(width, 512)
        assert 2 * width / (n + 1) <= 2 * 512
    detector = PlateDetector()
    passes = []
    run = detector._pass
    detector._pass = lambda *args: passes.append(args[0].shape) or run(*args)  # type: ignore[method-assign]
    detector.detect_tiles(np.zeros((1080, 1920, 3), np.uint8))
    assert len(passes) == 9 and passes[0][:2] == (540, 960)  # 3x3 tiles, each half the frame each way
    passes.clear()
    detector.detect_tiles(np.zeros((720, 1280, 3), np.uint8))
    assert len(passes) == 4


def test_tile_passes_keep_boxes_from_their_own_lower_threshold(tmp_path) -> None:
    import json
    import shutil

    from inference.models_dir import DETECTOR_MODEL, shipped_model

    scene, _ = scene_with_plate(PlateGenerator(0).clean_plate("WPT509"), 1920, 1080, plate_w=70)
    loose = PlateDetector(score_threshold=0.9, tile_score_threshold=0.05)
    strict = PlateDetector(score_threshold=0.9, tile_score_threshold=0.9)
    tiles_loose, tiles_strict = loose.detect_tiles(scene), strict.detect_tiles(scene)
    assert min(d.score for d in tiles_loose) < 0.9 <= min((d.score for d in tiles_strict), default=1.0)
    assert len(tiles_loose) > len(tiles_strict)
    assert all(d.score >= 0.9 for d in loose.detect(scene))  # the single pass keeps its own
    assert PlateDetector(score_threshold=0.3, tile_score_threshold=0.8).tile_score_threshold == 0.3  # never stricter
    # read from the manifest's params, and absent there it is the single pass's
    model = shipped_model(DETECTOR_MODEL)
    shutil.copy(model, tmp_path / model.name)
    manifest = json.loads(model.with_suffix(".json").read_text())
    manifest["output"]["params"].update(score_threshold=0.6, tile_score_threshold=0.2)
    (tmp_path / model.with_suffix(".json").name).write_text(json.dumps(manifest))
    assert PlateDetector(tmp_path / model.name).tile_score_threshold == 0.2
    del manifest["output"]["params"]["tile_score_threshold"]
    (tmp_path / model.with_suffix(".json").name).write_text(json.dumps(manifest))
    assert PlateDetector(tmp_path / model.name).tile_score_threshold == 0.6


def test_aspect_windows_refuse_slivers_and_endless_strips() -> None:
    from inference.detector import MAX_WINDOWS, aspect_windows

    assert aspect_windows(10, 2000, 512, 288) == []       # windows 10 px wide: nothing to read
    assert aspect_windows(3000, 40, 512, 288) == []
    assert aspect_windows(640, 4000, 512, 288) == []      # would take more than MAX_WINDOWS passes
    assert 2 <= len(aspect_windows(1080, 1920, 512, 288)) <= MAX_WINDOWS  # a portrait phone photo


def test_tiles_and_windows_of_a_thin_strip_are_skipped_not_refused() -> None:
    from inference.errors import BadImage

    detector = PlateDetector()
    strip = np.full((3, 2000, 3), 120, np.uint8)  # a 3x3 grid would cut it into tiles 1000x1
    assert detector.detect_tiles(strip) == []
    assert detector.detect_windows(np.full((2000, 3, 3), 120, np.uint8)) == []
    assert isinstance(PlateDetector(tiles=3).detect(strip), list)  # the single pass runs; no tile pass fails
    with pytest.raises(BadImage, match="image too small: 2000x1"):  # the image itself is still refused
        detector.detect(np.full((1, 2000, 3), 120, np.uint8))


def test_fuse_readings_scores_mean_probability_and_keeps_the_chooser_chars() -> None:
    from inference.ocr import PlateText, fuse_readings

    a = PlateText("7ABC123", 0.6, [0.9] * 7, [("7ABC123", 0.6), ("7A8C123", 0.3)], "ca", 0.8, (0.8, 0.2))
    b = PlateText("7A8C123", 0.5, [0.7] * 7, [("7A8C123", 0.5), ("7ABC123", 0.45)], "ny", 0.6, (0.4, 0.6))
    fused = fuse_readings([a, b], ("ca", "ny"))
    assert fused.text == "7ABC123" and fused.confidence == pytest.approx(0.525)
    assert [t for t, _ in fused.candidates] == ["7ABC123", "7A8C123"]
    assert [p for _, p in fused.candidates] == pytest.approx([0.525, 0.4])
    assert fused.char_confidences == [0.9] * 7  # from `a`, the reading that chose the winner
    assert (fused.region, fused.region_confidence) == ("ca", pytest.approx(0.6))
    assert fused.region_probs == pytest.approx((0.6, 0.4))
    # without every reading's distribution the state is the first reading's
    assert (fuse_readings([a, b]).region, fuse_readings([a, b]).region_confidence) == ("ca", 0.8)
    assert fuse_readings([b]) is b


def _ctc_rows(text: str, alphabet: str, blank: int, steps: int, peak: float) -> np.ndarray:
    """CTC probabilities [1, steps, classes] spelling `text`: each character `peak` sure on a step
    of its own (the rest on the blank), the steps between all but sure of the blank."""
    classes = [j for j in range(len(alphabet) + 1) if j != blank]
    rows = np.full((steps, len(alphabet) + 1), 1e-4)
    rows[:, blank] = 1.0 - 1e-4 * len(alphabet)
    for i, ch in enumerate(text):
        t = 2 + 3 * i
        rows[t] = 0.0
        rows[t, classes[alphabet.index(ch)]], rows[t, blank] = peak, 1.0 - peak
    return rows[None]


def test_reader_decodes_ensemble_members_apart_and_fuses_them(monkeypatch: pytest.MonkeyPatch) -> None:
    reader = PlateReader()
    manifest = reader.model.manifest
    alphabet, blank = manifest.alphabet, manifest.blank_index
    region = np.full((1, len(manifest.region_classes)), 1.0 / len(manifest.region_classes))
    # member A is surer of ABC123 than member B is of ABC128, and their spikes sit on other steps
    a = _ctc_rows("ABC123", alphabet, blank, 32, 0.95)
    b = np.roll(_ctc_rows("ABC128", alphabet, blank, 32, 0.7), 1, axis=1)
    monkeypatch.setattr(reader.model, "run", lambda crop: ([a, b, region], 0.0))
    crop = np.zeros((40, 100, 3), np.uint8)
    fused = reader.read(crop, settle=False)
    texts = [t for t, _ in fused.candidates]
    assert fused.text == "ABC123" and "ABC128" in texts
    one = dict(reader._decode(a[0]).candidates)
    other = dict(reader._decode(b[0]).candidates)
    assert fused.confidence == pytest.approx((one["ABC123"] + other.get("ABC123", 0.0)) / 2)
    monkeypatch.setattr(reader.model, "run", lambda crop: ([region], 0.0))
    with pytest.raises(ModelError, match=r"no \[1, T, classes\] sequence output"):
        reader.read(crop)


@pytest.mark.parametrize("size", [(20, 10), (31, 16), (64, 11)])
def test_an_image_too_small_to_hold_a_readable_plate_reads_as_nothing(recognizer: Recognizer, size, caplog) -> None:
    """A plate rendered into fewer pixels than MIN_IMAGE_PX used to come back as a plate read
    from noise; now nothing is read, and the log says why."""
    import cv2

    from inference.recognizer import MIN_IMAGE_PX

    plate = cv2.resize(PlateGenerator(0).clean_plate("ABC1234"), size, interpolation=cv2.INTER_AREA)
    with caplog.at_level("WARNING", logger="inference.recognizer"):
        detections, results = recognizer.recognize_with_detections(plate)
    assert (detections, results) == ([], [])
    assert f"image {size[0]}x{size[1]} is smaller than the smallest readable plate" in caplog.text
    assert MIN_IMAGE_PX == (32, 12)


def test_the_smallest_readable_size_is_still_read(recognizer: Recognizer) -> None:
    """At the floor, no longer refused: what the OCR makes of it is returned as before."""
    import cv2

    plate = cv2.resize(PlateGenerator(0).clean_plate("ABC1234"), (74, 36), interpolation=cv2.INTER_AREA)
    assert recognizer.recognize(plate), "the size of the smallest us-plates crop is read"
