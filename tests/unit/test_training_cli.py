"""`alpr-train`'s guards and hand-over, and REPORT.md's staleness check, without TensorFlow or the data.

The trainings themselves are replaced by stand-ins that write small fake model files, so these
tests check what the command line does around them: which folder a run may write, when it
stops, and that models reach --models only once every model of the run is there.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from inference.training import cli, ensemble, train_detector, train_ocr
from inference.training.common import MODELS_DIR, Paths, TrainingError, promote
from inference.training.report import measured_section

pytestmark = pytest.mark.unit

OCR, DET = train_ocr.MODEL_NAME, train_detector.MODEL_NAME


def fake_model(folder: Path, name: str, content: bytes) -> str:
    """Write NAME.tflite and a manifest whose sha256 matches it; return the hash."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.tflite").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    (folder / f"{name}.json").write_text(json.dumps({"name": name, "sha256": digest, "metrics": {}}), encoding="utf-8")
    return digest


def real_data(root: Path, folders: tuple[str, ...] = ("us-plates", "eu-scenes", "br-scenes")) -> Path:
    for name in folders:
        (root / name).mkdir(parents=True)
    return root


def parse(*argv: str) -> tuple[Any, Any]:
    parser = cli.build_parser()
    return parser, parser.parse_args(list(argv))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Trainings that write fake models into paths.models (the detector fails when told to), an
    OCR's also its Keras file into the cache; a combining of the OCR pair that writes a fake OCR
    model; and an importable stand-in for TensorFlow."""
    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    state: dict[str, Any] = {"fail": set(), "written_to": [], "combined": []}

    def trainer(name: str) -> Any:
        def train(paths: Paths, variant: str = "", **_: Any) -> dict[str, Any]:
            state["written_to"].append(paths.models)
            fake_model(paths.models, name, f"new {name}".encode())
            if name == OCR:
                paths.float_models(variant).mkdir(parents=True, exist_ok=True)
                (paths.float_models(variant) / f"{OCR}.keras").write_bytes(f"keras {variant}".encode())
            if name in state["fail"]:
                raise TrainingError(f"{name} stand-in failed after writing its model")
            return {"metrics": {}}
        return train

    def combine(paths: Paths, member_files: list[Path], **_: Any) -> dict[str, Any]:
        state["combined"].append([Path(f).read_bytes() for f in member_files])
        fake_model(paths.models, OCR, f"new {OCR}".encode())
        return {"metrics": {}}

    monkeypatch.setattr(train_ocr, "train", trainer(OCR))
    monkeypatch.setattr(train_detector, "train", trainer(DET))
    monkeypatch.setattr(ensemble, "export_ensemble", combine)
    return state


# --quick and the shipped folder


def test_quick_defaults_to_a_folder_in_the_cache(tmp_path: Path) -> None:
    parser, args = parse("all", "--quick", "--cache", str(tmp_path / "c"), "--data", str(tmp_path / "none"))
    paths = cli.resolve_paths(parser, args)
    assert paths.models == tmp_path / "c" / "quick-models"
    assert paths.work == tmp_path / "c" / "quick"  # what it generates: away from a full run's cache
    assert paths.data == tmp_path / "none"  # a quick run needs no real data


@pytest.mark.parametrize("what", ["all", "ocr", "detector", "report"])
def test_quick_refuses_the_shipped_folder(what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(MODELS_DIR)
    with pytest.raises(SystemExit) as exc:
        cli.main([what, "--quick", "--models", str(MODELS_DIR), "--cache", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "alpr-train: error: --quick: give --models another folder than" in err and str(MODELS_DIR) in err
    assert snapshot(MODELS_DIR) == before


def test_a_run_into_the_shipped_folder_says_so_first(tmp_path: Path, stand_ins: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # never the real shipped folder: MODELS_DIR is pointed at a copy for this test
    shipped = tmp_path / "shipped"
    fake_model(shipped, OCR, b"old ocr")
    monkeypatch.setattr(cli, "MODELS_DIR", shipped)
    monkeypatch.setattr(cli, "is_shipped", lambda models: models.resolve() == shipped.resolve())
    data = real_data(tmp_path / "data")
    caplog.set_level("INFO")
    assert cli.main(["ocr", "--data", str(data), "--cache", str(tmp_path / "c"), "--models", str(shipped)]) == 0
    first = next(r.getMessage() for r in caplog.records if r.name == "alpr-train")
    assert first.startswith(f"this run replaces the shipped {OCR}.tflite + {OCR}.json in {shipped}")
    assert (shipped / f"{OCR}.tflite").read_bytes() == f"new {OCR}".encode()


# missing data


def test_a_missing_data_folder_is_an_error_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "shraed"
    with pytest.raises(SystemExit) as exc:
        cli.main(["all", "--data", str(typo), "--cache", str(tmp_path / "c"), "--models", str(tmp_path / "m")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"real data folder {typo}" in err and "not found" in err
    assert "us-plates/, eu-scenes/, br-scenes/" in err and "--synthetic-only" in err


@pytest.mark.parametrize("what, present, missing", [
    ("detector", ("us-plates",), "no eu-scenes/, br-scenes/"),
    ("ocr", ("eu-scenes", "br-scenes"), "no us-plates/"),
    ("all", ("us-plates", "eu-scenes"), "no br-scenes/"),
])
def test_missing_data_subfolders_are_named(what: str, present: tuple[str, ...], missing: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = real_data(tmp_path / "data", present)
    parser, args = parse(what, "--data", str(data), "--models", str(tmp_path / "m"))
    with pytest.raises(SystemExit):
        cli.resolve_paths(parser, args)
    assert missing in capsys.readouterr().err


def test_data_needed_follows_the_run(tmp_path: Path) -> None:
    data = real_data(tmp_path / "data", ("us-plates",))
    parser, args = parse("ocr", "--ocr-scene-copies", "0", "--data", str(data), "--models", str(tmp_path / "m"))
    assert cli.resolve_paths(parser, args).real_data  # the OCR on US crops alone needs only us-plates/
    parser, args = parse("all", "--synthetic-only", "--data", str(tmp_path / "none"), "--models", str(tmp_path / "m"))
    paths = cli.resolve_paths(parser, args)
    assert not paths.real_data and paths.real("us-plates") is None
    # --synthetic-only keeps real folders out even where they exist
    assert Paths(data, tmp_path, tmp_path, real_data=False).real("us-plates") is None
    assert Paths(data, tmp_path, tmp_path).real("us-plates") == data / "us-plates"


# TensorFlow


def test_training_without_tensorflow_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now raises ImportError
    with pytest.raises(SystemExit) as exc:
        cli.main(["ocr", "--synthetic-only", "--cache", str(tmp_path), "--models", str(tmp_path / "m")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "alpr-train: error: `alpr-train ocr` needs TensorFlow" in err
    assert err.rstrip().endswith(": .venv/bin/pip install -e '.[train]'")


# staging and promotion


def test_promote_moves_every_model_or_none(tmp_path: Path) -> None:
    models, staging = tmp_path / "models", tmp_path / "staging"
    fake_model(models, OCR, b"old ocr")
    fake_model(models, DET, b"old det")
    before = snapshot(models)
    fake_model(staging, OCR, b"new ocr")
    with pytest.raises(TrainingError, match=f"{DET}: {DET}.tflite or {DET}.json missing; nothing was replaced"):
        promote(staging, models, (OCR, DET))
    assert snapshot(models) == before
    fake_model(staging, DET, b"new det")
    (staging / f"{DET}.tflite").write_bytes(b"half written")
    with pytest.raises(TrainingError, match="sha256 does not match"):
        promote(staging, models, (OCR, DET))
    assert snapshot(models) == before
    fake_model(staging, DET, b"new det")
    promote(staging, models, (OCR, DET))
    assert (models / f"{OCR}.tflite").read_bytes() == b"new ocr" and (models / f"{DET}.tflite").read_bytes() == b"new det"
    assert sorted(p.name for p in models.iterdir()) == sorted(f"{n}{e}" for n in (OCR, DET) for e in (".tflite", ".json"))


def test_all_installs_the_pair_only_when_both_trainings_succeed(tmp_path: Path, stand_ins: dict[str, Any],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    models, cache = tmp_path / "models", tmp_path / "cache"
    fake_model(models, OCR, b"old ocr")
    fake_model(models, DET, b"old det")
    before = snapshot(models)
    argv = ["all", "--sequential", "--synthetic-only", "--cache", str(cache), "--models", str(models)]
    stand_ins["fail"] = {DET}
    assert cli.main(argv) == 1
    assert "alpr-train: error: plate_detector stand-in failed" in capsys.readouterr().err
    assert snapshot(models) == before  # the OCR trained fine, but no half-new pair
    assert all(cache / "staging" in folder.parents for folder in stand_ins["written_to"])
    assert stand_ins["combined"] == [[b"keras synthetic-member0", b"keras synthetic-member1"]]  # each member's own
    assert list((cache / "staging").iterdir()) == []  # the failed run's files are gone
    stand_ins["fail"] = set()
    # figures measured on the pair the run is about to make, and on another pair
    new = {n: hashlib.sha256(f"new {n}".encode()).hexdigest() for n in (OCR, DET)}
    (cache / "final").mkdir()
    (cache / "final" / "eval-us-plates.json").write_text(json.dumps(eval_figures(new)))
    (cache / "final" / "bench.json").write_text(json.dumps({"detector_invoke": {"median_ms": 1.5, "p90_ms": 2.0, "runs": 10},
                                                            "models": {OCR: "1" * 64, DET: "2" * 64}}))
    assert cli.main(argv) == 0
    assert (models / f"{OCR}.tflite").read_bytes() == f"new {OCR}".encode()
    assert (models / f"{DET}.tflite").read_bytes() == f"new {DET}".encode()
    report = (models / "REPORT.md").read_text()
    assert "| us-plates | 1 | 3 | 3 | 66.67 |" in report  # `all` writes the measured sections too
    assert "_Speed (`bench/bench_inference.py`): left out as stale" in report
    assert list((cache / "staging").iterdir()) == []


def test_side_by_side_children_write_into_the_staging_folder(tmp_path: Path, stand_ins: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    models, cache = tmp_path / "models", tmp_path / "cache"
    fake_model(models, OCR, b"old ocr")
    before = snapshot(models)
    launched: list[list[str]] = []

    class Child:
        def __init__(self, argv: list[str], **_: Any) -> None:
            launched.append(argv)
            self.code = 1 if argv[3] == "detector" else None  # the detector fails, the OCR members still run

        def poll(self) -> int | None:
            return self.code

        def terminate(self) -> None:
            self.code = -15

        def wait(self, timeout: float) -> int:
            return self.code

    monkeypatch.setattr(cli.subprocess, "Popen", Child)
    assert cli.main(["all", "--synthetic-only", "--cache", str(cache), "--models", str(models)]) == 1
    assert "detector training failed (see the log above); no model was replaced" in capsys.readouterr().err
    assert snapshot(models) == before
    assert [argv[3] for argv in launched] == ["detector", "ocr", "ocr"]
    for argv in launched:
        staged = Path(argv[argv.index("--models") + 1])
        assert cache / "staging" in staged.parents and "--staged" in argv and "--synthetic-only" in argv
    members = [argv for argv in launched if argv[3] == "ocr"]
    # each member into its own subfolder of the run's staging folder, with its own settings
    assert [argv[argv.index("--member") + 1] for argv in members] == ["0", "1"]
    assert [Path(argv[argv.index("--models") + 1]).name for argv in members] == ["member0", "member1"]
    assert all(opt not in argv for argv in members for opt in ("--seed", "--ocr-steps", "--ocr-precision", "--ocr-dropout"))


def test_staged_is_refused_with_the_shipped_folder(tmp_path: Path) -> None:
    parser, args = parse("ocr", "--staged", "--synthetic-only", "--models", str(MODELS_DIR))
    with pytest.raises(SystemExit):
        cli.resolve_paths(parser, args)


# the cache: no run replaces, or is handed, what a run of another configuration cached


class FakeModel:
    """A trained network as `export` uses it: saved as a Keras file, converted by `export_tflite`."""

    def save(self, path: Path) -> None:
        Path(path).write_bytes(os.urandom(8))


def fake_convert(model: Any, representative: Any) -> bytes:
    # other bytes at every conversion: a model file that a later run writes over is seen
    return os.urandom(16)


def crops(source: str) -> dict[str, np.ndarray]:
    """One prepared plate crop, tagged with what it was made from."""
    return {"images": np.zeros((1, 32, 128), np.uint8), "labels": np.zeros((1, 10), np.int32),
            "lengths": np.ones(1, np.int32), "regions": np.full(1, -1, np.int32), "texts": np.array(["ABC123"]),
            "source": np.array([source])}


def cache_files(cache: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """The real trainings, caching and hand-over, with only what needs TensorFlow (fitting,
    conversion) or real images (data building, measuring) stood in; the data builders tag their
    arrays with what they were made from. Returns, per fitted training, (model, the sources of the
    data it was fitted on, its options). tmp_path/data is the default data folder."""
    from inference.training import common, evaluate_detector, evaluate_ocr

    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    monkeypatch.setattr(common, "DEFAULT_DATA", tmp_path / "data")
    fitted: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    monkeypatch.setattr(train_ocr, "synth_set", lambda count, seed: crops(f"synth {count} {seed}"))
    monkeypatch.setattr(train_ocr, "real_set",
                        lambda folder, split, copies, seed: crops(f"real {folder} {split} {copies} {seed}"))
    monkeypatch.setattr(train_ocr, "scene_plate_set", lambda folders, split, copies, seed: crops(
        f"scenes {','.join(str(f) for f in folders)} {split} {copies} {seed}"))

    def fit_ocr(sets: dict[str, dict[str, np.ndarray]], timer: Any, **options: Any) -> FakeModel:
        fitted.append((OCR, {k: str(v["source"][0]) for k, v in sets.items()}, options))
        return FakeModel()

    def render(paths: Paths, count: int, seed: int, folder: Path, workers: int) -> None:
        source = (f"scenes {paths.data} {','.join(n for n in ('us-plates', 'eu-scenes', 'br-scenes') if paths.real(n))}"
                  if paths.real_data else "scenes synthetic")
        np.save(folder / "images.npy", np.frombuffer(f"{source} {count} {seed}".encode(), np.uint8))
        np.save(folder / "boxes.npy", np.zeros((1, train_detector.MAX_BOXES, 4), np.float32))

    def fit_detector(images: np.ndarray, boxes: np.ndarray, timer: Any, **options: Any) -> FakeModel:
        fitted.append((DET, {"scenes": np.asarray(images).tobytes().decode()}, options))
        return FakeModel()

    monkeypatch.setattr(train_ocr, "fit", fit_ocr)
    monkeypatch.setattr(ensemble, "combined_model", lambda member_files: FakeModel())
    monkeypatch.setattr(train_detector, "_render_scenes", render)
    monkeypatch.setattr(train_detector, "fit", fit_detector)
    for module in (train_ocr, train_detector):
        monkeypatch.setattr(module, "export_tflite", fake_convert)
    monkeypatch.setattr(evaluate_ocr, "evaluate_tflite", lambda path, data: {
        "plates": 1, "exact_pct": 0.0, "char_accuracy_pct": 0.0, "top10_pct": 0.0, "region_top1_pct": 0.0})
    monkeypatch.setattr(evaluate_detector, "threshold_curve",
                        lambda path, data, split: {"0.50": {"recall_pct": 50.0, "precision_pct": 50.0}})
    monkeypatch.setattr(evaluate_detector, "evaluate_detector", lambda *args, **kwargs: {})
    monkeypatch.setattr(evaluate_detector, "tile_threshold_curve", lambda path, data, split: {})
    return fitted


# Run one after the other into one cache: the shipped configuration first, then a quick run
# and every option that changes what is trained (each differs from all the others).
CONFIGURATIONS = [
    ["all", "--sequential"],
    ["all", "--sequential", "--quick"],
    ["all", "--sequential", "--quick", "--seed", "3"],
    ["ocr"],
    ["ocr", "--ocr-precision", "bfloat16"],
    ["ensemble", "--members", "{cache}/models/member0/plate_ocr.keras", "{cache}/models/member1/plate_ocr.keras"],
    ["ocr", "--seed", "3"],
    ["ocr", "--ocr-holdout", "2/4"],
    ["ocr", "--ocr-holdout", "3/4"],
    ["ocr", "--ocr-dropout", "0.1,0.2"],
    ["ocr", "--ocr-steps", "50"],
    ["ocr", "--ocr-scene-copies", "0"],
    ["detector", "--det-steps", "50"],
    ["detector", "--seed", "5"],
    ["all", "--sequential", "--synthetic-only"],
    ["all", "--sequential", "--data", "{other}"],
    ["all", "--sequential", "--quick", "--data", "{other}"],
]


def test_no_run_replaces_or_reuses_what_another_configuration_cached(
        tmp_path: Path, pipeline: list[tuple[str, dict[str, str], dict[str, Any]]]) -> None:
    cache = tmp_path / "cache"
    data, other = real_data(tmp_path / "data"), real_data(tmp_path / "other")
    for i, configuration in enumerate(CONFIGURATIONS):
        argv = [a.format(other=other, cache=cache) for a in configuration]
        run_data = other if str(other) in argv else data
        if "--data" not in argv:
            argv += ["--data", str(data)]
        argv += ["--models", str(tmp_path / f"models{i}")]  # each run's own: the cache is what is checked
        before, fitted_before = cache_files(cache) if cache.is_dir() else {}, len(pipeline)
        assert cli.main([*argv, "--cache", str(cache)]) == 0, argv
        after = cache_files(cache)
        # nothing cached before was replaced or removed ...
        assert {p: after.get(p) for p in before} == before, argv
        new = [Path(p) for p in after if p not in before]
        if "--quick" in argv:  # ... and a quick run writes only under quick/
            assert all(p.parts[0] == "quick" for p in new), (argv, new)
        # ... each trained model left its own float model (and a combined OCR pair one more) ...
        trained = [name for name, _, _ in pipeline[fitted_before:]] + ([OCR] if argv[0] in ("all", "ensemble") else [])
        assert sorted(p.name for p in new if p.name.endswith("_float.tflite")) == sorted(f"{n}_float.tflite" for n in trained)
        # ... and was fitted on data made for its own configuration, not on another's from the cache
        for name, sources, options in pipeline[fitted_before:]:
            seed = options["seed"]
            for source in sources.values():
                assert source.endswith(f" {seed}"), (argv, source)
                if source.startswith(("real", "scenes")) and "synthetic" not in source:
                    assert f" {run_data}/" in source or f" {run_data} " in source, (argv, source)
            if "--synthetic-only" in argv:
                assert all(s.startswith(("synth", "scenes synthetic")) for s in sources.values()), (argv, sources)
            if "--ocr-holdout" in argv:
                k = argv[argv.index("--ocr-holdout") + 1].replace("/", "of")
                assert f" rest{k} " in sources["real_train"], (argv, sources)
    assert (cache / "models" / f"{OCR}_float.tflite").is_file() and (cache / "models" / f"{DET}_float.tflite").is_file()
    assert (cache / "quick" / "models" / f"{OCR}_float.tflite").is_file()
    assert (cache / "models" / "single-holdout2of4" / f"{OCR}.keras").is_file()
    assert all((cache / "models" / f"member{i}" / f"{OCR}.keras").is_file() for i in (0, 1))
    assert (cache / "quick" / "models" / "seed3_4-member0" / f"{OCR}_float.tflite").is_file()
    assert (cache / "models" / "single" / f"{OCR}_float.tflite").is_file()  # R alone is not the shipped OCR


def test_a_quick_run_leaves_the_full_runs_float_models_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported defect, through the trainings' own export step: a quick run in the default
    cache wrote its float models over those of the last full run."""
    from inference.training.common import Timer

    for module in (train_ocr, train_detector):
        monkeypatch.setattr(module, "export_tflite", fake_convert)
    cache, nodata = tmp_path / "cache", tmp_path / "none"
    sets = {"synth": crops("synth")}
    scenes = [np.zeros((2, 2, 3), np.float32)]
    full = Paths(nodata, cache, tmp_path / "models")
    train_ocr.export(full, FakeModel(), sets, Timer(), {})
    train_detector.export(full, FakeModel(), scenes, Timer(), {}, 1)
    full_files = cache_files(cache)
    assert {f"models/{OCR}_float.tflite", f"models/{DET}_float.tflite"} <= set(full_files)
    parser, args = parse("all", "--quick", "--cache", str(cache), "--data", str(nodata))
    quick = cli.resolve_paths(parser, args)
    train_ocr.export(quick, FakeModel(), sets, Timer(), {})
    train_detector.export(quick, FakeModel(), scenes, Timer(), {}, 1)
    after = cache_files(cache)
    assert {p: after[p] for p in full_files} == full_files
    assert any(p.endswith(f"{OCR}_float.tflite") for p in set(after) - set(full_files))


def test_arrays_cached_from_one_data_folder_are_not_used_for_another(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`--data` was in no cache key: a run on another folder trained on the default folder's crops."""
    monkeypatch.setattr(train_ocr, "synth_set", lambda count, seed: crops("synth"))
    monkeypatch.setattr(train_ocr, "real_set", lambda folder, split, copies, seed: crops(f"real {folder} {split}"))
    monkeypatch.setattr(train_ocr, "scene_plate_set", lambda folders, split, copies, seed: crops(
        f"scenes {','.join(str(f) for f in folders)} {split}"))
    cache = tmp_path / "cache"
    for name in ("data", "other"):
        data = real_data(tmp_path / name)
        paths = cli.resolve_paths(*parse("ocr", "--data", str(data), "--cache", str(cache), "--models", str(tmp_path / "m")))
        sets = train_ocr.datasets(paths, 10, 2, 3, 1)
        assert str(sets["real_train"]["source"][0]) == f"real {data}/us-plates train"
        assert f" {data}/eu-scenes," in str(sets["real_scenes_train"]["source"][0])


def test_two_writers_of_one_cache_entry_keep_to_their_own_temporary_file(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Twins sharing a cache build the same arrays at once: here the second writer starts and
    finishes while the first is still writing. With one fixed temporary name the first lost its
    file (renamed away by the second) and failed."""
    from inference.training import common

    path = tmp_path / "ocr" / "synth.npz"
    savez = np.savez
    first = {"images": np.arange(3)}

    def savez_interrupted(file: Any, **arrays: Any) -> None:
        savez(file, **arrays)
        if arrays["images"] is first["images"]:
            assert common.cached_arrays(path, lambda: {"images": np.arange(3)})["images"].tolist() == [0, 1, 2]

    monkeypatch.setattr(common.np, "savez", savez_interrupted)
    assert common.cached_arrays(path, lambda: first)["images"].tolist() == [0, 1, 2]
    with np.load(path) as data:
        assert data["images"].tolist() == [0, 1, 2]
    assert [p.name for p in path.parent.iterdir()] == ["synth.npz"]  # no temporary left behind


def test_a_dead_writers_temporary_is_removed_a_live_ones_kept(tmp_path: Path) -> None:
    from inference.training.common import temp_for

    dest = tmp_path / "scenes_6000_0"
    dead, live = tmp_path / f".{dest.name}.999999999-abc.tmp", tmp_path / f".{dest.name}.{os.getppid()}-abc.tmp"
    dead.mkdir()
    live.write_bytes(b"being written")
    mine = temp_for(dest)
    assert not dead.exists() and live.read_bytes() == b"being written"
    assert mine.parent == tmp_path and str(os.getpid()) in mine.name and not mine.exists()


def last_json(text: str) -> Any:
    """The last of the JSON documents printed one after the other in `text`."""
    decoder, position, document = json.JSONDecoder(), 0, None
    while text[position:].strip():
        document, position = decoder.raw_decode(text, len(text) - len(text[position:].lstrip()))
    return document


def test_side_by_side_results_come_from_the_runs_own_children(tmp_path: Path, stand_ins: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The children's result files were read from the cache root, where another run sharing the
    cache writes its own: they now go through the run's staging folder."""
    cache = tmp_path / "cache"

    class Child:
        def __init__(self, argv: list[str], **_: Any) -> None:
            assert cli.main(argv[3:]) == 0  # the child, in this process, with the stand-in training
            for what in ("ocr", "detector"):  # another run sharing the cache finishes meanwhile
                (cache / f"train_{what}.json").write_text(json.dumps({what: "another run's"}))

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(cli.subprocess, "Popen", Child)
    assert cli.main(["all", "--synthetic-only", "--cache", str(cache), "--models", str(tmp_path / "models")]) == 0
    results = last_json(capsys.readouterr().out)  # the parent's (the in-process children print theirs first)
    assert results["ocr"] == {"metrics": {}} and results["detector"] == {"metrics": {}}
    assert results["ocr_members"] == [{"metrics": {}}, {"metrics": {}}]
    # the pair is combined from the Keras files its own members left in the run's staging folder
    assert stand_ins["combined"] == [[b"keras synthetic-member0", b"keras synthetic-member1"]]
    assert json.loads((cache / "train_all-synthetic.json").read_text())["ocr"] == {"metrics": {}}


# Values that differ from the default, for every option that changes what is trained, with the
# command they are given to.
NON_DEFAULT = {"seed": ("all", ["--seed", "7"]), "ocr_steps": ("ocr", ["--ocr-steps", "5"]),
               "ocr_scene_copies": ("ocr", ["--ocr-scene-copies", "0"]),
               "ocr_dropout": ("ocr", ["--ocr-dropout", "0.1,0.1"]), "ocr_holdout": ("ocr", ["--ocr-holdout", "1/4"]),
               "ocr_precision": ("ocr", ["--ocr-precision", "bfloat16"]), "det_steps": ("detector", ["--det-steps", "5"]),
               "synthetic_only": ("all", ["--synthetic-only"]), "member": ("ocr", ["--staged", "--member", "1"]),
               "members": ("ensemble", ["--members", "{a}", "{b}"]),
               "data_cache": ("ensemble", ["--members", "{a}", "{b}", "--data-cache", "{other}"])}


def paths_data_key(data: Path) -> str:
    return Paths(data, data, data).data_key


def test_every_option_either_names_a_variant_or_does_not_change_the_models(tmp_path: Path) -> None:
    from inference.training.common import DEFAULT_DATA

    dests = {a.dest for a in cli.build_parser()._actions if a.dest != "help"}
    # a new option must be sorted here: into the variant (and NON_DEFAULT), or into NOT_IN_VARIANT
    assert dests == set(NON_DEFAULT) | cli.NOT_IN_VARIANT
    a, b = tmp_path / "a.keras", tmp_path / "b.keras"
    a.write_bytes(b"member a")
    b.write_bytes(b"member b")
    names = {"a": a, "b": b, "other": tmp_path}
    for dest, (what, option) in NON_DEFAULT.items():
        _, args = parse(what, *(o.format(**names) for o in option))
        paths = Paths(DEFAULT_DATA, tmp_path, tmp_path, real_data=not args.synthetic_only)
        assert cli.variant(args, paths, what) != "", dest
        if dest == "data_cache":  # the same members calibrated on other prepared sets
            _, without = parse(what, "--members", str(a), str(b))
            assert cli.variant(args, paths, what) != cli.variant(without, paths, what)
    # the shipped configuration is `all` with its defaults: the detector and the OCR pair
    paths = Paths(DEFAULT_DATA, tmp_path, tmp_path)
    for what in ("all", "detector"):
        assert cli.variant(parse(what)[1], paths, what) == ""
    assert cli.variant(parse("ocr", "--staged", "--member", "0")[1], paths, OCR) == "member0"
    # the pair's own settings given as options are still the shipped pair
    _, args = parse("all", "--seed", "5", "--ocr-steps", "9000", "--ocr-precision", "bfloat16", "--ocr-dropout", "0.2,0.3")
    assert cli.variant(args, paths, OCR) == ""
    assert cli.variant(args, paths, "all") == "seed5"  # the detector's seed is not its own
    assert cli.variant(parse("all", "--ocr-precision", "float32")[1], paths, OCR) == "precisionfloat32"
    # one network is never the shipped OCR, not even configuration R with its defaults
    assert cli.variant(parse("ocr")[1], paths, "ocr") == "single"
    assert cli.variant(parse("ocr", "--ocr-precision", "float32")[1], paths, "ocr") == "single"
    _, args = parse("all", "--seed", "0")  # the detector's own seed: the same detector as shipped
    assert cli.variant(args, replace(paths, data=tmp_path), DET) == paths_data_key(tmp_path)
    assert cli.variant(args, paths, DET) == "" and cli.variant(args, paths, OCR) == "seed0_1"
    assert cli.variant(cli.member_args(args, 1), paths, OCR) == "seed0_1-member1"


def test_all_trains_the_e9b_pair_by_default(tmp_path: Path,
                                            pipeline: list[tuple[str, dict[str, str], dict[str, Any]]]) -> None:
    """`alpr-train all` as shipped: two OCR networks of 9,000 steps in bfloat16, seeds 5 and 6,
    combined into the one OCR file, beside the detector."""
    data, models, cache = real_data(tmp_path / "data"), tmp_path / "models", tmp_path / "cache"
    assert cli.main(["all", "--sequential", "--data", str(data), "--cache", str(cache), "--models", str(models)]) == 0
    ocr = [options for name, _, options in pipeline if name == OCR]
    assert [(o["seed"], o["steps"], o["precision"], o["dropout"]) for o in ocr] == [
        (5, 9000, "bfloat16", (0.2, 0.3)), (6, 9000, "bfloat16", (0.2, 0.3))]
    assert [name for name, _, _ in pipeline] == [OCR, OCR, DET]
    manifest = json.loads((models / f"{OCR}.json").read_text())
    assert manifest["training"]["pipeline"] == "alpr-train ensemble"
    hyper = manifest["training"]["hyper"]
    assert hyper["seed"] == 5 and [m["file"] for m in hyper["members"]] == [
        f"models/member{i}/{OCR}.keras" for i in (0, 1)]
    assert [(m["hyper"]["seed"], m["hyper"]["steps"], m["hyper"]["precision"]) for m in hyper["members"]] == [
        (5, 9000, "bfloat16"), (6, 9000, "bfloat16")]
    assert all(m["sha256"] == hashlib.sha256((cache / m["file"]).read_bytes()).hexdigest() for m in hyper["members"])
    assert (cache / "train_all.json").is_file()  # the shipped configuration's result


def test_member_and_ensemble_options_are_refused_where_they_do_not_belong(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in ((["ocr", "--member", "0"], "--member is internal to `alpr-train all`"),
                          (["ocr", "--staged", "--member", "2"], "--member 2: the OCR pair has members 0 to 1"),
                          (["all", "--members", "a", "b"], "--members / --data-cache: only with `alpr-train ensemble`"),
                          (["all", "--ocr-holdout", "1/4"], "--ocr-holdout: only with `alpr-train ocr` or `ensemble`")):
        parser, args = parse(*argv, "--synthetic-only", "--cache", str(tmp_path), "--models", str(tmp_path / "m"))
        with pytest.raises(SystemExit):
            cli.resolve_paths(parser, args)
        assert message in capsys.readouterr().err, argv


# report


def eval_figures(models: dict[str, str] | None) -> dict[str, Any]:
    fig: dict[str, Any] = {"images": 3, "reading": {"plates": 3, "exact_pct": 66.67, "char_accuracy_pct": 90.0,
                                                    "top10_pct": 100.0, "region_top1_pct": 33.33},
                           "ms": {"detect_median": 1.0, "ocr_median_per_plate": 2.0, "total_median": 3.0}}
    if models is not None:
        fig["models"] = models
    return fig


def test_report_shows_measured_figures_only_for_the_current_models(tmp_path: Path) -> None:
    models, final = tmp_path / "models", tmp_path / "final"
    current = {OCR: fake_model(models, OCR, b"ocr"), DET: fake_model(models, DET, b"det")}
    final.mkdir()
    bench = {"scene_size": [1280, 720], "detector_invoke": {"median_ms": 1.5, "p90_ms": 2.0, "runs": 10}}
    (final / "eval-us-plates.json").write_text(json.dumps(eval_figures(current)))
    (final / "bench.json").write_text(json.dumps({**bench, "models": current}))
    text = measured_section(final, models)
    assert "| us-plates | 1 | 3 | 3 | 66.67 |" in text and "| detector_invoke | 1.5 | 2.0 | 10 |" in text
    assert f"{OCR} sha256 `{current[OCR][:12]}`" in text and "stale" not in text

    older = {**current, DET: "0" * 64}
    (final / "eval-us-plates.json").write_text(json.dumps(eval_figures(older)))
    (final / "bench.json").write_text(json.dumps(bench))  # written before hashes were recorded
    (final / "us_scenes.json").write_text(json.dumps({"val": {"plates": 1, "found_pct": 100.0, "top1_pct": 100.0,
                                                              "any_pct": 100.0, "extra_plates": 0, "median_ms": 9.0},
                                                      "models": {OCR: current[OCR]}}))  # one model only: not this pair
    text = measured_section(final, models)
    assert "66.67" not in text and "1.5" not in text and "| val |" not in text
    notes = text.split("\n\n")
    assert len(notes) == 3 and all(n.startswith("_") and "left out as stale" in n and "\n" not in n for n in notes)
    assert "alpr-node eval ../shared/data/NAME --split test" in notes[0]
    assert "bench/bench_us_scenes.py --split val test > .cache/final/us_scenes.json" in notes[1]
    assert "bench/bench_inference.py --runs 200 > .cache/final/bench.json" in notes[2]


def test_report_on_a_missing_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", "--models", str(tmp_path / "nowhere"), "--cache", str(tmp_path)])
    assert exc.value.code == 2
    assert f"alpr-train: error: report: models folder {tmp_path / 'nowhere'} not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        cli.main(["report", "--models", str(tmp_path / "empty"), "--cache", str(tmp_path)])
    assert "no plate_ocr.json or plate_detector.json in" in capsys.readouterr().err


def test_help_says_what_report_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "report: rewrite REPORT.md" in out and "which model(s) to train" not in out


def test_eval_json_records_the_models_it_ran(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from inference.training.plates import PlateGenerator
    from node.cli import main as node_main

    folder = tmp_path / "crops"
    folder.mkdir()
    plate = cv2.resize(PlateGenerator(0).clean_plate("ABC1234"), (300, 150), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(plate, cv2.COLOR_RGB2BGR))
    (folder / "labels.csv").write_text("file,state,plate\na.png,ca,ABC1234\n")
    assert node_main(["eval", str(folder), "--json", "--views", "1", "--sheet", str(tmp_path / "s.html")]) == 0
    recorded = json.loads(capsys.readouterr().out)["models"]
    shipped = {name: json.loads((MODELS_DIR / f"{name}.json").read_text())["sha256"] for name in (OCR, DET)}
    assert recorded == shipped


def test_report_times_an_ensemble_by_its_slowest_member_plus_the_combining() -> None:
    """A pair's own stages are only the combining (data already cached, export, evaluation): its
    reproduction time is that plus the slowest member's, since `alpr-train all` trains them side
    by side. A single model, or members that recorded nothing, count their own stages only."""
    from inference.training.report import _training_seconds

    single = {"stage_seconds": {"ocr_data": 300.0, "ocr_train": 2400.0}}
    assert _training_seconds(single) == 2700.0
    pair = {"stage_seconds": {"ocr_data": 4.0, "ocr_export_int8": 6.0},
            "hyper": {"members": [{"stage_seconds": {"ocr_data": 375.0, "ocr_train": 2427.0}},
                                  {"stage_seconds": {"ocr_data": 370.0, "ocr_train": 2440.0}}]}}
    assert _training_seconds(pair) == 10.0 + 2810.0
    assert _training_seconds({"stage_seconds": {"ocr_data": 4.0}, "hyper": {"members": [{"file": "m0"}]}}) == 4.0
