"""Tests of run status and the choice of a cell's reported error."""

import pytest

from asym_jax import selection


def _run(test_error, *, seed=0, multiplier=1.0, top=None, diverged=None, validation=None):
    return {
        "seed": seed,
        "lr_multiplier": multiplier,
        "test_error": list(test_error),
        "validation_error": list(validation or []),
        "top_class_fraction": list(top or [0.2] * len(test_error)),
        "diverged_epoch": diverged,
    }


def _summarize(runs, selection_name="test", multipliers=(10.0, 1.0, 0.1)):
    return selection.summarize(
        {"runs": runs},
        selection=selection_name,
        multipliers=multipliers,
        collapse_fraction=0.95,
    )


def test_lowest_test_error_over_runs_and_epochs():
    runs = [
        _run([0.5, 0.4, 0.45], multiplier=10.0),
        _run([0.3, 0.2, 0.25], multiplier=1.0),
        _run([0.6, 0.5, 0.4], multiplier=0.1),
    ]
    result = _summarize(runs)
    assert result["best_error"] == 0.2
    assert result["best"] == [{"run": 1, "seed": 0, "lr_multiplier": 1.0, "epoch": 2}]
    assert result["edge_lr"] is False
    assert result["status"] == "ok"


def test_best_at_grid_edge_is_flagged():
    runs = [_run([0.1], multiplier=10.0), _run([0.3], multiplier=1.0), _run([0.4], multiplier=0.1)]
    assert _summarize(runs)["edge_lr"] is True


def test_diverged_epochs_are_never_selected():
    runs = [
        _run([0.3, 0.05], multiplier=10.0, diverged=2),
        _run([0.4, 0.2], multiplier=1.0),
        _run([0.5, 0.3], multiplier=0.1),
    ]
    result = _summarize(runs)
    assert result["best_error"] == 0.2
    assert result["run_status"][0] == {"status": "diverged", "epoch": 2}


def test_every_run_diverged_at_once():
    runs = [_run([float("nan")], multiplier=m, diverged=1) for m in (10.0, 1.0, 0.1)]
    result = _summarize(runs)
    assert result["best_error"] is None
    assert result["status"] == "diverged"


def test_all_diverged_cell_reports_finite_error():
    runs = [_run([0.9, 0.9], multiplier=m, diverged=1) for m in (10.0, 1.0)]
    runs.append(_run([0.95, float("nan")], multiplier=0.1, diverged=1))
    result = _summarize(runs)
    assert result["best_error"] == 0.9
    assert result["status"] == "diverged"


def test_collapse_must_last_to_the_end():
    recovered = _run([0.9, 0.9, 0.2], top=[1.0, 1.0, 0.15])
    collapsed = _run([0.5, 0.8865, 0.8865], top=[0.3, 1.0, 1.0])
    assert selection.run_status(recovered, 0.95) == ("ok", None)
    assert selection.run_status(collapsed, 0.95) == ("collapsed", 2)


def test_cell_of_collapsed_runs_is_collapsed():
    runs = [_run([0.8865, 0.8865], multiplier=m, top=[1.0, 1.0]) for m in (10.0, 1.0, 0.1)]
    result = _summarize(runs)
    assert result["status"] == "collapsed"
    assert result["best_error"] == pytest.approx(0.8865)


def test_validation_selection_reports_test_error_there():
    runs = [
        _run([0.10, 0.30], multiplier=10.0, validation=[0.40, 0.35]),
        _run([0.20, 0.25], multiplier=1.0, validation=[0.15, 0.12]),
    ]
    result = _summarize(runs, "validation", multipliers=(10.0, 1.0))
    assert result["best"][0]["lr_multiplier"] == 1.0
    assert result["best"][0]["epoch"] == 2
    assert result["best_error"] == 0.25


def test_seeds_are_summarized_separately():
    runs = [
        _run([0.2], seed=0, multiplier=1.0),
        _run([0.3], seed=0, multiplier=0.1),
        _run([0.5], seed=1, multiplier=1.0),
        _run([0.4], seed=1, multiplier=0.1),
    ]
    result = _summarize(runs, multipliers=(1.0, 0.1))
    assert result["best_error_per_seed"] == [0.2, 0.4]
    assert result["best_error"] == pytest.approx(0.3)
    assert [b["lr_multiplier"] for b in result["best"]] == [1.0, 0.1]
