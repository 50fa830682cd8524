"""An experiment's grid of cells {dataset x condition}, run in order into a results store.

The results store is `<workdir>/results/`, one JSON file per finished cell, each written
atomically (a temporary file renamed into place), so a killed run never leaves half a result.
A re-run skips every cell whose result exists and resumes an interrupted cell from its last
checkpoint in `<workdir>/cells/<cell id>/`. Several processes or hosts can share one workdir
by taking disjoint shards of the cell list (`grid_shard="i/n"`).
"""

import json
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any

import jax
from absl import logging

from asym_jax import conditions, data, layers, models, selection, sweep

RESULTS_DIR = "results"
CELLS_DIR = "cells"


def cell_id(dataset_name: str, label: str) -> str:
    """Return a file-name-safe id of the cell, e.g. "mnist5k__uSF+BN+BM"."""
    safe = re.sub(r"[^A-Za-z0-9+.=-]+", "_", label).strip("_")
    return f"{dataset_name}__{safe}"


def parse_shard(shard: str) -> tuple[int, int]:
    """Parse "i/n" (0 <= i < n) into (i, n)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ValueError(
            f"Invalid grid_shard {shard!r}: expected 'i/n' with 0 <= i < n, e.g. '0/1' to run "
            "every cell or '1/4' for the second of four processes."
        )
    return int(match[1]), int(match[2])


def _check_choice(field: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(
            f"Invalid config.{field}={value!r}; valid choices: {', '.join(map(str, choices))}."
        )


def _check_range(field: str, value, low: float, high: float, *, text: str) -> None:
    if not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"Invalid config.{field}={value!r}: it must be {text}.")


def validate_config(config) -> None:
    """Raise ValueError naming the first config field with an invalid value."""
    _check_choice("selection", config.selection, selection.SELECTIONS)
    _check_choice("init", config.init, models.INITS)
    _check_choice("normalization", config.normalization, data.NORMALIZATIONS)
    _check_choice("bn_eval_statistics", config.bn_eval_statistics, models.BN_EVAL_STATISTICS)
    _check_choice("conv_impl", config.conv_impl, layers.CONV_IMPLS)
    _check_choice("pool_impl", config.pool_impl, models.POOL_IMPLS)
    _check_choice("resize_mode", config.resize_mode, data.RESIZE_MODES)
    _check_choice("feedback_sign_of_zero", config.feedback_sign_of_zero, (1.0, -1.0, 0.0))
    _check_choice("sign_of_zero", config.sign_of_zero, (1.0, -1.0, 0.0))
    for field in ("epochs", "batch_size", "num_seeds", "eval_batch_size"):
        value = config[field]
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid config.{field}={value!r}: it must be an integer >= 1.")
    if not config.lr_multipliers or any(m < 0 for m in config.lr_multipliers):
        raise ValueError(
            f"Invalid config.lr_multipliers={config.lr_multipliers!r}: give one or more "
            "non-negative multipliers of base_learning_rate, e.g. (100, 10, 1, 0.1, 0.01)."
        )
    if len(config.lr_factors) != len(config.lr_boundaries) + 1:
        raise ValueError(
            f"config.lr_factors={config.lr_factors!r} needs one factor more than "
            f"config.lr_boundaries={config.lr_boundaries!r} has epochs."
        )
    _check_range("base_learning_rate", config.base_learning_rate, 0, float("inf"), text=">= 0")
    _check_range(
        "validation_fraction", config.validation_fraction, 1e-9, 1 - 1e-9, text="in (0, 1)"
    )
    _check_range("collapse_fraction", config.collapse_fraction, 1e-9, 1, text="in (0, 1]")
    _check_range(
        "loss_explosion_factor", config.loss_explosion_factor, 1e-9, float("inf"), text="> 0"
    )
    _check_range("max_train_examples", config.max_train_examples, 0, float("inf"), text=">= 0")


def grid_cells(config) -> list[tuple[str, conditions.Condition]]:
    """Return the grid's cells (dataset name, condition), dataset-major, after validation."""
    validate_config(config)
    parsed = [conditions.parse(label) for label in config.conditions]
    for name in config.datasets:
        data.get_spec(name)
    return [(name, condition) for name in config.datasets for condition in parsed]


def check_workdir(workdir: str) -> None:
    """Create `workdir` if needed and check that it is writable."""
    try:
        os.makedirs(os.path.join(workdir, RESULTS_DIR), exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as error:
        raise ValueError(
            f"The workdir {workdir!r} is not writable ({error.strerror}); pass a directory you "
            "can write to with --workdir."
        ) from error


def write_json_atomically(path: str, payload: Any) -> None:
    """Write `payload` as JSON to `path` through a temporary file and a rename."""
    directory = os.path.dirname(path)
    with tempfile.NamedTemporaryFile(
        "w", dir=directory, prefix=".tmp-", suffix=".json", delete=False
    ) as handle:
        json.dump(payload, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def load_results(workdir: str) -> list[dict[str, Any]]:
    """Return every cell result in the workdir's results store, sorted by cell id."""
    directory = os.path.join(workdir, RESULTS_DIR)
    if not os.path.isdir(directory):
        return []
    results = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json") and not name.startswith("."):
            with open(os.path.join(directory, name)) as handle:
                results.append(json.load(handle))
    return results


def _run_cell(config, condition, dataset, cell_dir, on_epoch) -> dict[str, Any]:
    """Run a cell; for the paper's uSF+BM, run both of its variants and keep the better one."""
    variants = condition.variants()
    if not config.try_batch_schedule:
        variants = variants[:1]
    results = {}
    for variant in variants:
        directory = cell_dir
        if len(variants) > 1:
            directory = os.path.join(cell_dir, cell_id("variant", variant.label))
        results[variant.label] = sweep.run_sweep(
            config, variant, dataset, directory, on_epoch=on_epoch
        )
    finished = [r for r in results.values() if r["best_error"] is not None]
    chosen = (
        min(finished, key=lambda r: r["best_error"]) if finished else results[variants[0].label]
    )
    if len(variants) > 1:
        chosen = dict(chosen)
        chosen["variants"] = {
            label: {"best_error": r["best_error"], "status": r["status"]}
            for label, r in results.items()
        }
    return chosen


def run_grid(
    config,
    workdir: str,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run this process's shard of the grid; return every result in the store afterwards.

    All labels, dataset names, the shard and the workdir are validated before any training,
    so bad input fails at once and writes nothing.
    """
    cells = grid_cells(config)
    index, count = parse_shard(config.grid_shard)
    check_workdir(workdir)
    datasets: dict[str, data.Dataset] = {}

    for position, (name, condition) in enumerate(cells):
        if position % count != index:
            continue
        identifier = cell_id(name, condition.label)
        path = os.path.join(workdir, RESULTS_DIR, identifier + ".json")
        if os.path.exists(path):
            logging.info("Skipping %s: its result exists (%s).", identifier, path)
            continue
        if name not in datasets:
            datasets[name] = data.load_dataset(
                name,
                data_dir=config.data_dir or None,
                cache_dir=config.cache_dir or None,
                seed=config.seed,
                normalization=config.normalization,
                resize_mode=config.resize_mode,
            )
        dataset = datasets[name]
        cell_dir = os.path.join(workdir, CELLS_DIR, identifier)
        result = _run_cell(config, condition, dataset, cell_dir, on_epoch)
        result.update(
            dataset=name,
            paper_row=dataset.label,
            condition=condition.label,
            epochs=config.epochs,
            init=config.init,
            experiment=config.experiment,
            paper_table=config.paper_table,
        )
        # Every process of a multi-host run trains the cell; one writes its result.
        if jax.process_index() == 0:
            write_json_atomically(path, result)
        logging.info(
            "Finished %s: best error %s (%s).", identifier, result["best_error"], result["status"]
        )
    return load_results(workdir)
