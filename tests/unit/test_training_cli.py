"""`alpr-train`'s guards and hand-over, and REPORT.md's staleness check, without TensorFlow or the data.

The trainings themselves are replaced by stand-ins that write small fake model files, so these
tests check what the command line does around them: which folder a run may write, when it
stops, and that models reach --models only once every model of the run is there.
"""
from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import cv2
import pytest

from inference.training import cli, train_detector, train_ocr
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
    """Trainings that write fake models into paths.models (the detector fails when told to), and
    an importable stand-in for TensorFlow."""
    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    state: dict[str, Any] = {"fail": set(), "written_to": []}

    def trainer(name: str) -> Any:
        def train(paths: Paths, **_: Any) -> dict[str, Any]:
            state["written_to"].append(paths.models)
            fake_model(paths.models, name, f"new {name}".encode())
            if name in state["fail"]:
                raise TrainingError(f"{name} stand-in failed after writing its model")
            return {"metrics": {}}
        return train

    monkeypatch.setattr(train_ocr, "train", trainer(OCR))
    monkeypatch.setattr(train_detector, "train", trainer(DET))
    return state


# --quick and the shipped folder


def test_quick_defaults_to_a_folder_in_the_cache(tmp_path: Path) -> None:
    parser, args = parse("all", "--quick", "--cache", str(tmp_path / "c"), "--data", str(tmp_path / "none"))
    paths = cli.resolve_paths(parser, args)
    assert paths.models == tmp_path / "c" / "quick-models"
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
    assert all(folder.parent == cache / "staging" for folder in stand_ins["written_to"])
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
            self.code = 1 if argv[3] == "detector" else None  # the detector fails, the OCR still runs

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
    for argv in launched:
        staged = Path(argv[argv.index("--models") + 1])
        assert staged.parent == cache / "staging" and "--staged" in argv and "--synthetic-only" in argv


def test_staged_is_refused_with_the_shipped_folder(tmp_path: Path) -> None:
    parser, args = parse("ocr", "--staged", "--synthetic-only", "--models", str(MODELS_DIR))
    with pytest.raises(SystemExit):
        cli.resolve_paths(parser, args)


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
