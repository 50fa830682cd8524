r"""Time training on an accelerator and estimate the GPU-hours of every paper table.

  python -m experiments.gpu_estimate --output=gpu_estimate.json

Meant for one short session on a GPU machine (about 5 minutes on one GPU; it stops starting
new measurements after --budget_minutes). It needs no network and no dataset: every input is
synthetic, with the shapes and training-set sizes of the paper's datasets. In order:

1. The speed benchmark (`experiments/benchmark.py`) on this device: the 5-run sweep as
   `vmap` and `map` programs against single runs (all four convolution networks, uSF+BN+BM),
   the epoch program against a step loop and the feedback rules (MNIST), and the convolution
   implementations (MNIST sweep).
2. One full epoch of the 5-run uSF+BN+BM sweep per network at batch 100, on as many synthetic
   images as the largest dataset of that network has (MNIST 60,000, CIFAR 50,000, SVHN
   73,257, general 6,800, TIMIT 32,000), plus 50-step samples at batches 30, 10 and 5 for the
   networks of the batch-size table.
3. The estimated hours of each paper table (`experiments/configs/exp_a.py` and the others):
   for every cell, epochs x variants x seeds x steps per epoch x the measured step time of its
   network and batch size. Evaluation and compilation are not counted.
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from asym_jax import conditions, data, grid, sweep
from experiments import benchmark
from experiments.configs import batch_size, exp_a, exp_b, exp_c1, exp_c2, manhattan

_BUDGET = flags.DEFINE_float("budget_minutes", 4.0, "Start no new measurement after this.")
# --repeats (default here: 3) and --output are the benchmark's flags.
_REPEATS, _OUTPUT = benchmark._REPEATS, benchmark._OUTPUT
_SCALE = flags.DEFINE_float(
    "scale", 1.0, "Fraction of each training set in the timed epochs (for a trial on a CPU)."
)

PAPER_CONFIGS = {
    "A (Table 2)": exp_a,
    "B (Table 3)": exp_b,
    "C1 (Table 4)": exp_c1,
    "C2 (Table 4)": exp_c2,
    "Manhattan settings (Table 5)": manhattan,
    "Batch size (Table 6)": batch_size,
}
# Training examples of the paper's splits: the standard splits of MNIST, CIFAR, SVHN
# (svhn_cropped train), STL-10 and Flowers102 (train + validation); classes x images per
# class for the others, as in `asym_jax.data.DATASETS`.
TRAIN_EXAMPLES = {
    "mnist": 60_000,
    "cifar10": 50_000,
    "cifar100": 50_000,
    "svhn": 73_257,
    "stl10": 5_000,
    "flowers102": 2_040,
}
EPOCH_BATCHES = (30, 10, 5)
SAMPLE_STEPS = 50


def train_examples(name: str) -> int:
    """Return the training-set size of dataset `name` under the paper's protocol."""
    if name in TRAIN_EXAMPLES:
        return TRAIN_EXAMPLES[name]
    spec = data.get_spec(name)
    classes = spec.sampled_classes or spec.num_classes
    return classes * spec.train_per_class


def time_steps(architecture: str, examples: int, batch: int, steps: int | None = None):
    """Return (seconds per step, steps timed) of the 5-run uSF+BN+BM sweep at `batch`.

    `steps=None` times one whole epoch of `examples` images.
    """
    num_classes = 80 if architecture == "timit" else 10
    steps = steps or examples // batch
    dataset = benchmark.synthetic_dataset(architecture, steps * batch, num_classes=num_classes)
    config = benchmark._config("")
    sample = jnp.asarray(dataset.preprocess(dataset.train_images[:1]))
    model, tx = sweep.build_model_and_optimizer(
        config, conditions.parse("uSF+BN+BM"), dataset, sample
    )
    state = sweep._init_states(model, tx, np.zeros(benchmark.RUNS, int), sample, 0)
    epoch_fn = sweep._make_epoch_fn(
        model, tx, dataset.preprocess, batch, steps, sweep.run_loop("auto")
    )
    images = jax.device_put(dataset.train_images)
    labels = jax.device_put(dataset.train_labels)
    rates = jnp.full((benchmark.RUNS,), 5e-4, jnp.float32)
    key = jax.random.PRNGKey(0)
    compiled = epoch_fn.lower(state, rates, images, labels, key).compile()
    state, losses, _ = compiled(state, rates, images, labels, key)
    jax.block_until_ready(losses)
    began = time.perf_counter()
    state, losses, _ = compiled(state, rates, images, labels, key)
    jax.block_until_ready(losses)
    return (time.perf_counter() - began) / steps, steps


def _step_seconds(step_seconds, architecture: str, batch: int) -> float:
    if (architecture, batch) in step_seconds:
        return step_seconds[(architecture, batch)]
    # No sample at this batch size: the batch-100 step scaled by the batch, an estimate.
    return step_seconds[(architecture, 100)] * batch / 100


def estimate_hours(step_seconds: dict[tuple[str, int], float]) -> dict[str, float]:
    """Return the estimated training hours of each paper table from per-step times."""
    hours = {}
    for table, module in PAPER_CONFIGS.items():
        config = module.get_config()
        seconds = 0.0
        for name, condition in grid.grid_cells(config):
            architecture = data.get_spec(name).architecture
            for variant in condition.variants():
                for epoch in range(config.epochs):
                    batch = variant.batch_size_at(epoch, config.batch_size)
                    steps = train_examples(name) // batch
                    step = _step_seconds(step_seconds, architecture, batch)
                    seconds += steps * step * config.num_seeds
        hours[table] = seconds / 3600
    return hours


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    benchmark.check_flags()  # An unwritable --output fails now, not after the run.
    began = time.perf_counter()
    deadline = began + 60 * _BUDGET.value
    report = {
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "matmul_peak_gflops": benchmark.matmul_peak(_REPEATS.value, size=8192),
        "skipped": [],
    }
    print(f"device {report['device']}, float32 matmul {report['matmul_peak_gflops']:.0f} GFLOP/s")

    # 2 and 3 first: they are what the estimate needs.
    largest = {"mnist": 60_000, "cifar": 50_000, "svhn": 73_257, "general": 6_800}
    largest["timit"] = 32_000
    step_seconds, epochs = {}, {}
    for architecture, examples in largest.items():
        examples = max(int(examples * _SCALE.value), 100)
        seconds, steps = time_steps(architecture, examples, 100)
        step_seconds[(architecture, 100)] = seconds
        epochs[architecture] = seconds * steps
        print(
            f"{architecture}: one 5-run epoch of {examples} images at batch 100: "
            f"{seconds * steps:.1f} s ({seconds * 1000:.1f} ms per step)"
        )
    for architecture in ("mnist", "cifar", "svhn", "general"):
        for batch in EPOCH_BATCHES:
            if time.perf_counter() > deadline:
                report["skipped"].append(f"{architecture} batch {batch}")
                continue
            seconds, _ = time_steps(architecture, largest[architecture], batch, SAMPLE_STEPS)
            step_seconds[(architecture, batch)] = seconds
            print(f"{architecture}: batch {batch}: {seconds * 1000:.1f} ms per 5-run step")
    report["epoch_seconds_batch_100"] = epochs
    report["step_seconds"] = {f"{a}/{b}": s for (a, b), s in step_seconds.items()}
    report["estimated_hours"] = estimate_hours(step_seconds)
    print("\nEstimated training hours on this device (65 epochs, 5 runs, no eval/compile):")
    for table, hours in report["estimated_hours"].items():
        print(f"  {table:30s} {hours:8.1f} h")
    print(f"  {'all tables':30s} {sum(report['estimated_hours'].values()):8.1f} h")

    # 1: the benchmark items, as far as the budget goes.
    report["benchmark"] = {}
    for architecture in ("mnist", "cifar", "svhn", "general"):
        if time.perf_counter() > deadline:
            report["skipped"].append(f"benchmark {architecture}")
            continue
        steps = benchmark.DEFAULT_STEPS[architecture] * 5
        dataset = benchmark.synthetic_dataset(architecture, steps * benchmark.BATCH)
        items = {"sweep": benchmark.bench_sweep(dataset, steps, _REPEATS.value, "")}
        if architecture == "mnist":
            items["epoch"] = benchmark.bench_epoch(dataset, steps, _REPEATS.value, "")
            items["conv_impls"] = _conv_impls(dataset, steps)
        report["benchmark"][architecture] = items
        print(f"{architecture}: {json.dumps(items)}")
    if report["skipped"]:
        print(f"skipped for the time budget: {', '.join(report['skipped'])}")
    print(f"total {time.perf_counter() - began:.0f} s")
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as handle:
            json.dump(report, handle, indent=1)


def _conv_impls(dataset, steps) -> dict[str, float]:
    """Return the 5-run sweep's image-steps/s with each convolution implementation."""
    calls = {}
    for impl in ("xla_per_run", "patches", "xla"):
        calls[impl], _ = benchmark.jax_epoch_call("uSF+BN+BM", dataset, benchmark.RUNS, steps, impl)
    seconds = benchmark.time_variants(calls, _REPEATS.value)
    return {impl: benchmark.RUNS * steps * benchmark.BATCH / s for impl, s in seconds.items()}


if __name__ == "__main__":
    flags.FLAGS.set_default("repeats", 3)
    logging.set_verbosity(logging.WARNING)
    app.run(main)
