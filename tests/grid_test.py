"""Tests of the grid runner, the results store, the report and the command line."""

import json
import os
import subprocess
import sys

import pytest

from asym_jax import grid, selection, sweep
from experiments import report
from experiments.configs import quick

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tiny_config(tmp_path):
    """Two conditions on 300 real digits, one epoch, two learning rates."""
    config = quick.get_config("conditions=SGD;uSF+BN+BM")
    config.epochs = 1
    config.max_train_examples = 300
    config.lr_multipliers = (1.0, 0.1)
    config.eval_batch_size = 500
    config.cache_dir = str(tmp_path / "cache")
    return config


def _result_files(workdir):
    return sorted(os.listdir(os.path.join(workdir, grid.RESULTS_DIR)))


def test_tiny_grid_writes_results_and_tables(tiny_config, tmp_path):
    workdir = str(tmp_path / "work")
    results = grid.run_grid(tiny_config, workdir)
    text = report.write_report(results, workdir, paper_table="A")

    assert _result_files(workdir) == ["mnist5k__SGD.json", "mnist5k__uSF+BN+BM.json"]
    assert [r["condition"] for r in results] == ["SGD", "uSF+BN+BM"]
    for name in ("table.md", "table.csv", "table.txt"):
        assert os.path.getsize(os.path.join(workdir, "report", name)) > 0
    assert "mnist5k (MNIST)" in text
    assert "[0.67]" in text  # The paper's SGD number on MNIST.
    curves = os.listdir(os.path.join(workdir, "report", "curves"))
    assert sorted(curves) == ["mnist5k__SGD.png", "mnist5k__uSF+BN+BM.png"]


def test_rerun_skips_finished_cells(tiny_config, tmp_path, monkeypatch):
    workdir = str(tmp_path / "work")
    tiny_config.conditions = ("SGD",)
    first = grid.run_grid(tiny_config, workdir)

    def fail(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(sweep, "run_sweep", fail)
    second = grid.run_grid(tiny_config, workdir)
    assert second == first

    with open(os.path.join(workdir, grid.RESULTS_DIR, "mnist5k__SGD.json")) as handle:
        result = json.load(handle)
    assert result["status"] in ("ok", "collapsed", "diverged")
    assert len(result["history"]["runs"]) == 2
    assert result["paper_row"] == "MNIST"
    assert 0.0 <= result["best_error"] <= 1.0


def test_killed_grid_leaves_no_partial_result_and_resumes(tiny_config, tmp_path):
    workdir = str(tmp_path / "work")
    tiny_config.epochs = 2

    def kill_second_cell(event):
        if event["history"]["runs"] and event["epoch"] == 1 and _result_files(workdir):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grid.run_grid(tiny_config, workdir, on_epoch=kill_second_cell)
    assert _result_files(workdir) == ["mnist5k__SGD.json"]

    epochs = []
    results = grid.run_grid(tiny_config, workdir, on_epoch=lambda e: epochs.append(e["epoch"]))
    assert epochs == [2]  # Only the interrupted cell's second epoch is left to train.
    assert _result_files(workdir) == ["mnist5k__SGD.json", "mnist5k__uSF+BN+BM.json"]
    assert all(r["history"]["epochs_done"] == 2 for r in results)


def test_grid_shards_split_cells(tiny_config, tmp_path):
    workdir = str(tmp_path / "work")
    tiny_config.grid_shard = "1/2"
    grid.run_grid(tiny_config, workdir)
    assert _result_files(workdir) == ["mnist5k__uSF+BN+BM.json"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("conditions", ("SGD", "uSF+XYZ"), "XYZ"),
        ("datasets", ("mnist6k",), "mnist6k"),
        ("grid_shard", "2/2", "grid_shard"),
        ("selection", "best", "config.selection"),
        ("init", "zeros", "config.init"),
        ("epochs", 0, "config.epochs"),
        ("lr_multipliers", (), "config.lr_multipliers"),
        ("lr_factors", (1.0,), "config.lr_factors"),
        ("validation_fraction", 1.5, "config.validation_fraction"),
        ("paper_table", "a", "config.paper_table"),
    ],
)
def test_bad_config_fails_before_writing(tiny_config, tmp_path, field, value, message):
    workdir = tmp_path / "work"
    tiny_config[field] = value
    with pytest.raises(ValueError, match=message):
        grid.run_grid(tiny_config, str(workdir))
    assert not workdir.exists()


def test_unwritable_workdir_is_reported(tiny_config, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="not writable"):
        grid.run_grid(tiny_config, str(blocker / "work"))


def test_empty_workdir_is_rejected(tiny_config):
    with pytest.raises(ValueError, match="--workdir"):
        grid.run_grid(tiny_config, "")


def test_changed_settings_are_not_mixed_with_stored_cells(tiny_config, tmp_path):
    workdir = str(tmp_path / "work")
    tiny_config.conditions = ("SGD",)
    grid.run_grid(tiny_config, workdir)
    tiny_config.epochs = 2
    with pytest.raises(ValueError, match=r"epochs \(stored 1, now 2\)"):
        grid.run_grid(tiny_config, workdir)


def test_cells_stored_before_run_loop_read_as_vmap(tiny_config, tmp_path):
    workdir = tmp_path / "work"
    tiny_config.conditions = ("SGD",)
    tiny_config.run_loop = "vmap"
    grid.run_grid(tiny_config, str(workdir))
    result_path = workdir / grid.RESULTS_DIR / "mnist5k__SGD.json"
    result = json.loads(result_path.read_text())
    del result["settings"]["run_loop"]  # As an earlier version stored it.
    result_path.write_text(json.dumps(result))
    grid.run_grid(tiny_config, str(workdir))  # Skips the cell: same settings.
    tiny_config.run_loop = "map"
    with pytest.raises(ValueError, match=r"run_loop \(stored 'vmap', now 'map'\)"):
        grid.run_grid(tiny_config, str(workdir))


def test_damaged_result_file_is_named(tiny_config, tmp_path):
    workdir = tmp_path / "work"
    (workdir / grid.RESULTS_DIR).mkdir(parents=True)
    damaged = workdir / grid.RESULTS_DIR / "mnist5k__SGD.json"
    damaged.write_text('{"dataset": "mnist5k", "condi')
    with pytest.raises(ValueError, match="mnist5k__SGD.json cannot be read"):
        grid.run_grid(tiny_config, str(workdir))


def test_missing_dataset_fails_before_training(tiny_config, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started before every dataset was found")

    monkeypatch.setattr(sweep, "run_sweep", fail)
    tiny_config.datasets = ("mnist5k", "cifar10")
    tiny_config.data_dir = str(tmp_path / "no_tfds_data")
    with pytest.raises(FileNotFoundError, match="cifar10"):
        grid.run_grid(tiny_config, str(tmp_path / "work"))


def test_selection_rejects_unknown_protocol():
    with pytest.raises(ValueError, match="valid choices"):
        selection.summarize(
            {"runs": []}, selection="train", multipliers=(1.0,), collapse_fraction=1
        )


def _run_main(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "experiments.main", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_bad_condition_is_one_line_error(tmp_path):
    workdir = tmp_path / "work"
    completed = _run_main(
        "--config=experiments/configs/quick.py:conditions=SGD;uSF+XYZ", f"--workdir={workdir}"
    )
    assert completed.returncode == 2
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "XYZ" in errors[0]
    assert not workdir.exists()


def test_cli_bad_override_names_the_field(tmp_path):
    completed = _run_main(
        "--config=experiments/configs/quick.py",
        "--config.epochs=many",
        f"--workdir={tmp_path / 'work'}",
    )
    assert completed.returncode != 0
    assert "epochs" in completed.stderr
    assert not (tmp_path / "work").exists()
