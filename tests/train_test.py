"""Tests of the single-run training and evaluation steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from conftest import make_dataset

from asym_jax import conditions, sweep, train
from experiments.configs import common


def _setup(label, rates):
    config = common.base_config()
    config.init = "he"
    dataset = make_dataset()
    sample = jnp.asarray(dataset.preprocess(dataset.train_images[:1]))
    model, tx = sweep.build_model_and_optimizer(config, conditions.parse(label), dataset, sample)
    states = sweep._init_states(model, tx, np.zeros(len(rates), int), sample, 0)
    opt_state = optax.tree_utils.tree_set(states.opt_state, learning_rate=jnp.asarray(rates))
    images = dataset.preprocess(dataset.train_images[:50])
    return model, tx, states.replace(opt_state=opt_state), images, dataset.train_labels[:50]


def test_summed_cross_entropy_sums_over_batch():
    logits = jnp.zeros((4, 10))
    labels = jnp.arange(4)
    assert jnp.allclose(train.summed_cross_entropy(logits, labels), 4 * jnp.log(10.0))


def test_batch_manhattan_step_vmapped_equals_solo_up_to_sign_ties():
    # One step of uSF+BN+BM for two runs together and for the first run alone. Weights must
    # agree except where a gradient component so close to zero that rounding decides its sign
    # flipped: there the two differ by exactly 2 * lr, and such entries are rare.
    rates = (5e-3, 5e-5)
    model, tx, states, images, labels = _setup("uSF+BN+BM", rates)
    step = jax.jit(jax.vmap(train.make_train_step(model, tx), in_axes=(0, None, None)))
    together, _ = step(states, images, labels)
    solo, _ = step(jax.tree.map(lambda a: a[:1], states), images, labels)

    for got, want in zip(
        jax.tree.leaves(together.params), jax.tree.leaves(solo.params), strict=True
    ):
        difference = np.abs(np.asarray(got[0]) - np.asarray(want[0]))
        flipped = difference > 1e-6
        np.testing.assert_allclose(difference[flipped], 2 * rates[0], rtol=1e-4)
        assert flipped.mean() < 0.01


def test_non_finite_step_freezes_the_run():
    model, tx, states, images, labels = _setup("SGD", (5e-4,))
    step = jax.jit(jax.vmap(train.make_train_step(model, tx), in_axes=(0, None, None)))
    params = jax.tree.map(lambda a: a, states.params)
    params["output"]["bias"] = params["output"]["bias"].at[0, 0].set(jnp.nan)
    poisoned = states.replace(params=params)
    after, loss = step(poisoned, images, labels)
    assert not np.isfinite(np.asarray(loss)[0])
    assert not bool(after.active[0])
    for before, now in zip(
        jax.tree.leaves(poisoned.params), jax.tree.leaves(after.params), strict=True
    ):
        np.testing.assert_array_equal(before, now)
    # Even a finite batch no longer moves an inactive run.
    again, _ = step(after.replace(params=states.params), images, labels)
    for before, now in zip(
        jax.tree.leaves(states.params), jax.tree.leaves(again.params), strict=True
    ):
        np.testing.assert_array_equal(before, now)


def test_eval_step_counts_errors_and_predictions():
    model, tx, states, images, labels = _setup("SGD", (5e-4,))
    state = jax.tree.map(lambda a: a[0], states)
    valid = jnp.arange(50) < 40
    sums = train.make_eval_step(model, 10)(state, images, jnp.asarray(labels), valid)
    logits = model.apply({"params": state.params}, images, train=False)
    predictions = np.argmax(np.asarray(logits), axis=1)
    assert int(sums["errors"]) == int(np.sum(predictions[:40] != labels[:40]))
    np.testing.assert_array_equal(sums["class_counts"], np.bincount(predictions[:40], minlength=10))
