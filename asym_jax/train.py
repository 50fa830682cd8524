"""Training and evaluation steps of one run, written to be vmapped over a run axis.

A run is one {condition, dataset, learning rate, seed} training. The functions here act on a
single run's `TrainState`; `asym_jax.sweep` maps them over the leading run axis of a sweep, so
that every run of a sweep sees the same batch while keeping its own parameters, batch
statistics, feedback state, optimizer state and random key.
"""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import struct

# Per-step random keys are derived from this stream name; layers whose feedback is redrawn
# every step (brSF, brSF-p) read it.
FEEDBACK_RNG = "feedback"


class TrainState(struct.PyTreeNode):
    """State of one run: weights, statistics, feedback, optimizer and bookkeeping."""

    step: jax.Array
    params: Any
    batch_stats: Any
    feedback: Any
    opt_state: Any
    rng: jax.Array
    # False once the run diverged: its updates are dropped from then on.
    active: jax.Array


def summed_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Return softmax cross-entropy summed (not averaged) over the batch.

    MatConvNet's softmax loss, the likely trainer of Liao, Leibo & Poggio (AAAI 2016), sums over
    the mini-batch, which explains their small base learning rate (5e-4). The Batch Manhattan
    rules use only the gradient's sign, so the choice does not affect them.
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()


def init_state(
    model: flax.linen.Module,
    tx: optax.GradientTransformation,
    sample_input: jax.Array,
    *,
    params_key: jax.Array,
    feedback_key: jax.Array,
    rng: jax.Array,
) -> TrainState:
    """Initialise one run.

    Args:
      model: a model of `asym_jax.models`.
      tx: the run's optimizer.
      sample_input: a batch with the model's input shape (its values are not used).
      params_key: key of the weight initialisation.
      feedback_key: key of the feedback matrices drawn once (frSF, frSF-p, RndF).
      rng: the run's key for per-step feedback draws.

    Returns:
      The run's initial `TrainState`.
    """
    variables = model.init(
        {"params": params_key, FEEDBACK_RNG: feedback_key}, sample_input, train=False
    )
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        feedback=variables.get("feedback", {}),
        opt_state=tx.init(params),
        rng=rng,
        active=jnp.ones((), bool),
    )


def _variables(state: TrainState) -> dict[str, Any]:
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    if state.feedback:
        variables["feedback"] = state.feedback
    return variables


def make_train_step(
    model: flax.linen.Module, tx: optax.GradientTransformation
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """Build `train_step(state, images, labels) -> (state, loss)` for one run.

    `loss` is the batch's summed cross-entropy before the update. A step whose loss is not
    finite, or a step of an inactive run, leaves the state's weights, statistics and
    optimizer state as they were and sets `active` to False, so a diverged run never writes NaN
    into its state and stops moving from that step on.
    """

    def loss_fn(params, state, images, labels, key):
        variables = _variables(state.replace(params=params))
        logits, updates = model.apply(
            variables,
            images,
            train=True,
            rngs={FEEDBACK_RNG: key},
            mutable=["batch_stats"],
        )
        return summed_cross_entropy(logits, labels), updates.get("batch_stats", {})

    def train_step(state, images, labels):
        key = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, batch_stats), grads = grad_fn(state.params, state, images, labels, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        keep = state.active & jnp.isfinite(loss)
        choose = lambda new, old: jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)
        new_state = state.replace(
            step=state.step + 1,
            params=choose(params, state.params),
            batch_stats=choose(batch_stats, state.batch_stats),
            opt_state=choose(opt_state, state.opt_state),
            active=keep,
        )
        return new_state, loss

    return train_step


def make_eval_step(
    model: flax.linen.Module, num_classes: int
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], dict[str, jax.Array]]:
    """Build `eval_step(state, images, labels, valid) -> sums` for one run.

    BN layers run in evaluation mode. `valid` masks padding rows of the last batch. The sums
    are `errors` (misclassified examples), `loss` (summed cross-entropy) and `class_counts`
    (how often each class is predicted, used to detect a collapse to one class).
    """

    def eval_step(state, images, labels, valid):
        logits = model.apply(_variables(state), images, train=False)
        predictions = jnp.argmax(logits, axis=-1)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        one_hot = jax.nn.one_hot(predictions, num_classes, dtype=jnp.int32)
        return {
            "errors": jnp.sum((predictions != labels) & valid),
            "loss": jnp.sum(jnp.where(valid, losses, 0.0)),
            "class_counts": jnp.sum(one_hot * valid[:, None], axis=0),
        }

    return eval_step


def tree_all_finite(tree: Any) -> jax.Array:
    """Return whether every floating-point leaf of `tree` is finite."""
    leaves = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)
