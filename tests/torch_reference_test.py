"""Tests of the PyTorch reference of the benchmark: gradients and updates against asym_jax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from asym_jax import feedback, models, optimizers

BATCH = 3

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
