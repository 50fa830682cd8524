"""One cell of an experiment: a learning-rate sweep trained as one compiled, vmapped program.

A cell is one {condition, dataset} pair. Its runs (learning-rate multipliers x seeds) are
stacked on a leading run axis and trained together: every jitted call trains all runs for a
whole epoch (`lax.scan` over batches taken on the device from device-resident data), and
every run sees the same batches. Within a step the runs are either batched with `jax.vmap`
or trained one after another by a loop in the same program (`lax.map`), see
`run_loop`; both give the same results. After each epoch all runs are evaluated, their status is
updated (a run that diverged or collapsed is marked and never stops the others), and the
state is checkpointed so a re-run resumes from the last finished epoch.

The paper (Liao, Leibo & Poggio, AAAI 2016) reports for each cell the lowest test error over
all epochs of all 5 runs. That selects on the test set; `selection="validation"` instead picks
the run and epoch on a held-out part of the training data and reports the test error there.
"""

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from asym_jax import checkpoint, data, feedback, models, optimizers, selection, train
from asym_jax.conditions import Condition

EpochCallback = Callable[[dict[str, Any]], None]

# XLA:CPU of jaxlib 0.10 also hands convolutions and reductions to its YNNPACK library, which
# made a step of the MNIST sweep 1.6 times slower (137 against 85 ms on 2 cores, xla_per_run
# convolutions). Matrix products keep YNNPACK; later XLA versions default to that.
_XLA_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@dataclasses.dataclass(frozen=True)
class RunGrid:
    """The runs of a sweep: one per (seed, learning-rate multiplier), seed-major."""

    multipliers: tuple[float, ...]
    seeds: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.multipliers) * len(self.seeds)

    def multiplier(self, run: int) -> float:
        return self.multipliers[run % len(self.multipliers)]

    def seed(self, run: int) -> int:
        return self.seeds[run // len(self.multipliers)]


def _feedback_rule(config, condition: Condition) -> feedback.FeedbackRule:
    return feedback.get_rule(
        condition.feedback,
        flip_prob=condition.flip_prob,
        sigma=config.rndf_sigma,
        sign_of_zero=config.feedback_sign_of_zero,
    )


def build_model_and_optimizer(config, condition: Condition, dataset: "data.Dataset", sample):
    """Return the cell's model and optimizer (learning rate 1, set per run later)."""
    model = models.create_model(
        dataset.architecture,
        num_classes=dataset.num_classes,
        rule=_feedback_rule(config, condition),
        bn_mode=condition.bn_mode,
        init=config.init,
        conv_impl=config.conv_impl,
        bn_momentum=config.bn_momentum,
        bn_epsilon=config.bn_epsilon,
        bn_eval_statistics=config.bn_eval_statistics,
        bias_with_bn=config.bias_with_bn,
        pool_impl=config.pool_impl,
        avg_pool_count_padding=config.avg_pool_count_padding,
    )
    key = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(
        lambda: model.init({"params": key, train.FEEDBACK_RNG: key}, sample, train=False)
    )
    params = shapes["params"]
    tx = optimizers.update_rule(
        condition.setting,
        learning_rate=1.0,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        weight_decay_mask=optimizers.weight_decay_mask(params),
        sign_of_zero=config.sign_of_zero,
    )
    if condition.clamp != "none":
        tx = optimizers.freeze(tx, models.clamp_mask(params, condition.clamp))
    return model, tx


@functools.cache
def compiler_options() -> dict[str, str] | None:
    """Return the XLA options of the sweep's training and evaluation programs, or None.

    On CPU they override the same options in `XLA_FLAGS`. An XLA that lacks them (another
    jaxlib version) keeps its defaults.
    """
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=_XLA_CPU_OPTIONS).lower(1.0).compile()
    except jax.errors.JaxRuntimeError as error:
        logging.info("Keeping XLA's default CPU options: %s", error)
        return None
    return _XLA_CPU_OPTIONS


RUN_LOOPS = ("auto", "vmap", "map")


def run_loop(choice: str = "auto") -> str:
    """Return how a step trains the runs: "vmap" (batched) or "map" (one after another).

    "auto" picks "map" on a single CPU device and "vmap" elsewhere. On 2 CPU cores the loop
    trained the MNIST sweep (5 runs, batch 100) 1.14 to 1.34 times faster than vmap,
    probably because one run's activations stay in cache. Accelerators and a run axis
    sharded over several devices want the batched program.

    Raises:
      ValueError: for a choice not in `RUN_LOOPS`.
    """
    if choice not in RUN_LOOPS:
        raise ValueError(f"Invalid run_loop {choice!r}; valid choices: {', '.join(RUN_LOOPS)}.")
    if choice != "auto":
        return choice
    return "map" if jax.default_backend() == "cpu" and jax.device_count() == 1 else "vmap"


def _over_runs(fn, loop: str, batch_args: int):
    """Apply `fn(state, *batch)` to every run of a stacked state; the batch is shared."""
    if loop == "vmap":
        return jax.vmap(fn, in_axes=(0,) + (None,) * batch_args)

    def mapped(state, *batch):
        return jax.lax.map(lambda run: fn(run, *batch), state)

    return mapped


def _init_states(model, tx, seeds: np.ndarray, sample, base_seed: int, out_shardings=None):
    """Initialise all runs, stacked on the run axis.

    Runs that share a seed share their initial weights, so the learning rates of a seed are
    compared from the same starting point; every run has its own feedback draws and per-step
    key.
    """
    root = jax.random.PRNGKey(base_seed)
    params_keys = jnp.stack([jax.random.fold_in(root, int(seed)) for seed in seeds])
    run_root = jax.random.fold_in(root, 1_000_003)
    run_keys = jnp.stack([jax.random.fold_in(run_root, r) for r in range(len(seeds))])
    feedback_keys = jax.vmap(lambda key: jax.random.fold_in(key, 1))(run_keys)

    def init_one(params_key, feedback_key, rng):
        return train.init_state(
            model, tx, sample, params_key=params_key, feedback_key=feedback_key, rng=rng
        )

    return jax.jit(jax.vmap(init_one), out_shardings=out_shardings)(
        params_keys, feedback_keys, run_keys
    )


def _make_epoch_fn(model, tx, preprocess, batch_size: int, steps: int, loop: str = "vmap"):
    train_step = _over_runs(train.make_train_step(model, tx), loop, 2)

    def epoch_fn(state, learning_rates, images, labels, data_key):
        opt_state = optax.tree_utils.tree_set(state.opt_state, learning_rate=learning_rates)
        state = state.replace(opt_state=opt_state)
        order = jax.random.permutation(data_key, images.shape[0])

        def body(state, index):
            batch = jax.lax.dynamic_slice_in_dim(order, index * batch_size, batch_size)
            return train_step(state, preprocess(images[batch]), labels[batch])

        state, losses = jax.lax.scan(body, state, jnp.arange(steps))
        finite = jax.vmap(train.tree_all_finite)(state.params)
        return state, losses, finite

    return jax.jit(epoch_fn, donate_argnums=0, compiler_options=compiler_options())


def _make_eval_fn(model, num_classes: int, preprocess, loop: str = "vmap"):
    eval_step = _over_runs(train.make_eval_step(model, num_classes), loop, 3)

    def evaluate(state, images, labels, valid):
        def body(totals, chunk):
            sums = eval_step(state, preprocess(chunk[0]), chunk[1], chunk[2])
            return jax.tree.map(jnp.add, totals, sums), None

        runs = jax.tree.leaves(state.step)[0].shape[0]
        zeros = {
            "errors": jnp.zeros((runs,), jnp.int32),
            "loss": jnp.zeros((runs,), jnp.float32),
            "class_counts": jnp.zeros((runs, num_classes), jnp.int32),
        }
        totals, _ = jax.lax.scan(body, zeros, (images, labels, valid))
        return totals

    return jax.jit(evaluate, compiler_options=compiler_options())


def _chunked(images: np.ndarray, labels: np.ndarray, chunk: int):
    """Pad an evaluation split to whole chunks; return (images, labels, valid) stacked.

    The padding repeats the split's first examples (masked out of every sum) rather than
    zeros, so that BN with `bn_eval_statistics="batch"` sees real images in the last chunk.
    """
    count = len(labels)
    chunk = min(chunk, count)
    padded = math.ceil(count / chunk) * chunk
    wrapped = np.arange(padded) % count
    images, labels = images[wrapped], labels[wrapped]
    valid = np.arange(padded) < count
    shape = lambda a: a.reshape(padded // chunk, chunk, *a.shape[1:])
    return shape(images), shape(labels), shape(valid)


@dataclasses.dataclass
class _Placement:
    """Where the sweep's arrays live: one device, or the run axis sharded over all devices.

    With several devices (or several hosts after `jax.distributed.initialize()`), the runs are
    padded to a multiple of the device count and split over a one-axis mesh "runs"; data is
    replicated. Host arrays are placed with `jax.make_array_from_callback`, which also works
    when some devices belong to other processes.
    """

    mesh: Mesh | None
    padded_runs: int

    @classmethod
    def create(cls, runs: int) -> "_Placement":
        devices = jax.devices()
        if len(devices) == 1:
            return cls(mesh=None, padded_runs=runs)
        padded = math.ceil(runs / len(devices)) * len(devices)
        return cls(mesh=Mesh(np.array(devices), ("runs",)), padded_runs=padded)

    def sharding(self, split_runs: bool):
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, PartitionSpec("runs" if split_runs else None))

    def put(self, array: np.ndarray, *, split_runs: bool) -> jax.Array:
        """Place a host array, split along its first axis or replicated."""
        array = np.asarray(array)
        if self.mesh is None:
            return jnp.asarray(array)
        return jax.make_array_from_callback(
            array.shape, self.sharding(split_runs), lambda index: array[index]
        )

    def fetch(self, tree):
        """Copy a (possibly multi-host) result to this host as NumPy arrays."""
        if jax.process_count() > 1:
            return multihost_utils.process_allgather(tree, tiled=True)
        return jax.device_get(tree)


def _padded_grid(grid: RunGrid, placement: _Placement) -> tuple[np.ndarray, np.ndarray]:
    """Per-run multipliers and seeds, repeating the last run to fill the padding."""
    runs = [min(r, grid.size - 1) for r in range(placement.padded_runs)]
    multipliers = np.array([grid.multiplier(r) for r in runs], np.float64)
    seeds = np.array([grid.seed(r) for r in runs])
    return multipliers, seeds


def _new_history(grid: RunGrid, learning_rates: np.ndarray) -> dict[str, Any]:
    runs = []
    for r in range(grid.size):
        runs.append(
            {
                "lr_multiplier": grid.multiplier(r),
                "seed": grid.seed(r),
                "base_learning_rate": float(learning_rates[r]),
                "learning_rate": [],
                "train_loss": [],
                "test_error": [],
                "test_loss": [],
                "validation_error": [],
                "top_class_fraction": [],
                "diverged_epoch": None,
            }
        )
    return {"epochs_done": 0, "runs": runs, "epoch_seconds": [], "batch_size": []}


def _record_epoch(history, epoch, config, num_classes, learning_rates, batch_size, outputs):
    """Append one epoch's metrics to `history`; return runs that diverged at this epoch."""
    losses, finite, test, validation = outputs
    steps = losses.shape[0]
    newly_diverged = []
    for r, run in enumerate(history["runs"]):
        train_loss = float(np.mean(losses[:, r])) / batch_size if steps else float("nan")
        counts = test["class_counts"][r]
        run["learning_rate"].append(float(learning_rates[r]))
        run["train_loss"].append(train_loss)
        run["test_error"].append(float(test["errors"][r]) / float(counts.sum()))
        run["test_loss"].append(float(test["loss"][r]) / float(counts.sum()))
        run["top_class_fraction"].append(float(counts.max()) / float(counts.sum()))
        if validation is not None:
            val_counts = validation["class_counts"][r]
            run["validation_error"].append(float(validation["errors"][r]) / float(val_counts.sum()))
        # Judge explosion on the epoch's last quarter of steps: a high rate's first steps can
        # spike the loss of a run that then settles.
        late = float(np.mean(losses[-max(1, steps // 4) :, r])) / batch_size if steps else 0.0
        exploded = not late <= config.loss_explosion_factor * math.log(num_classes)
        bad = not math.isfinite(train_loss) or not finite[r] or exploded
        if bad and run["diverged_epoch"] is None:
            run["diverged_epoch"] = epoch
            newly_diverged.append(r)
    history["epochs_done"] = epoch
    history["batch_size"].append(batch_size)
    return newly_diverged


def _training_split(config, dataset: "data.Dataset") -> tuple["data.Dataset", dict[str, Any]]:
    """Return the dataset to train on and the evaluation splits (test, and validation if used).

    With `selection="validation"` the training split loses a stratified validation part (and
    the normalisation is recomputed without it). `max_train_examples` keeps a seeded subset.
    """
    validation = None
    if config.selection == "validation":
        dataset, validation = data.split_validation(
            dataset, config.validation_fraction, seed=config.seed
        )
    if config.max_train_examples and config.max_train_examples < len(dataset.train_labels):
        keep = np.random.default_rng(config.seed).permutation(len(dataset.train_labels))
        keep = np.sort(keep[: config.max_train_examples])
        dataset = dataclasses.replace(
            dataset,
            train_images=dataset.train_images[keep],
            train_labels=dataset.train_labels[keep],
        )
    splits = {"test": (dataset.test_images, dataset.test_labels), "validation": validation}
    return dataset, splits


def _evaluate_splits(evaluate, state, splits_dev, runs: int, placement: _Placement):
    # Without the optimizer state and keys, cells that differ only in the update rule or in
    # a feedback rule without state share one evaluation program, which a persistent
    # compilation cache then compiles once.
    state = state.replace(opt_state=None, rng=None)
    results = {}
    for name, split in splits_dev.items():
        if split is None:
            results[name] = None
            continue
        totals = placement.fetch(evaluate(state, *split))
        results[name] = {key: np.asarray(value)[:runs] for key, value in totals.items()}
    return results


def _log_epoch(condition, dataset, epoch, epochs, history, seconds, image_steps):
    runs = history["runs"]
    errors = " ".join(f"{100 * run['test_error'][-1]:6.2f}" for run in runs)
    losses = " ".join(f"{run['train_loss'][-1]:.3g}" for run in runs)
    rates = " ".join(f"{run['learning_rate'][-1]:.3g}" for run in runs)
    mean_seconds = float(np.mean(history["epoch_seconds"]))
    logging.info(
        "%s / %s epoch %d/%d: test error %% [%s] train loss [%s] lr [%s] "
        "%.0f image-steps/s, ETA %.0f s",
        condition.label,
        dataset.name,
        epoch,
        epochs,
        errors,
        losses,
        rates,
        image_steps / seconds,
        mean_seconds * (epochs - epoch),
    )


def run_sweep(
    config: ml_collections.ConfigDict,
    condition: Condition,
    dataset: "data.Dataset",
    cell_dir: str,
    *,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train all runs of one cell, resuming from its last checkpoint, and summarise them.

    Args:
      config: the experiment config (fields listed in `experiments/configs/common.py`).
      condition: the cell's condition (feedback rule, BN mode, update setting, clamp).
      dataset: the cell's dataset, in memory.
      cell_dir: the cell's directory; checkpoints go to `<cell_dir>/checkpoints`.
      on_epoch: called after each epoch with {"epoch", "epochs", "history"}.

    Returns:
      The cell's result: `selection.summarize` fields plus the full `history`, the grid, the
      compile time and the throughput.

    Raises:
      checkpoint.CheckpointError: the cell's last checkpoint cannot be read.
    """
    grid = RunGrid(tuple(config.lr_multipliers), tuple(range(config.num_seeds)))
    placement = _Placement.create(grid.size)
    multipliers, seeds = _padded_grid(grid, placement)
    base_rates = config.base_learning_rate * multipliers
    dataset, splits = _training_split(config, dataset)
    train_images, train_labels = dataset.train_images, dataset.train_labels
    sample = jnp.asarray(dataset.preprocess(train_images[:1]))
    model, tx = build_model_and_optimizer(config, condition, dataset, sample)
    state = _init_states(
        model, tx, seeds, sample, config.seed, out_shardings=placement.sharding(split_runs=True)
    )

    checkpointer = checkpoint.CellCheckpointer(os.path.join(cell_dir, "checkpoints"))
    history = _new_history(grid, base_rates)
    start = checkpointer.latest_epoch() or 0
    if start:
        state, history = checkpointer.restore(start, state)
        logging.info("%s / %s: resuming after epoch %d", condition.label, dataset.name, start)

    images_dev = placement.put(train_images, split_runs=False)
    labels_dev = placement.put(train_labels.astype(np.int32), split_runs=False)
    splits_dev = {}
    for name, split in splits.items():
        if split is not None:
            chunks = _chunked(split[0], split[1].astype(np.int32), config.eval_batch_size)
            split = tuple(placement.put(part, split_runs=False) for part in chunks)
        splits_dev[name] = split
    loop = run_loop(config.get("run_loop", "auto"))
    evaluate = _make_eval_fn(model, dataset.num_classes, dataset.preprocess, loop)
    epoch_fns, compile_seconds = {}, 0.0
    data_root = jax.random.PRNGKey(config.seed + 7919)

    for epoch in range(start + 1, config.epochs + 1):
        batch_size = condition.batch_size_at(epoch - 1, config.batch_size)
        steps = len(train_labels) // batch_size
        if steps == 0:
            raise ValueError(
                f"Batch size {batch_size} exceeds the {len(train_labels)} training examples "
                f"of {dataset.name}; lower config.batch_size."
            )
        factor = float(
            optimizers.epoch_schedule_factor(epoch, config.lr_boundaries, config.lr_factors)
        )
        rates = placement.put((base_rates * factor).astype(np.float32), split_runs=True)
        data_key = jax.random.fold_in(data_root, epoch)
        args = (state, rates, images_dev, labels_dev, data_key)
        if batch_size not in epoch_fns:
            began = time.perf_counter()
            epoch_fn = _make_epoch_fn(model, tx, dataset.preprocess, batch_size, steps, loop)
            epoch_fns[batch_size] = epoch_fn.lower(*args).compile()
            compile_seconds += time.perf_counter() - began
            logging.info(
                "%s / %s: compiled the epoch of batch %d in %.1f s",
                condition.label,
                dataset.name,
                batch_size,
                time.perf_counter() - began,
            )

        began = time.perf_counter()
        state, losses, finite = epoch_fns[batch_size](*args)
        evaluated = _evaluate_splits(evaluate, state, splits_dev, grid.size, placement)
        losses, finite = placement.fetch((losses, finite))
        seconds = time.perf_counter() - began

        outputs = (
            np.asarray(losses)[:, : grid.size],
            np.asarray(finite)[: grid.size],
            evaluated["test"],
            evaluated["validation"],
        )
        newly_diverged = _record_epoch(
            history, epoch, config, dataset.num_classes, base_rates * factor, batch_size, outputs
        )
        if newly_diverged:
            keep = np.ones(placement.padded_runs, bool)
            keep[newly_diverged] = False
            active = state.active & placement.put(keep, split_runs=True)
            state = state.replace(active=active)
        history["epoch_seconds"].append(seconds)
        checkpointer.save(epoch, state, history)
        _log_epoch(
            condition,
            dataset,
            epoch,
            config.epochs,
            history,
            seconds,
            steps * batch_size * grid.size,
        )
        if on_epoch is not None:
            on_epoch({"epoch": epoch, "epochs": config.epochs, "history": history})
    checkpointer.close()

    result = selection.summarize(
        history,
        selection=config.selection,
        multipliers=tuple(config.lr_multipliers),
        collapse_fraction=config.collapse_fraction,
    )
    image_steps = sum((len(train_labels) // b) * b * grid.size for b in history["batch_size"])
    result.update(
        history=history,
        compile_seconds=compile_seconds,
        image_steps_per_second=image_steps / max(sum(history["epoch_seconds"]), 1e-9),
        lr_multipliers=list(config.lr_multipliers),
        num_seeds=config.num_seeds,
        selection=config.selection,
    )
    return result
