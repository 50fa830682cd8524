"""Tests of the speed benchmark's pieces and of its PyTorch reference implementation."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from asym_jax import feedback, models, optimizers
from experiments import benchmark

BATCH = 3


def test_training_flops_of_mnist_network():
    architecture = models.get_architecture("mnist", 10)
    # conv1 24x24x20 outputs of 5x5x1, conv2 8x8x50 of 5x5x20, FC 800x500 and 500x10; the
    # first layer has no input gradient.
    macs = [24 * 24 * 20 * 25, 8 * 8 * 50 * 500, 800 * 500, 500 * 10]
    expected = 2 * macs[0] * 2 + sum(2 * m * 3 for m in macs[1:])
    assert benchmark.training_flops(architecture) == expected


def test_synthetic_dataset_fits_network():
    dataset = benchmark.synthetic_dataset("cifar", 7)
    assert dataset.train_images.shape == (7, 32, 32, 3)
    assert dataset.train_images.dtype == np.uint8
    assert set(np.unique(dataset.train_labels)) <= set(range(10))


def test_epoch_and_step_loop_train_alike():
    dataset = benchmark.synthetic_dataset("mnist", 2 * benchmark.BATCH)
    epoch_call, compile_seconds = benchmark.jax_epoch_call("uSF+BN", dataset, 2, 2, "")
    loop_call = benchmark.jax_step_loop_call("uSF+BN", dataset, 2, 2, "")
    # Same initial state and batch order: the (steps, runs) losses agree up to the rounding
    # of two XLA programs (plain SGD, whose updates do not amplify it as signs do).
    np.testing.assert_allclose(loop_call(), epoch_call(), rtol=1e-5)
    assert compile_seconds > 0
    seconds = benchmark.time_variants({"epoch": epoch_call, "loop": loop_call}, repeats=1)
    assert all(s > 0 for s in seconds.values())


def test_summary_table_from_a_measured_item():
    result = benchmark.bench_architecture("mnist", ["epoch"], 1, 2, "", peak=100.0)
    report = {"architectures": {"mnist": result}}
    rows = benchmark.summary_markdown(report).splitlines()
    assert len(rows) == 4  # Header, rule, one network, targets.
    cells = [cell.strip() for cell in rows[2].strip("|").split("|")]
    assert cells[0] == "mnist" and float(cells[1]) == pytest.approx(13.2, abs=0.05)
    assert cells[2] == cells[3] == cells[5] == cells[6] == "-"  # Items not measured.
    assert float(cells[4]) == pytest.approx(result["epoch"]["ratio"], abs=0.005)
    assert rows[3].startswith("| target |")


@pytest.mark.parametrize(
    "argument,message",
    [
        ("--items=feedbak", "Unknown items ['feedbak']"),
        ("--conv_impl=fast", "Invalid --conv_impl=fast"),
        ("--output=/no/such/folder/b.json", "Cannot write --output"),
        ("--from_json=/no/such/file.json", "Cannot read --from_json"),
    ],
)
def test_invalid_flags_fail_before_measuring(argument, message):
    completed = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", "--architectures=mnist", argument],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode != 0
    assert message in completed.stderr
    assert "matmul peak" not in completed.stdout


torch = pytest.importorskip("torch")
from experiments import torch_reference  # noqa: E402


def _jax_gradients(model, variables, x, labels):
    def loss(params):
        logits, _ = model.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum(), logits

    (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    return logits, grads


def _assert_close(actual, expected, rtol):
    expected = np.asarray(expected)
    atol = rtol * max(float(np.max(np.abs(expected))), 1e-30)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "architecture,rule,bn_mode",
    [("mnist", "usf", "plain"), ("cifar", "frsf", "none"), ("mnist", "rndf", "affine")],
)
def test_torch_gradients_match_jax(architecture, rule, bn_mode):
    rule = feedback.get_rule(rule)
    model = models.create_model(architecture, num_classes=10, rule=rule, bn_mode=bn_mode, init="he")
    shape = (BATCH, *model.architecture.input_shape)
    x = jax.random.normal(jax.random.key(0), shape, jnp.float32)
    labels = jnp.arange(BATCH) % 10
    rngs = {"params": jax.random.key(1), "feedback": jax.random.key(2)}
    variables = model.init(rngs, x, train=False)
    logits, grads = _jax_gradients(model, variables, x, labels)

    network = torch_reference.TorchNetwork(model.architecture, rule, bn_mode)
    network.load_jax_variables(variables)
    network.train()
    torch_logits = network(torch.tensor(np.asarray(x)).permute(0, 3, 1, 2))
    loss = torch.nn.functional.cross_entropy(
        torch_logits, torch.tensor(np.asarray(labels)).long(), reduction="sum"
    )
    loss.backward()

    # Several float32 layers whose sums run in other orders in PyTorch's convolutions.
    _assert_close(torch_logits.detach().numpy(), logits, rtol=1e-5)
    torch_grads = network.gradients_in_jax_layout()
    for layer, expected in torch_grads.items():
        for name, value in expected.items():
            _assert_close(value, grads[layer][name], rtol=2e-5)


@pytest.mark.parametrize("setting", optimizers.SETTINGS)
def test_torch_update_rule_matches_optax(setting):
    architecture = models.get_architecture("mnist", 10)
    network = torch_reference.TorchNetwork(architecture, feedback.get_rule("symmetric"))
    # Kernels stay in PyTorch's layout: the update rules act elementwise.
    params = {
        name: {"kernel": weight.detach().numpy().copy()} for name, weight in network.weights.items()
    }
    for name, bias in network.biases.items():
        params[name]["bias"] = bias.detach().numpy().copy()
    tx = optimizers.update_rule(setting, learning_rate=0.1, weight_decay=0.01)
    opt_state = tx.init(params)
    update = torch_reference.UpdateRule(network, setting, learning_rate=0.1, weight_decay=0.01)

    rng = np.random.default_rng(0)
    for _ in range(3):
        grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
        for name, weight in network.weights.items():
            weight.grad = torch.from_numpy(grads[name]["kernel"])
            if name in network.biases:
                network.biases[name].grad = torch.from_numpy(grads[name]["bias"])
        update.step()
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)

    for name, weight in network.weights.items():
        _assert_close(weight.detach().numpy(), params[name]["kernel"], rtol=1e-6)
        if name in network.biases:
            _assert_close(network.biases[name].detach().numpy(), params[name]["bias"], rtol=1e-6)
