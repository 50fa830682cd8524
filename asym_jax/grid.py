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

from asym_jax import conditions, data, layers, models, selection, sweep, tables

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
    _check_choice("paper_table", config.paper_table, tuple(tables.EXPERIMENT_TABLES))
    _check_choice("selection", config.selection, selection.SELECTIONS)
    _check_choice("init", config.init, models.INITS)
    _check_choice("normalization", config.normalization, data.NORMALIZATIONS)
    _check_choice("bn_eval_statistics", config.bn_eval_statistics, models.BN_EVAL_STATISTICS)
    _check_choice("conv_impl", config.conv_impl, layers.CONV_IMPLS)
    _check_choice("pool_impl", config.pool_impl, models.POOL_IMPLS)
    _check_choice("run_loop", config.run_loop, sweep.RUN_LOOPS)
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
    if not workdir or not workdir.strip():
        raise ValueError("The workdir is empty; pass a directory with --workdir=DIR.")
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
    # NamedTemporaryFile creates files readable by the owner only; give the usual mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(handle.name, 0o666 & ~umask)
    os.replace(handle.name, path)


# Config fields that choose which cells run and where, not what a cell computes.
_BOOKKEEPING_FIELDS = (
    "experiment",
    "paper_table",
    "datasets",
    "conditions",
    "grid_shard",
    "data_dir",
    "cache_dir",
    "distributed",
)
SETTINGS_FILE = "settings.json"
# Fields added after cells were first stored, with the value that earlier versions used: a
# stored cell without the field reads as computed with that value.
_ADDED_FIELDS = {"run_loop": "vmap"}


def cell_settings(config) -> dict[str, Any]:
    """Return the config fields that decide a cell's numbers, as JSON-ready values."""
    fields = {k: v for k, v in config.to_dict().items() if k not in _BOOKKEEPING_FIELDS}
    return json.loads(json.dumps(fields))


def _settings_difference(stored: dict[str, Any], current: dict[str, Any]) -> str:
    names = sorted(set(stored) | set(current))
    return ", ".join(
        f"{name} (stored {stored.get(name)!r}, now {current.get(name)!r})"
        for name in names
        if stored.get(name) != current.get(name)
    )


def read_result(path: str) -> dict[str, Any]:
    """Read one cell result, with an error naming the file when it is damaged."""
    try:
        with open(path) as handle:
            result = json.load(handle)
        if not isinstance(result, dict) or "condition" not in result or "dataset" not in result:
            raise ValueError("it has no 'dataset' and 'condition' fields")
    except (OSError, ValueError) as error:
        raise ValueError(
            f"The result file {path} cannot be read ({error}). Delete it to train that cell "
            "again, or move it out of the results directory."
        ) from error
    return result


def load_results(workdir: str) -> list[dict[str, Any]]:
    """Return every cell result in the workdir's results store, sorted by cell id."""
    directory = os.path.join(workdir, RESULTS_DIR)
    if not os.path.isdir(directory):
        return []
    names = sorted(n for n in os.listdir(directory) if n.endswith(".json") and n[0] != ".")
    return [read_result(os.path.join(directory, name)) for name in names]


def _check_stored_settings(cells, workdir: str, settings: dict[str, Any]) -> None:
    """Raise if a finished or started cell of this workdir was computed with other settings.

    Without this check a re-run with, say, more epochs would skip a finished cell and keep
    its old number, or resume a checkpoint under a different learning rate.
    """
    for name, condition in cells:
        identifier = cell_id(name, condition.label)
        result_path = os.path.join(workdir, RESULTS_DIR, identifier + ".json")
        settings_path = os.path.join(workdir, CELLS_DIR, identifier, SETTINGS_FILE)
        if os.path.exists(result_path):
            stored, path = read_result(result_path).get("settings"), result_path
        elif os.path.exists(settings_path):
            with open(settings_path) as handle:
                stored, path = json.load(handle), settings_path
        else:
            continue
        if stored is not None:
            stored = {**_ADDED_FIELDS, **stored}
        if stored is not None and stored != settings:
            raise ValueError(
                f"Cell {identifier} in {workdir} was computed with other settings: "
                f"{_settings_difference(stored, settings)}. Use a new --workdir, or delete "
                f"{path} (and {os.path.dirname(settings_path)}) to recompute that cell."
            )


def _load_dataset(name: str, config) -> data.Dataset:
    return data.load_dataset(
        name,
        data_dir=config.data_dir or None,
        cache_dir=config.cache_dir or None,
        seed=config.seed,
        normalization=config.normalization,
        resize_mode=config.resize_mode,
    )


def _check_datasets_available(cells, config) -> None:
    """Load (and so prepare and cache) every dataset of `cells` before any training."""
    for name in dict.fromkeys(name for name, _ in cells):
        _load_dataset(name, config)


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

    Before any training: the config, labels, dataset names and shard are validated; finished
    and started cells of the workdir must have been computed with the same settings; the
    workdir must be writable; every dataset still needed is loaded once (prepared and cached
    if needed), so a missing dataset fails at once instead of after hours of other cells.

    Raises:
      ValueError: invalid input, or a workdir whose cells used other settings.
      FileNotFoundError: a dataset's source is missing (for example tfds data not prepared).
      checkpoint.CheckpointError: a cell's checkpoint cannot be read.
    """
    cells = grid_cells(config)
    index, count = parse_shard(config.grid_shard)
    mine = [cell for position, cell in enumerate(cells) if position % count == index]
    settings = cell_settings(config)
    _check_stored_settings(mine, workdir, settings)
    check_workdir(workdir)

    def result_path(name, condition):
        return os.path.join(workdir, RESULTS_DIR, cell_id(name, condition.label) + ".json")

    pending = [(name, c) for name, c in mine if not os.path.exists(result_path(name, c))]
    _check_datasets_available(pending, config)

    dataset = None
    for name, condition in mine:
        identifier = cell_id(name, condition.label)
        path = result_path(name, condition)
        if os.path.exists(path):
            logging.info("Skipping %s: its result exists (%s).", identifier, path)
            continue
        if dataset is None or dataset.name != name:
            dataset = _load_dataset(name, config)
        cell_dir = os.path.join(workdir, CELLS_DIR, identifier)
        os.makedirs(cell_dir, exist_ok=True)
        write_json_atomically(os.path.join(cell_dir, SETTINGS_FILE), settings)
        result = _run_cell(config, condition, dataset, cell_dir, on_epoch)
        result.update(
            dataset=name,
            paper_row=dataset.label,
            condition=condition.label,
            epochs=config.epochs,
            init=config.init,
            experiment=config.experiment,
            paper_table=config.paper_table,
            settings=settings,
        )
        # Every process of a multi-host run trains the cell; one writes its result.
        if jax.process_index() == 0:
            write_json_atomically(path, result)
        logging.info(
            "Finished %s: best error %s (%s).", identifier, result["best_error"], result["status"]
        )
    return load_results(workdir)
