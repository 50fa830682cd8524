r"""Measure training speed: feedback rules, sweeps, epoch programs, PyTorch and matmul peak.

  python -m experiments.benchmark --output=benchmark.json --markdown=benchmark.md

For each architecture in --architectures (the paper's MNIST, CIFAR, SVHN and general 119x119
networks), on synthetic data at batch 100, with warm-up and the median of --repeats timed
calls, each call training --steps steps (variants of one item are timed in turn, so a change
in the machine's load hits them alike):

1. feedback: one run of each feedback rule (no BN, SGD) against the symmetric rule through
   the same layers (plain backpropagation) and against flax's own `nn.Conv`/`nn.Dense`.
2. sweep: the 5-rate sweep as one program, its runs batched (`vmap`) or looped (`map`, the
   default on one CPU device), against 5 single runs one after another, in image-steps per
   second, for SGD and uSF+BN+BM.
3. epoch: the sweep's whole-epoch program (one jitted `lax.scan`) against a Python loop of
   jitted steps.
4. torch: one uSF+BN+BM run (and one SGD run) against the same network, rule and update in
   PyTorch (`experiments/torch_reference.py`), NCHW and channels_last; needs the `bench`
   extra.
5. flops: the achieved GFLOP/s of the above against a float32 matmul peak measured in this
   process. A training step counts 2 FLOPs per multiply-add of the convolution and dense
   layers in the forward pass, the weight gradient and the input gradient (none for the
   first layer); pooling, BN and the update are not counted.
6. processes (with --processes_check): the MNIST sweep in one process on all cores against one
   process per core, each pinned to its core, all running at once.
7. layers (not run by default: --items=layers): the forward and backward pass of each
   convolution layer alone (uSF; dx except for the first layer, and dW), against PyTorch's
   `conv2d` in channels_last.

The tables go to stdout; with --output every measurement goes to a JSON file, and with
--markdown the summary table (the five ratios against their targets) to a Markdown file.
--from_json=FILE prints the tables of an earlier --output file without measuring.
"""

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

from asym_jax import conditions, data, layers, models, optimizers, sweep, train
from experiments.configs import common

ARCHITECTURES = ("mnist", "cifar", "svhn", "general")
NUM_CLASSES = {"mnist": 10, "cifar": 10, "svhn": 10, "general": 101}
# Steps per timed call, so that one call of a single run takes about a second here.
DEFAULT_STEPS = {"mnist": 20, "cifar": 10, "svhn": 4, "general": 2}
FEEDBACK_CONDITIONS = (
    "SGD",
    "uSF",
    "NuSF",
    "brSF",
    "frSF",
    "brSF-p0.25",
    "frSF-p0.25",
    "RndF",
)
SWEEP_CONDITIONS = ("SGD", "uSF+BN+BM")
BATCH = 100
RUNS = 5

_ARCHITECTURES = flags.DEFINE_list("architectures", list(ARCHITECTURES), "Networks to time.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per variant; the median is kept.")
_STEPS = flags.DEFINE_integer("steps", 0, "Training steps per timed call; 0: per network.")
_ITEMS = flags.DEFINE_list(
    "items", ["feedback", "sweep", "epoch", "torch"], "Items to run (the flops use them all)."
)
_CONV_IMPL = flags.DEFINE_string("conv_impl", "", "Convolution impl; empty: the config's.")
_PROCESSES_CHECK = flags.DEFINE_bool(
    "processes_check", False, "Also time one process per core against one process (MNIST)."
)
_OUTPUT = flags.DEFINE_string("output", "", "Write every measurement to this JSON file.")
_MARKDOWN = flags.DEFINE_string(
    "markdown", "", "Write the summary table (ratios against the targets) to this Markdown file."
)
_FROM_JSON = flags.DEFINE_string(
    "from_json", "", "Measure nothing: print the report of this --output file (and --markdown)."
)
_WORKER = flags.DEFINE_string("worker", "", "Internal: barrier directory of a pinned worker.")


# Inputs and counts.


def synthetic_dataset(
    architecture: str, count: int, seed: int = 0, num_classes: int | None = None
) -> data.Dataset:
    """Return `count` random training examples (and 100 test examples) for `architecture`.

    Images are uint8; TIMIT's features are standard normal float32. `num_classes` defaults to
    `NUM_CLASSES[architecture]`.
    """
    rng = np.random.default_rng(seed)
    num_classes = num_classes or NUM_CLASSES[architecture]
    shape = data.ARCHITECTURE_INPUT_SHAPES[architecture]
    if architecture == "timit":
        offset, scale = np.zeros(shape, np.float32), np.ones(shape, np.float32)
    else:
        offset = np.full((shape[-1],), 127.5, np.float32)
        scale = np.full((shape[-1],), 1 / 73.9, np.float32)

    def split(size):
        if architecture == "timit":
            images = rng.normal(size=(size, *shape)).astype(np.float32)
        else:
            images = rng.integers(0, 256, (size, *shape), dtype=np.uint8)
        return images, rng.integers(0, num_classes, size).astype(np.int32)

    (train_images, train_labels), (test_images, test_labels) = split(count), split(100)
    return data.Dataset(
        name=f"synthetic_{architecture}",
        label=architecture,
        architecture=architecture,
        num_classes=num_classes,
        class_names=tuple(map(str, range(num_classes))),
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        normalization="standardize",
        offset=offset,
        scale=scale,
        seed=seed,
    )


def weight_layer_inputs(architecture: models.Architecture):
    """Return (layer, height, width, channels) of the input of every weight layer."""
    height, width, channels = architecture.input_shape
    inputs = []
    for layer in architecture.layers:
        if isinstance(layer, models.Pool):
            height, width = (
                models._pool_output_size(size, layer.size, layer.stride, pad)
                for size, pad in zip((height, width), layer.padding, strict=True)
            )
            continue
        inputs.append((layer, height, width, channels))
        if isinstance(layer, models.Conv):
            height, width = (
                (size + sum(pad) - layer.size) // layer.stride + 1
                for size, pad in zip((height, width), layer.padding, strict=True)
            )
        else:
            height = width = 1
        channels = layer.features
    return inputs


def training_flops(architecture: models.Architecture) -> float:
    """Return the FLOPs of one training step per image (see the module docstring)."""
    flops = 0.0
    for index, (layer, height, width, channels) in enumerate(weight_layer_inputs(architecture)):
        if isinstance(layer, models.Conv):
            out_height, out_width = (
                (size + sum(pad) - layer.size) // layer.stride + 1
                for size, pad in zip((height, width), layer.padding, strict=True)
            )
            macs = out_height * out_width * layer.size**2 * channels * layer.features
        else:
            macs = height * width * channels * layer.features
        # Forward, dW and dx; the first layer needs no dx.
        flops += 2 * macs * (2 if index == 0 else 3)
    return flops


def matmul_peak(repeats: int, size: int = 2048) -> float:
    """Return the best float32 GFLOP/s of `repeats` `size`-cubed jitted matrix products.

    The best, not the median, because other processes can only slow a product down.
    """
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(matmul(a, a))
    best = math.inf
    for _ in range(max(repeats, 5)):
        began = time.perf_counter()
        jax.block_until_ready(matmul(a, a))
        best = min(best, time.perf_counter() - began)
    return 2 * size**3 / best / 1e9


def time_variants(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Return the median seconds per call of each variant, after one warm-up call each.

    The variants are called in turn, `repeats` rounds, so that a change in the machine's load
    during the measurement hits every variant alike.
    """
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            began = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - began)
    return {name: float(np.median(seconds)) for name, seconds in times.items()}


# JAX training.


class PlainNetwork(nn.Module):
    """An `asym_jax.models` network built from flax's `nn.Conv` and `nn.Dense` (autodiff)."""

    architecture: models.Architecture

    @nn.compact
    def __call__(self, x, *, train: bool):
        del train
        for layer in self.architecture.layers:
            if isinstance(layer, models.Pool):
                pool = models.max_pool if layer.kind == "max" else models.avg_pool
                x = pool(x, layer.size, layer.stride, layer.padding)
                continue
            if isinstance(layer, models.Conv):
                size, stride = (layer.size, layer.size), (layer.stride, layer.stride)
                conv = nn.Conv(layer.features, size, stride, layer.padding, name=layer.name)
                x = conv(x)
            else:
                x = nn.Dense(layer.features, name=layer.name)(x.reshape(x.shape[0], -1))
            if layer.name != models.OUTPUT_LAYER:
                x = nn.relu(x)
        return x


def _config(conv_impl: str):
    config = common.base_config()
    config.init = "he"
    if conv_impl:
        config.conv_impl = conv_impl
    return config


def _model_and_optimizer(label: str, dataset: data.Dataset, conv_impl: str):
    sample = jnp.asarray(dataset.preprocess(dataset.train_images[:1]))
    if label == "flax":
        model = PlainNetwork(models.get_architecture(dataset.architecture, dataset.num_classes))
        params = jax.eval_shape(lambda: model.init(jax.random.key(0), sample, train=False))
        mask = optimizers.weight_decay_mask(params["params"])
        return model, optimizers.update_rule(0, 1.0, weight_decay_mask=mask), sample
    condition = conditions.parse(label)
    model, tx = sweep.build_model_and_optimizer(_config(conv_impl), condition, dataset, sample)
    return model, tx, sample


def jax_epoch_call(
    label: str, dataset: data.Dataset, runs: int, steps: int, conv_impl: str, loop: str = "auto"
):
    """Return (call, compile seconds): `call()` trains `runs` runs for `steps` steps.

    The program is the engine's own epoch program (`asym_jax.sweep`): a jitted `lax.scan`
    over batches taken on the device, all runs seeing the same batch, with the runs batched
    by `jax.vmap` (`loop="vmap"`) or trained one after another (`"map"`).
    """
    model, tx, sample = _model_and_optimizer(label, dataset, conv_impl)
    state = sweep._init_states(model, tx, np.zeros(runs, int), sample, 0)
    loop = sweep.run_loop(loop)
    epoch_fn = sweep._make_epoch_fn(model, tx, dataset.preprocess, BATCH, steps, loop)
    images = jnp.asarray(dataset.train_images[: steps * BATCH])
    labels = jnp.asarray(dataset.train_labels[: steps * BATCH])
    rates = jnp.full((runs,), 5e-4, jnp.float32)
    key = jax.random.PRNGKey(0)
    began = time.perf_counter()
    compiled = epoch_fn.lower(state, rates, images, labels, key).compile()
    compile_seconds = time.perf_counter() - began
    holder = [state]

    def call():
        holder[0], losses, _ = compiled(holder[0], rates, images, labels, key)
        return jax.block_until_ready(losses)

    return call, compile_seconds


def jax_step_loop_call(
    label: str, dataset: data.Dataset, runs: int, steps: int, conv_impl: str, loop: str = "auto"
):
    """Return `call()`: the same training as `jax_epoch_call`, one jitted step per batch."""
    model, tx, sample = _model_and_optimizer(label, dataset, conv_impl)
    state = sweep._init_states(model, tx, np.zeros(runs, int), sample, 0)
    rates = jnp.full((runs,), 5e-4, jnp.float32)
    state = state.replace(opt_state=optax.tree_utils.tree_set(state.opt_state, learning_rate=rates))
    train_step = sweep._over_runs(train.make_train_step(model, tx), sweep.run_loop(loop), 2)

    # The epoch program's batch order for the same key.
    def step_fn(state, images, labels, order, index):
        batch = jax.lax.dynamic_slice_in_dim(order, index * BATCH, BATCH)
        return train_step(state, dataset.preprocess(images[batch]), labels[batch])

    step_fn = jax.jit(step_fn, donate_argnums=0, compiler_options=sweep.compiler_options())
    images = jnp.asarray(dataset.train_images[: steps * BATCH])
    labels = jnp.asarray(dataset.train_labels[: steps * BATCH])
    order = jax.random.permutation(jax.random.PRNGKey(0), steps * BATCH)
    indices = [jnp.asarray(i, jnp.int32) for i in range(steps)]
    holder = [state]

    def call():
        state, losses = holder[0], []
        for index in indices:
            state, step_losses = step_fn(state, images, labels, order, index)
            losses.append(step_losses)
        holder[0] = state
        return jax.block_until_ready(jnp.stack(losses))

    return call


# PyTorch training.


def torch_call(label: str, dataset: data.Dataset, steps: int, channels_last: bool):
    """Return `call()`: one PyTorch run of condition `label` for `steps` steps."""
    import torch

    from experiments import torch_reference

    condition = conditions.parse(label)
    rule = conditions.rule(condition)
    architecture = models.get_architecture(dataset.architecture, dataset.num_classes)
    network = torch_reference.TorchNetwork(architecture, rule, condition.bn_mode)
    network.train()
    update = torch_reference.UpdateRule(network, condition.setting, learning_rate=5e-6)
    images = torch.from_numpy(np.array(dataset.preprocess(dataset.train_images[: steps * BATCH])))
    images = images.permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(dataset.train_labels[: steps * BATCH].astype(np.int64))
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    batches = [
        (images[i * BATCH : (i + 1) * BATCH], labels[i * BATCH : (i + 1) * BATCH])
        for i in range(steps)
    ]

    def call():
        for batch_images, batch_labels in batches:
            torch_reference.train_step(network, update, batch_images, batch_labels)

    return call


def jax_conv_call(layer, shape, first: bool, steps: int, conv_impl: str):
    """Return `call()`: `steps` uSF forward and backward passes of one convolution layer.

    The backward pass computes dW, and dx except for a first layer, as in training. Each
    step moves the input and kernel by their gradients, so no step can be hoisted.
    """
    x = jax.random.normal(jax.random.key(0), (BATCH, *shape), jnp.float32)
    kernel = 0.01 * jax.random.normal(
        jax.random.key(1), (layer.size, layer.size, shape[-1], layer.features), jnp.float32
    )
    rule = conditions.rule(conditions.parse("uSF"))
    impl = conv_impl or _config("").conv_impl

    def loss(x, kernel):
        y = layers.asym_conv(
            rule,
            x,
            kernel,
            None,
            None,
            None,
            strides=layer.stride,
            padding=layer.padding,
            impl=impl,
        )
        return jnp.sum(y * y)

    def body(carry, _):
        x, kernel = carry
        if first:
            return (x, kernel - 1e-9 * jax.grad(loss, argnums=1)(x, kernel)), None
        dx, dw = jax.grad(loss, argnums=(0, 1))(x, kernel)
        return (x - 1e-9 * dx, kernel - 1e-9 * dw), None

    run = jax.jit(
        lambda x, kernel: jax.lax.scan(body, (x, kernel), None, length=steps)[0],
        compiler_options=sweep.compiler_options(),
    )
    return lambda: jax.block_until_ready(run(x, kernel))


def torch_conv_call(layer, shape, first: bool, steps: int):
    """Return `call()`: the same passes with PyTorch's `conv2d`, channels_last."""
    import torch
    import torch.nn.functional as F

    height, width, channels = shape
    x = torch.randn(BATCH, channels, height, width).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(not first)
    kernel = 0.01 * torch.randn(layer.features, channels, layer.size, layer.size)
    kernel = kernel.contiguous(memory_format=torch.channels_last).requires_grad_()
    padding = [pad[0] for pad in layer.padding]

    def call():
        for _ in range(steps):
            y = F.conv2d(x, kernel, None, layer.stride, padding)
            (y * y).sum().backward()

    return call


def bench_layers(dataset, steps, repeats, conv_impl):
    """Item 7: forward and backward of each convolution layer alone, against PyTorch."""
    architecture = models.get_architecture(dataset.architecture, dataset.num_classes)
    results = {}
    inputs = weight_layer_inputs(architecture)
    for layer, height, width, channels in inputs:
        if not isinstance(layer, models.Conv):
            continue
        shape, first = (height, width, channels), layer is inputs[0][0]
        calls = {"asym_jax": jax_conv_call(layer, shape, first, steps, conv_impl)}
        if torch_available():
            calls["torch_channels_last"] = torch_conv_call(layer, shape, first, steps)
        seconds = time_variants(calls, repeats)
        results[layer.name] = {name: s / steps for name, s in seconds.items()}
        if "torch_channels_last" in seconds:
            results[layer.name]["vs_torch"] = seconds["torch_channels_last"] / seconds["asym_jax"]
    return results


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# Items.


def bench_feedback(dataset, steps, repeats, conv_impl):
    """Item 1: seconds per step of each rule and of flax's autodiff network, one run.

    flax is timed as a Python loop of jitted steps, its fastest form here: in a `lax.scan`
    (a loop inside the program, as in the epoch program), XLA:CPU ran its autodiff
    convolutions many times slower. That scanned form is timed too, for MNIST only
    ("flax_scan").
    """
    calls = {"flax": jax_step_loop_call("flax", dataset, 1, steps, conv_impl, loop="vmap")}
    if dataset.architecture == "mnist":
        calls["flax_scan"], _ = jax_epoch_call("flax", dataset, 1, steps, conv_impl, "vmap")
    for label in FEEDBACK_CONDITIONS:
        calls[label], _ = jax_epoch_call(label, dataset, 1, steps, conv_impl)
    seconds = time_variants(calls, repeats)
    step = {label: s / steps for label, s in seconds.items()}
    return {
        "step_seconds": step,
        "vs_symmetric": {label: s / step["SGD"] for label, s in step.items()},
        "vs_flax": {label: s / step["flax"] for label, s in step.items()},
        "flax_form": "step loop (flax_scan: in the epoch program's lax.scan)",
    }


def bench_sweep(dataset, steps, repeats, conv_impl):
    """Item 2: image-steps/s of 5-run programs and of 5 single-run programs called in turn."""
    results = {}
    for label in SWEEP_CONDITIONS:
        calls, compile_seconds = {}, {}
        for loop in ("vmap", "map"):
            calls[loop], compile_seconds[loop] = jax_epoch_call(
                label, dataset, RUNS, steps, conv_impl, loop
            )
        # Every single run does the same work, so one single-run program called RUNS times
        # costs what RUNS separate runs cost, with one compilation instead of RUNS.
        single, _ = jax_epoch_call(label, dataset, 1, steps, conv_impl)
        calls["sequential"] = lambda single=single: [single() for _ in range(RUNS)]
        seconds = time_variants(calls, repeats)
        rates = {name: RUNS * steps * BATCH / s for name, s in seconds.items()}
        results[label] = {
            "compile_seconds": compile_seconds,
            "image_steps_per_s": rates,
            "vmap_vs_sequential": rates["vmap"] / rates["sequential"],
            "map_vs_sequential": rates["map"] / rates["sequential"],
            "map_vs_vmap": rates["map"] / rates["vmap"],
        }
    return results


def bench_epoch(dataset, steps, repeats, conv_impl):
    """Item 3: the 5-run whole-epoch program against a Python loop of jitted steps."""
    label = SWEEP_CONDITIONS[-1]
    epoch_call, _ = jax_epoch_call(label, dataset, RUNS, steps, conv_impl)
    loop_call = jax_step_loop_call(label, dataset, RUNS, steps, conv_impl)
    seconds = time_variants({"epoch": epoch_call, "step_loop": loop_call}, repeats)
    return {
        "condition": label,
        "epoch_seconds": seconds["epoch"],
        "steps_times_step_seconds": seconds["step_loop"],
        "ratio": seconds["epoch"] / seconds["step_loop"],
    }


def bench_torch(dataset, steps, repeats, conv_impl):
    """Item 4: one run in asym_jax against PyTorch NCHW and channels_last."""
    import torch

    results = {"torch_threads": torch.get_num_threads()}
    for label in SWEEP_CONDITIONS:
        jax_run, _ = jax_epoch_call(label, dataset, 1, steps, conv_impl)
        calls = {
            "asym_jax": jax_run,
            "torch_nchw": torch_call(label, dataset, steps, channels_last=False),
            "torch_channels_last": torch_call(label, dataset, steps, channels_last=True),
        }
        seconds = time_variants(calls, repeats)
        rates = {name: steps * BATCH / s for name, s in seconds.items()}
        results[label] = {
            "images_per_s": rates,
            "vs_channels_last": rates["asym_jax"] / rates["torch_channels_last"],
            "vs_nchw": rates["asym_jax"] / rates["torch_nchw"],
        }
    return results


def bench_architecture(name: str, items, repeats: int, steps: int, conv_impl: str, peak: float):
    dataset = synthetic_dataset(name, steps * BATCH)
    flops = training_flops(models.get_architecture(name, NUM_CLASSES[name]))
    result = {"steps_per_call": steps, "training_mflop_per_image": flops / 1e6}
    runners = {
        "feedback": bench_feedback,
        "sweep": bench_sweep,
        "epoch": bench_epoch,
        "torch": bench_torch,
        "layers": bench_layers,
    }
    for item in items:
        if item == "torch" and not torch_available():
            logging.warning("PyTorch is not installed (pip install -e '.[bench]'): no item 4.")
            continue
        began = time.perf_counter()
        result[item] = runners[item](dataset, steps, repeats, conv_impl)
        logging.info("%s / %s: %.0f s", name, item, time.perf_counter() - began)
    result["gflops"] = _achieved_gflops(result, flops, peak)
    return result


def _achieved_gflops(result, flops: float, peak: float) -> dict[str, float]:
    rates = {}
    for label, sweep_result in result.get("sweep", {}).items():
        for name, rate in sweep_result["image_steps_per_s"].items():
            rates[f"{label} {name}"] = rate
    for label, torch_result in result.get("torch", {}).items():
        if isinstance(torch_result, dict):
            rates[f"{label} torch channels_last"] = torch_result["images_per_s"][
                "torch_channels_last"
            ]
    return {
        name: {"gflops": rate * flops / 1e9, "fraction_of_peak": rate * flops / 1e9 / peak}
        for name, rate in rates.items()
    }


# One process per core.


def _pinned_worker(barrier: str) -> None:
    """Time the MNIST sweep in this process (pinned by its parent) between two barriers."""
    steps = _STEPS.value or DEFAULT_STEPS["mnist"]
    dataset = synthetic_dataset("mnist", steps * BATCH)
    call, _ = jax_epoch_call(SWEEP_CONDITIONS[-1], dataset, RUNS, steps, _CONV_IMPL.value)
    call()
    open(os.path.join(barrier, f"ready-{os.getpid()}"), "w").close()
    while not os.path.exists(os.path.join(barrier, "go")):
        time.sleep(0.01)
    began = time.perf_counter()
    for _ in range(_REPEATS.value):
        call()
    seconds = (time.perf_counter() - began) / _REPEATS.value
    print(json.dumps({"image_steps_per_s": RUNS * steps * BATCH / seconds}))


def bench_processes(repeats: int, conv_impl: str) -> dict[str, float]:
    """Item 6: aggregate MNIST sweep throughput of one pinned process per core."""
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as barrier:
        workers = []
        for core in cores:
            command = [
                sys.executable,
                "-m",
                "experiments.benchmark",
                f"--worker={barrier}",
                f"--repeats={repeats}",
                f"--steps={_STEPS.value}",
                f"--conv_impl={conv_impl}",
            ]
            workers.append(
                subprocess.Popen(
                    command,
                    stdout=subprocess.PIPE,
                    text=True,
                    preexec_fn=lambda core=core: os.sched_setaffinity(0, {core}),
                )
            )
        while len([n for n in os.listdir(barrier) if n.startswith("ready")]) < len(workers):
            if any(w.poll() not in (None, 0) for w in workers):
                raise RuntimeError("A pinned benchmark worker failed; run it alone to see why.")
            time.sleep(0.05)
        open(os.path.join(barrier, "go"), "w").close()
        rates = [json.loads(w.communicate()[0].strip().splitlines()[-1]) for w in workers]
    steps = _STEPS.value or DEFAULT_STEPS["mnist"]
    dataset = synthetic_dataset("mnist", steps * BATCH)
    call, _ = jax_epoch_call(SWEEP_CONDITIONS[-1], dataset, RUNS, steps, conv_impl)
    one = RUNS * steps * BATCH / time_variants({"one": call}, repeats)["one"]
    total = sum(rate["image_steps_per_s"] for rate in rates)
    return {
        "cores": len(cores),
        "one_process_image_steps_per_s": one,
        "pinned_processes_image_steps_per_s": total,
        "ratio": total / one,
    }


# Report.


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _print_report(report) -> None:
    print(f"\nmachine: {report['machine']}")
    print(f"float32 matmul peak: {report['matmul_peak_gflops']:.0f} GFLOP/s\n")
    for name, result in report["architectures"].items():
        print(f"== {name} ({result['training_mflop_per_image']:.1f} MFLOP per image-step)")
        if "feedback" in result:
            print("  1. step time, vs symmetric rule, vs flax autodiff step loop (target <= 1.05):")
            for label, seconds in result["feedback"]["step_seconds"].items():
                print(
                    f"     {label:12s} {1000 * seconds:8.1f} ms  "
                    f"{result['feedback']['vs_symmetric'][label]:5.2f}  "
                    f"{result['feedback']['vs_flax'][label]:5.2f}"
                )
        for label, sweep_result in result.get("sweep", {}).items():
            rates = sweep_result["image_steps_per_s"]
            print(
                f"  2. {label}: vmap {rates['vmap']:.0f}, map {rates['map']:.0f}, 5 single "
                f"runs {rates['sequential']:.0f} image-steps/s; vmap/sequential "
                f"{sweep_result['vmap_vs_sequential']:.2f}, map/sequential "
                f"{sweep_result['map_vs_sequential']:.2f} (target >= 1.5)"
            )
        if "epoch" in result:
            epoch = result["epoch"]
            print(
                f"  3. epoch program {epoch['epoch_seconds']:.3f} s, step loop "
                f"{epoch['steps_times_step_seconds']:.3f} s, ratio {epoch['ratio']:.3f} "
                "(target <= 1.05)"
            )
        for label, torch_result in result.get("torch", {}).items():
            if not isinstance(torch_result, dict):
                continue
            rates = torch_result["images_per_s"]
            print(
                f"  4. {label}: asym_jax {rates['asym_jax']:.0f}, torch NCHW "
                f"{rates['torch_nchw']:.0f}, channels_last {rates['torch_channels_last']:.0f} "
                f"images/s, ratio {torch_result['vs_channels_last']:.2f} (target >= 1.2)"
            )
        for label, value in result["gflops"].items():
            print(
                f"  5. {label}: {value['gflops']:.1f} GFLOP/s, "
                f"{100 * value['fraction_of_peak']:.0f}% of peak"
            )
        for layer, timing in result.get("layers", {}).items():
            torch_ms = timing.get("torch_channels_last")
            versus = (
                f", torch channels_last {1000 * torch_ms:.2f} ms, speed ratio "
                f"{timing['vs_torch']:.2f}"
                if torch_ms
                else ""
            )
            jax_ms = 1000 * timing["asym_jax"]
            print(f"  7. {layer} forward + backward: asym_jax {jax_ms:.2f} ms{versus}")
    if "processes" in report:
        processes = report["processes"]
        one = processes["one_process_image_steps_per_s"]
        pinned = processes["pinned_processes_image_steps_per_s"]
        print(
            f"\n6. MNIST uSF+BN+BM sweep: one process {one:.0f}, {processes['cores']} pinned "
            f"processes {pinned:.0f} image-steps/s, ratio {processes['ratio']:.2f}"
        )


TARGETS = {
    "asymmetric": "<= 1.05",
    "sweep": ">= 1.5",
    "epoch": "<= 1.05",
    "torch": ">= 1.2",
    "peak": ">= 50%",
}


def summary_markdown(report) -> str:
    """Return one Markdown row per network with the five ratios, and a row of targets."""
    header = (
        "| network | MFLOP per image-step | 1. slowest rule / symmetric | 2. sweep / 5 single "
        "runs: map, vmap | 3. epoch program / step loop | 4. single run / PyTorch "
        "channels_last: SGD, uSF+BN+BM | 5. single SGD run, % of matmul peak |"
    )
    lines = [header, "|" + "---|" * 7]
    for name, result in report["architectures"].items():
        cells = [name, f"{result['training_mflop_per_image']:.1f}"]
        if "feedback" in result:
            ratios = {
                label: ratio
                for label, ratio in result["feedback"]["vs_symmetric"].items()
                if label in FEEDBACK_CONDITIONS
            }
            slowest = max(ratios, key=ratios.get)
            cells.append(f"{ratios[slowest]:.2f} ({slowest})")
        else:
            cells.append("-")
        sweeps = result.get("sweep", {})
        cells.append(
            "; ".join(
                f"{label}: {r['map_vs_sequential']:.2f}, {r['vmap_vs_sequential']:.2f}"
                for label, r in sweeps.items()
            )
            or "-"
        )
        cells.append(f"{result['epoch']['ratio']:.2f}" if "epoch" in result else "-")
        torch_results = {k: v for k, v in result.get("torch", {}).items() if isinstance(v, dict)}
        cells.append(
            ", ".join(f"{r['vs_channels_last']:.2f}" for r in torch_results.values()) or "-"
        )
        single = result["gflops"].get("SGD sequential")
        cells.append(f"{100 * single['fraction_of_peak']:.0f}%" if single else "-")
        lines.append("| " + " | ".join(cells) + " |")
    targets = [TARGETS[key] for key in ("asymmetric", "sweep", "epoch", "torch", "peak")]
    lines.append("| target | | " + " | ".join(targets) + " |")
    return "\n".join(lines) + "\n"


ITEMS = ("feedback", "sweep", "epoch", "torch", "layers")


def check_flags() -> None:
    """Raise `app.UsageError` for invalid flags before anything is measured."""
    unknown = sorted(set(_ARCHITECTURES.value) - set(ARCHITECTURES))
    if unknown:
        raise app.UsageError(f"Unknown architectures {unknown}; valid: {', '.join(ARCHITECTURES)}.")
    unknown = sorted(set(_ITEMS.value) - set(ITEMS))
    if unknown:
        raise app.UsageError(f"Unknown items {unknown}; valid: {', '.join(ITEMS)}.")
    if _CONV_IMPL.value and _CONV_IMPL.value not in layers.CONV_IMPLS:
        raise app.UsageError(
            f"Invalid --conv_impl={_CONV_IMPL.value}; valid: {', '.join(layers.CONV_IMPLS)}, "
            "or empty for the config's."
        )
    # A run takes up to half an hour: find an unwritable output file before it, not after.
    for flag, path in (("output", _OUTPUT.value), ("markdown", _MARKDOWN.value)):
        folder = os.path.dirname(os.path.abspath(path)) if path else ""
        if path and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
            raise app.UsageError(
                f"Cannot write --{flag}={path}: {folder} is not a writable folder. Create it "
                "or pass another path."
            )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _WORKER.value:
        _pinned_worker(_WORKER.value)
        return

    if _FROM_JSON.value:
        try:
            with open(_FROM_JSON.value) as handle:
                report = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise app.UsageError(
                f"Cannot read --from_json={_FROM_JSON.value}: {error}. Pass a file that "
                "--output wrote."
            ) from error
        _print_report(report)
        _write_markdown(report)
        return

    check_flags()
    items = _ITEMS.value
    conv_impl = _CONV_IMPL.value or common.base_config().conv_impl
    machine = (
        f"{_cpu_model()}, {len(os.sched_getaffinity(0))} cores, {jax.default_backend()} "
        f"({jax.devices()[0].device_kind}), jax {jax.__version__}, "
        f"python {platform.python_version()}"
    )
    report = {
        "machine": machine,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_at_start": os.getloadavg(),
        "conv_impl": conv_impl,
        "repeats": _REPEATS.value,
        "matmul_peak_gflops": matmul_peak(_REPEATS.value),
        "architectures": {},
    }

    for name in _ARCHITECTURES.value:
        steps = _STEPS.value or DEFAULT_STEPS[name]
        report["architectures"][name] = bench_architecture(
            name, items, _REPEATS.value, steps, conv_impl, report["matmul_peak_gflops"]
        )
        # Every finished network is kept even if the run is interrupted later.
        _write_json(report)
    if _PROCESSES_CHECK.value:
        report["processes"] = bench_processes(_REPEATS.value, conv_impl)
    report["load_average_at_end"] = os.getloadavg()

    _print_report(report)
    _write_json(report)
    _write_markdown(report)


def _write_json(report) -> None:
    """Write the report to --output atomically (a temporary file, then a rename)."""
    if not _OUTPUT.value:
        return
    temporary = f"{_OUTPUT.value}.tmp"
    with open(temporary, "w") as handle:
        json.dump(report, handle, indent=1)
    os.replace(temporary, _OUTPUT.value)


def _write_markdown(report) -> None:
    table = summary_markdown(report)
    print(f"\n{table}")
    if _MARKDOWN.value:
        with open(_MARKDOWN.value, "w") as handle:
            handle.write(f"Measured {report['date']} on {report['machine']}.\n\n{table}")


if __name__ == "__main__":
    app.run(main)
