"""Run status and the reported error of a cell, from the per-epoch metric history of a sweep.

Run status:
- "diverged" from the first epoch whose training loss or weights are not finite, or whose mean
  training loss per example over the last quarter of its steps exceeds
  `loss_explosion_factor * ln(num_classes)` (the loss of a uniform guess is ln(num_classes)).
  The run stops updating from then on. Its epochs from then on are selected only when no run
  of the seed has an epoch before it diverged, and the cell is then reported as diverged.
- "collapsed" from the first epoch of a streak, lasting to the last epoch trained, in which at
  least `collapse_fraction` of the test predictions fall in one class. On real MNIST digits a
  failing run predicts one class rather than producing NaN: the paper's 88.65% for uSF is
  exactly the error of always answering "1". A run that predicts one class for a few epochs
  and then recovers (a slow start) is not collapsed.
- "ok" otherwise.

Selection:
- "test" (the paper's rule): the lowest test error over all epochs of all runs of a seed.
- "validation": the run and epoch with the lowest error on a held-out part of the training
  data; the reported error is the test error at that run and epoch.
"""

import math
from typing import Any

import numpy as np

SELECTIONS = ("test", "validation")


def run_status(run: dict[str, Any], collapse_fraction: float) -> tuple[str, int | None]:
    """Return (status, first epoch of that status) of one run's history."""
    if run["diverged_epoch"] is not None:
        return "diverged", run["diverged_epoch"]
    fractions = run["top_class_fraction"]
    start = None
    for epoch in range(len(fractions), 0, -1):
        if fractions[epoch - 1] < collapse_fraction:
            break
        start = epoch
    if start is not None:
        return "collapsed", start
    return "ok", None


def _candidates(run: dict[str, Any]) -> range:
    """1-based epochs of a run that may be selected: those before it diverged."""
    last = len(run["test_error"])
    if run["diverged_epoch"] is not None:
        last = run["diverged_epoch"] - 1
    return range(1, last + 1)


def _choose(
    runs: list[dict[str, Any]], selection: str, *, include_diverged: bool = False
) -> tuple[int, int] | None:
    """Return (run index, 1-based epoch) chosen by `selection`, or None if nothing qualifies."""
    key = "test_error" if selection == "test" else "validation_error"
    best = None
    for index, run in enumerate(runs):
        epochs = range(1, len(run[key]) + 1) if include_diverged else _candidates(run)
        for epoch in epochs:
            value = run[key][epoch - 1]
            if math.isfinite(value) and (best is None or value < best[0]):
                best = (value, index, epoch)
    return None if best is None else best[1:]


def summarize(
    history: dict[str, Any],
    *,
    selection: str,
    multipliers: tuple[float, ...],
    collapse_fraction: float,
) -> dict[str, Any]:
    """Summarise a sweep's history into the cell's result.

    Returns:
      A dict with `best_error` (the mean over seeds of each seed's selected test error, a
      fraction, or None if no epoch of any run has a finite error), `best_error_per_seed`,
      `status` ("ok", "collapsed" or "diverged": the status of the selected run at the
      selected epoch, or "diverged" when nothing could be selected), `best` (run, seed,
      multiplier and epoch of each seed's choice), `edge_lr` (True when a seed's chosen
      multiplier is the largest or smallest of the grid, so the grid may not bracket the
      optimum), and `run_status` per run.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"Unknown selection {selection!r}; valid choices: {SELECTIONS}.")
    runs = history["runs"]
    statuses = [run_status(run, collapse_fraction) for run in runs]
    seeds = sorted({run["seed"] for run in runs})

    per_seed, best, cell_status, edge = [], [], "ok", False
    for seed in seeds:
        indices = [i for i, run in enumerate(runs) if run["seed"] == seed]
        choice = _choose([runs[i] for i in indices], selection)
        if choice is None:
            # Every run diverged in its first epoch: report the best error they reached, so
            # the table shows e.g. a constant prediction's 90%, marked diverged.
            cell_status = "diverged"
            choice = _choose([runs[i] for i in indices], selection, include_diverged=True)
            if choice is None:
                continue
        run_index, epoch = indices[choice[0]], choice[1]
        run = runs[run_index]
        per_seed.append(run["test_error"][epoch - 1])
        best.append(
            {"run": run_index, "seed": seed, "lr_multiplier": run["lr_multiplier"], "epoch": epoch}
        )
        status, since = statuses[run_index]
        if status == "collapsed" and epoch >= since and cell_status == "ok":
            cell_status = "collapsed"
        if len(multipliers) > 1 and run["lr_multiplier"] in (max(multipliers), min(multipliers)):
            edge = True

    return {
        "best_error": float(np.mean(per_seed)) if per_seed else None,
        "best_error_per_seed": per_seed,
        "status": cell_status,
        "best": best,
        "edge_lr": edge,
        "run_status": [{"status": s, "epoch": e} for s, e in statuses],
    }
