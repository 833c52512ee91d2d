"""Training on the data the user made: a synthetic generation at ``data.root`` is used as it is
(recorded, differences warned), the study runner refuses another one, a missing dataset root is
one error line, and settings that give little are warned about."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ibs_study.cli import main
from ibs_study.config import resolve_config
from ibs_study.data.datasets import DatasetMeta
from ibs_study.data.panoptic import CategoryInfo
from ibs_study.errors import DataError
from ibs_study.study.grid import RunSpec, prepare_spec_data, run_grid, run_in_process

FAST = ["train.batch_size=4", "train.max_steps=1", "train.checkpoint_every=1", "train.device=cpu"]


@pytest.fixture(scope="module")
def own_data(tmp_path_factory) -> Path:
    """``ibs-study synth`` with the user's own sizes and seed (48 x 96 images)."""
    root = tmp_path_factory.mktemp("mine") / "D"
    argv = ["synth", "--out", str(root), "--scale", "tiny", "--num-train", "4", "--num-val", "2"]
    assert main([*argv, "--height", "48", "--width", "96", "--seed", "5", "--workers", "1"]) == 0
    return root


def _files(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def test_train_uses_the_generation_at_data_root_records_it_and_warns(own_data, tmp_path, caplog):
    before = _files(own_data)
    run = tmp_path / "run"
    argv = ["train", "--preset", "synthetic_pfcn_crop_ibs", "--out", str(run), "--no-progress"]
    with caplog.at_level(logging.WARNING):
        assert main([*argv, *_sets(f"data.root={own_data}", *FAST)]) == 0
    assert _files(own_data) == before  # used as it is: nothing regenerated
    environment = json.loads((run / "environment.json").read_text())
    assert environment[0]["synthetic"] == json.loads((own_data / "synthetic.json").read_text())
    assert environment[0]["synthetic"]["num_train"] == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    generation = [w for w in warnings if "holds its own synthetic generation" in w]
    assert len(generation) == 1 and "\n" not in generation[0]
    for difference in ("num_train 4 (preset 300)", "num_val 2 (preset 60)", "height 48 (preset 256)",
                       "width 96 (preset 512)", "seed 5 (preset 0)"):  # fmt: skip
        assert difference in generation[0]
    # the preset's 128 x 128 crops do not fit the 48 x 96 images: warned once, naming the key
    crop = [w for w in warnings if w.startswith("data.crop_size=")]
    assert crop == [
        "data.crop_size=[128, 128] (H, W) is larger than the images of synthetic_train (at most 48 x 96, "
        "H x W): crops are padded with void; set data.crop_size to at most [48, 96], or null to train on "
        "full images"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # crops that fit: no crop warning
        assert main([*argv[:4], str(tmp_path / "fits"), *_sets(f"data.root={own_data}", "data.crop_size=[32, 64]", *FAST)]) == 0  # fmt: skip
    assert not [r for r in caplog.records if r.getMessage().startswith("data.crop_size=")]


def test_the_preset_decides_what_is_generated_where_data_root_does_not_exist(tmp_path):
    from ibs_study.engine.run_dir import prepare_run_dir

    root = tmp_path / "fresh"
    cfg = resolve_config(
        preset="synthetic_pfcn_crop", overrides=[f"data.root={root}", "data.synthetic_scale=tiny"]
    )
    prepare_run_dir(tmp_path / "run", cfg, "cpu", resume=False)
    recorded = json.loads((tmp_path / "run" / "environment.json").read_text())[0]["synthetic"]
    assert (recorded["scale"], recorded["num_train"], recorded["num_val"], recorded["height"]) == (
        "tiny",
        24,
        8,
        64,
    )


def test_the_study_runner_refuses_another_generation_before_anything_runs(own_data, tmp_path):
    asked = (f"data.root={own_data}", "data.synthetic_scale=tiny", *FAST)
    spec = RunSpec("pfcn", "synthetic_pfcn_crop", asked)
    with pytest.raises(
        DataError, match=r"holds a synthetic dataset with other parameters \(height: found 48, "
    ):
        run_grid([spec], tmp_path / "grid", parallel=1, progress=False)
    assert list((tmp_path / "grid").iterdir()) == []  # no run started, no log
    with pytest.raises(DataError, match="seed: found 5, expected 0"):
        run_in_process(spec, tmp_path / "runs")
    assert not (tmp_path / "runs" / "pfcn").exists()
    before = _files(own_data)
    own = (f"data.root={own_data}", "data.synthetic_scale=tiny", "data.synthetic_seed=5")
    with pytest.raises(DataError, match="height: found 48, expected 64"):
        prepare_spec_data([RunSpec("seeded", "synthetic_pfcn_crop", own)])
    # a spec whose data root does not exist yet: generated once, before the runs
    new = tmp_path / "new"
    specs = [RunSpec(f"s{k}", "synthetic_pfcn_crop", (f"data.root={new}", "data.synthetic_scale=tiny", f"seed={k}"))
             for k in range(2)]  # fmt: skip
    prepare_spec_data(specs)
    assert json.loads((new / "synthetic.json").read_text())["num_train"] == 24
    assert _files(own_data) == before


@pytest.mark.parametrize(
    ("dataset", "missing"),
    [("cityscapes", "the Cityscapes folder"), ("mapillary_vistas", "training/ and validation/"),
     ("coco_panoptic", "the COCO-panoptic folder")],
)  # fmt: skip
def test_a_missing_real_dataset_root_is_one_line_naming_data_root(tmp_path, capsys, dataset, missing):
    nowhere, run = tmp_path / "nowhere", tmp_path / "run"
    argv = ["train", "--preset", "synthetic_pfcn_crop", "--out", str(run)]
    assert main([*argv, *_sets(f"data.dataset={dataset}", f"data.root={nowhere}")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"ibs-study train: error: data.root={nowhere}: no such folder for data.dataset={dataset}"
    )
    assert missing in err and err.count("\n") == 1 and "Traceback" not in err
    assert not run.exists()


def test_an_empty_real_dataset_root_names_the_missing_file(tmp_path):
    from ibs_study.engine.data import open_split

    root = tmp_path / "empty"
    root.mkdir()
    cases = {
        "cityscapes": r"gtFine/cityscapes_panoptic_train\.json: not found in the Cityscapes dataset root .*"
        r"createPanopticImgs",
        "mapillary_vistas": r"training/panoptic/panoptic_2018\.json: not found in the Mapillary Vistas dataset root",
    }
    for dataset, message in cases.items():
        cfg = resolve_config(
            preset="synthetic_pfcn_crop", overrides=[f"data.dataset={dataset}", f"data.root={root}"]
        )
        with pytest.raises(DataError, match=message):
            open_split(cfg, "train")


def test_a_synthetic_root_holding_other_files_is_one_line_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "other"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    run = tmp_path / "run"
    assert (
        main(["train", "--preset", "synthetic_pfcn_crop", "--out", str(run), *_sets(f"data.root={root}")])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{root}: not a complete synthetic dataset" in err and err.count("\n") == 1
    assert not run.exists() and [p.name for p in root.iterdir()] == ["notes.txt"]


def test_an_evaluation_without_thing_predictions_names_the_thresholds(own_data, tmp_path, caplog):
    from ibs_study.engine.checks import warn_if_no_thing_predictions
    from ibs_study.engine.evaluate import evaluate_run
    from ibs_study.engine.train import train

    cfg = resolve_config(preset="synthetic_pfcn_crop", overrides=[f"data.root={own_data}", "data.crop_size=[32, 64]", *FAST])  # fmt: skip
    train(cfg, tmp_path / "run", progress=False)
    key = "model.panoptic_fcn.thing_score_threshold"
    with caplog.at_level(logging.WARNING):
        metrics = evaluate_run(
            tmp_path / "run", out_dir=tmp_path / "strict", overrides=[f"{key}=1.0"], progress=False
        )
    warned = [r.getMessage() for r in caplog.records if "no thing prediction" in r.getMessage()]
    assert metrics["prec_th"] == 0.0 and len(warned) == 1
    assert warned[0].startswith("no thing prediction on the 2 evaluated image(s) passed the thresholds (")
    assert f"{key}=1.0" in warned[0] and "model.panoptic_fcn.center_threshold=0.01" in warned[0]
    assert "train more steps (train.max_steps) or evaluate with lower thresholds" in warned[0]
    model = type("Model", (), {"THING_THRESHOLD_KEYS": (key,), "cfg": cfg.model.panoptic_fcn})()
    assert not warn_if_no_thing_predictions(model, predicted_things=3, num_images=2)
    assert warn_if_no_thing_predictions(model, predicted_things=0, num_images=2)
    model.meta = DatasetMeta.from_categories(
        "stuff only", [CategoryInfo(7, "road", False, (1, 2, 3), "flat")]
    )
    assert not warn_if_no_thing_predictions(model, predicted_things=0, num_images=2)  # nothing to predict


def test_evaluate_on_a_mistyped_data_root_generates_nothing(own_data, tmp_path, capsys):
    from ibs_study.engine.train import train

    cfg = resolve_config(preset="synthetic_pfcn_crop", overrides=[f"data.root={own_data}", "data.crop_size=[32, 64]", *FAST])  # fmt: skip
    train(cfg, tmp_path / "run", progress=False)
    typo = tmp_path / "typo"
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(typo), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"ibs-study evaluate: error: {typo}: no such dataset folder (--data); pass --data with the folder "
        "that holds the synthetic dataset (evaluation does not generate one)\n"
    )
    assert not typo.exists()
