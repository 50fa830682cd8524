"""Update rules of Liao, Leibo & Poggio (AAAI 2016): SGD and Batch Manhattan.

The paper writes every rule as ``w(t+1) = w(t) + lr * tau(t)``, where ``g`` is the loss
gradient summed over the mini-batch, ``m`` the momentum and ``d`` the weight-decay rate:

* setting 0 (SGD): ``tau(t) = -g + m tau(t-1) - d w``
* setting 1 (BM, the default Batch Manhattan): ``tau(t) = -sign(g) + m tau(t-1) - d w``
* setting 2: ``tau(t) = sign(-sign(g) + m tau(t-1) - d w)``, so the momentum buffer carries
  the signed update
* setting 3: ``tau(t) = sign(kappa(t))`` with ``kappa(t) = -sign(g) + m kappa(t-1) - d w``, so
  the momentum buffer carries the unsigned accumulator

The learning rate multiplies the whole of ``tau``, momentum included, so a learning-rate
schedule never rescales the momentum buffer.

The rules are optax chains. ``scale_by_update_rule`` builds ``-tau`` (optax's sign convention:
the learning-rate scaling flips it), ``signed_trace`` is the one piece optax lacks (setting 2),
and ``update_rule`` / ``batch_manhattan`` are the full optimizers. Their learning rate is a
traced value in the optimizer state (``optax.inject_hyperparams``), so one compiled step serves
every rate of a sweep. ``set_learning_rate`` and ``init_sweep_state`` build states for given
rates without retracing. ``paper_schedule_factor`` and ``epoch_schedule_factor`` are the
paper's learning-rate schedule per step and per epoch, and ``freeze`` gives zero updates, and no
optimizer state, to frozen parameters.

Choices the paper leaves open, each a parameter:

* ``sign(0)``: the paper defines sign with the values -1 and 1 only and does not state the
  value at zero. The default ``sign_of_zero=0.0`` follows ``jnp.sign`` (and
  ``optax.scale_by_sign``): a zero gradient component gives no push, and a zero final
  accumulator (settings 2 and 3) gives no step. With +1 or -1, a parameter whose gradient
  stays zero (the bias of a dead ReLU unit) would drift every step, by up to ``lr / (1 - m)``
  in setting 1.
* weight decay: the paper gives no rate, so the default is MatConvNet's 5e-4, applied only to
  leaves named ``kernel`` (not to biases or batch-norm parameters; feedback matrices are not
  parameters at all).
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

SETTINGS = (0, 1, 2, 3)
DEFAULT_MOMENTUM = 0.9
# The paper gives no rate. 5e-4 is the default of MatConvNet's cnn_train of 2014-2015, the
# software the paper's MNIST and CIFAR networks appear to come from.
DEFAULT_WEIGHT_DECAY = 5e-4
PAPER_BASE_LEARNING_RATE = 5e-4
PAPER_LR_MULTIPLIERS = (100.0, 10.0, 1.0, 0.1, 0.01)
PAPER_LR_BOUNDARIES = (50, 60)
PAPER_LR_FACTORS = (1.0, 0.1, 0.01)
_SIGN_OF_ZERO_CHOICES = (-1.0, 0.0, 1.0)

MaskOrFn = Any | Callable[[optax.Params], Any]


def _concrete_float(value: Any) -> float | None:
    """Return ``value`` as a float, or None for a traced value that cannot be checked."""
    try:
        return float(value)
    except jax.errors.ConcretizationTypeError:
        return None


def _check_learning_rate(learning_rate: Any) -> None:
    if callable(learning_rate):
        raise ValueError(
            f"learning_rate must be a number, got the callable {learning_rate!r}; pass a "
            "step-dependent factor as `schedule` instead."
        )
    value = _concrete_float(learning_rate)
    if value is not None and not value >= 0.0:
        raise ValueError(f"learning_rate must be >= 0, got {learning_rate!r}.")


def _check_hyperparameters(
    setting: Any, momentum: Any, weight_decay: Any, sign_of_zero: Any
) -> None:
    """Raise ValueError naming the first invalid hyperparameter and its valid range."""
    if isinstance(setting, bool) or setting not in SETTINGS:
        raise ValueError(f"Unknown update-rule setting {setting!r}; valid settings: {SETTINGS}.")
    value = _concrete_float(momentum)
    if value is not None and not 0.0 <= value < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
    value = _concrete_float(weight_decay)
    if value is not None and not value >= 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}.")
    if sign_of_zero not in _SIGN_OF_ZERO_CHOICES:
        raise ValueError(
            f"sign_of_zero must be one of {_SIGN_OF_ZERO_CHOICES}, got {sign_of_zero!r}."
        )


def _sign(x: jax.Array, sign_of_zero: float) -> jax.Array:
    """Elementwise sign with ``sign_of_zero`` where ``x == 0``."""
    if sign_of_zero == 0.0:
        return jnp.sign(x)
    return jnp.where(x == 0, jnp.asarray(sign_of_zero, x.dtype), jnp.sign(x))


def scale_by_sign(sign_of_zero: float = 0.0) -> optax.GradientTransformation:
    """Replace each update by its sign, with a chosen value for zero entries.

    With ``sign_of_zero=0`` (the default) this is ``optax.scale_by_sign()``, which uses
    ``jnp.sign``: a zero entry stays zero.

    Args:
      sign_of_zero: value that a zero entry maps to: -1.0, 0.0 or 1.0.

    Returns:
      A stateless ``optax.GradientTransformation``.

    Raises:
      ValueError: if ``sign_of_zero`` is not -1, 0 or 1.
    """
    if sign_of_zero not in _SIGN_OF_ZERO_CHOICES:
        raise ValueError(
            f"sign_of_zero must be one of {_SIGN_OF_ZERO_CHOICES}, got {sign_of_zero!r}."
        )
    if sign_of_zero == 0.0:
        return optax.scale_by_sign()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: _sign(u, sign_of_zero), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


class SignedTraceState(NamedTuple):
    """Sign of the previous update, ``sign(u(t-1) + decay * trace(t-2))``."""

    trace: optax.Params


def signed_trace(decay: float, sign_of_zero: float = 0.0) -> optax.GradientTransformation:
    """Take the sign of a momentum trace and carry that sign as the next trace.

    ``trace(t) = sign(u(t) + decay * trace(t-1))``; the output is ``trace(t)``. This is the
    momentum of Batch Manhattan setting 2, whose buffer stores the signed update (``optax.trace``
    followed by a sign would carry the unsigned sum instead, which is setting 3).

    Args:
      decay: momentum coefficient, in [0, 1).
      sign_of_zero: value of ``sign(0)``: -1.0, 0.0 (as ``jnp.sign``) or 1.0.

    Returns:
      An ``optax.GradientTransformation`` whose state is a ``SignedTraceState``.

    Raises:
      ValueError: if ``decay`` is outside [0, 1) or ``sign_of_zero`` is not -1, 0 or 1.
    """
    value = _concrete_float(decay)
    if value is not None and not 0.0 <= value < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay!r}.")
    if sign_of_zero not in _SIGN_OF_ZERO_CHOICES:
        raise ValueError(
            f"sign_of_zero must be one of {_SIGN_OF_ZERO_CHOICES}, got {sign_of_zero!r}."
        )

    def init_fn(params):
        return SignedTraceState(trace=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        new_trace = jax.tree.map(
            lambda u, t: _sign(u + decay * t, sign_of_zero), updates, state.trace
        )
        return new_trace, SignedTraceState(trace=new_trace)

    return optax.GradientTransformation(init_fn, update_fn)


def weight_decay_mask(params: optax.Params) -> Any:
    """Return a tree of bools that is True only for leaves named ``kernel``.

    This is the default weight-decay mask: flax ``Dense``/``Conv`` weights are named ``kernel``,
    while biases (``bias``) and batch-norm parameters (``scale``, ``bias``) are not decayed.
    Optax wrappers may replace masked-out leaves by ``optax.MaskedNode``; those have no leaves
    and are passed through.
    """

    def is_kernel(path, _):
        last = path[-1] if path else None
        name = getattr(last, "key", getattr(last, "name", None))
        return name == "kernel"

    return jax.tree_util.tree_map_with_path(is_kernel, params)


# The optimizers' `weight_decay_mask` argument shadows the function inside them.
_default_weight_decay_mask = weight_decay_mask


def scale_by_update_rule(
    setting: int = 1,
    momentum: float = DEFAULT_MOMENTUM,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    weight_decay_mask: MaskOrFn | None = None,
    sign_of_zero: float = 0.0,
) -> optax.GradientTransformation:
    """Turn the summed gradient ``g`` into ``-tau`` of update-rule ``setting`` (0 to 3).

    This is the update rule without the learning rate; chain it with
    ``optax.scale_by_learning_rate`` (which flips the sign back) to get ``lr * tau``. Pieces,
    in optax's sign convention (``u`` is the running update):

    * setting 0: ``add_decayed_weights(d)``, ``trace(m)``
    * setting 1: ``scale_by_sign``, ``add_decayed_weights(d)``, ``trace(m)``
    * setting 2: ``scale_by_sign``, ``add_decayed_weights(d)``, ``signed_trace(m)``
    * setting 3: ``scale_by_sign``, ``add_decayed_weights(d)``, ``trace(m)``, ``scale_by_sign``

    Args:
      setting: 0 (SGD), 1 (Batch Manhattan, the paper's default), 2 or 3.
      momentum: ``m``, in [0, 1).
      weight_decay: ``d``, >= 0.
      weight_decay_mask: tree of bools (or a function of the params returning one) that is True
        for the leaves to decay; None means the function ``weight_decay_mask``: kernels only.
      sign_of_zero: the paper's ``sign(0)``, for both the gradient sign and the final sign of
        settings 2 and 3: -1.0, 0.0 (default, as ``jnp.sign``) or 1.0.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: naming an unknown setting, a momentum outside [0, 1), a negative weight
        decay or a ``sign_of_zero`` other than -1, 0 or 1.
    """
    _check_hyperparameters(setting, momentum, weight_decay, sign_of_zero)
    mask = _default_weight_decay_mask if weight_decay_mask is None else weight_decay_mask
    decay = optax.add_decayed_weights(weight_decay, mask=mask)
    if setting == 0:
        return optax.chain(decay, optax.trace(momentum))

    gradient_sign = scale_by_sign(sign_of_zero)
    if setting == 1:
        return optax.chain(gradient_sign, decay, optax.trace(momentum))
    # The chain carries -tau, and -sign(x) = sign(-x) except at 0, where the paper's
    # tau = sign(0) = s becomes -s in this convention.
    if setting == 2:
        return optax.chain(gradient_sign, decay, signed_trace(momentum, -sign_of_zero))
    return optax.chain(gradient_sign, decay, optax.trace(momentum), scale_by_sign(-sign_of_zero))


def _update_rule(
    setting: int,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
    weight_decay_mask: MaskOrFn | None,
    sign_of_zero: float,
    schedule: optax.Schedule | None,
) -> optax.GradientTransformation:
    pieces = [
        scale_by_update_rule(setting, momentum, weight_decay, weight_decay_mask, sign_of_zero)
    ]
    # The schedule scales the step after the momentum trace, so it never rescales the buffer.
    if schedule is not None:
        pieces.append(optax.scale_by_schedule(schedule))
    pieces.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*pieces)


_STATIC_ARGS = ("setting", "weight_decay_mask", "sign_of_zero", "schedule")


def update_rule(
    setting: int,
    learning_rate: float,
    *,
    momentum: float = DEFAULT_MOMENTUM,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    weight_decay_mask: MaskOrFn | None = None,
    sign_of_zero: float = 0.0,
    schedule: optax.Schedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Build the optimizer of update-rule ``setting`` (Liao, Leibo & Poggio, AAAI 2016).

    With ``g`` the gradient summed over the mini-batch, ``m`` the momentum, ``d`` the weight
    decay, ``lr`` the learning rate and ``f(t)`` the schedule factor of step ``t``:

    .. math::

      w(t+1) = w(t) + lr \cdot f(t) \cdot \tau(t)

    * setting 0 (SGD): :math:`\tau(t) = -g + m \tau(t-1) - d w`
    * setting 1 (BM): :math:`\tau(t) = -\mathrm{sign}(g) + m \tau(t-1) - d w`
    * setting 2: :math:`\tau(t) = \mathrm{sign}(-\mathrm{sign}(g) + m \tau(t-1) - d w)`
    * setting 3: :math:`\tau(t) = \mathrm{sign}(\kappa(t))`,
      :math:`\kappa(t) = -\mathrm{sign}(g) + m \kappa(t-1) - d w`

    ``lr`` and ``f(t)`` multiply the whole of ``tau``, so the momentum buffer stores ``tau``
    (``kappa`` for setting 3) unscaled and a schedule step does not rescale it.

    The result is wrapped in ``optax.inject_hyperparams``: ``learning_rate``, ``momentum`` and
    ``weight_decay`` are arrays in ``opt_state.hyperparams`` and are read from the state at
    every update, so one jitted step serves all rates of a sweep (see ``set_learning_rate``
    and ``init_sweep_state``).

    Example::

      tx = update_rule(1, learning_rate=5e-4, schedule=paper_schedule_factor(600))
      opt_state = tx.init(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)

    Args:
      setting: 0 (SGD), 1 (Batch Manhattan, the paper's default), 2 or 3.
      learning_rate: ``lr``, >= 0.
      momentum: ``m``, in [0, 1); the paper uses 0.9.
      weight_decay: ``d``, >= 0. The paper gives no value; 5e-4 is MatConvNet's default.
      weight_decay_mask: tree of bools (or a function of the params returning one) that is True
        for the leaves to decay; None means the function ``weight_decay_mask``: kernels only,
        not biases or batch-norm parameters.
      sign_of_zero: the paper's ``sign(0)`` for the gradient sign and the final sign of
        settings 2 and 3: -1.0, 0.0 (default, as ``jnp.sign``) or 1.0. Unused by setting 0.
      schedule: optional function of the step count (0 for the first update) returning the
        factor ``f(t)``, e.g. ``paper_schedule_factor``; None means ``f = 1``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is optax's
      ``InjectStatefulHyperparamsState``.

    Raises:
      ValueError: naming an unknown setting, a negative or callable learning rate, a momentum
        outside [0, 1), a negative weight decay or an invalid ``sign_of_zero``.
    """
    _check_learning_rate(learning_rate)
    _check_hyperparameters(setting, momentum, weight_decay, sign_of_zero)
    factory = optax.inject_hyperparams(_update_rule, static_args=_STATIC_ARGS)
    return factory(
        setting=setting,
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
        sign_of_zero=sign_of_zero,
        schedule=schedule,
    )


def batch_manhattan(
    learning_rate: float,
    setting: int = 1,
    *,
    momentum: float = DEFAULT_MOMENTUM,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    weight_decay_mask: MaskOrFn | None = None,
    sign_of_zero: float = 0.0,
    schedule: optax.Schedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Build the Batch Manhattan optimizer (Liao, Leibo & Poggio, AAAI 2016).

    Batch Manhattan replaces the summed mini-batch gradient ``g`` by its sign, then adds
    momentum and weight decay. Setting 1, the paper's default "BM":

    .. math::

      \tau(t) = -\mathrm{sign}(g) + m \tau(t-1) - d w, \qquad w(t+1) = w(t) + lr \cdot \tau(t)

    Settings 2 and 3 take a final sign (see ``update_rule``). Every parameter moves by at most
    ``lr / (1 - m) + lr d |w| / (1 - m)`` per step whatever the gradient's scale, which is what
    stabilises training with asymmetric feedback.

    Example::

      tx = batch_manhattan(learning_rate=5e-4)
      opt_state = tx.init(params)

    Args:
      learning_rate: ``lr``, >= 0.
      setting: 1 (default), 2 or 3.
      momentum: ``m``, in [0, 1).
      weight_decay: ``d``, >= 0; 5e-4 by default.
      weight_decay_mask: leaves to decay; None means kernels only (``weight_decay_mask``).
      sign_of_zero: the paper's ``sign(0)``: -1.0, 0.0 (default) or 1.0.
      schedule: optional function of the step count returning a learning-rate factor.

    Returns:
      The optimizer of ``update_rule(setting, learning_rate, ...)``.

    Raises:
      ValueError: for setting 0 (plain SGD: use ``update_rule``) or any invalid value that
        ``update_rule`` rejects.
    """
    if setting not in (1, 2, 3) or isinstance(setting, bool):
        raise ValueError(
            f"Unknown Batch Manhattan setting {setting!r}; valid settings: (1, 2, 3). "
            "Setting 0 is plain SGD: use update_rule(0, ...)."
        )
    return update_rule(
        setting,
        learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
        sign_of_zero=sign_of_zero,
        schedule=schedule,
    )


def _is_inject_state(node: Any) -> bool:
    return isinstance(node, optax.InjectStatefulHyperparamsState)


def set_learning_rate(opt_state: optax.OptState, learning_rate: Any) -> optax.OptState:
    """Return ``opt_state`` with its learning rate replaced, keeping dtype and structure.

    Works on the state of ``update_rule`` and of any wrapper around it (``freeze``, chains):
    every ``inject_hyperparams`` state inside that has a ``learning_rate`` gets the new value.
    The result has the same tree structure, shapes and dtypes, so a jitted update compiled for
    one rate runs for it without retracing. ``learning_rate`` may be traced (e.g. under
    ``jax.vmap``).

    Raises:
      ValueError: if ``opt_state`` contains no injected learning rate.
    """
    found = []

    def replace(node):
        if not _is_inject_state(node) or "learning_rate" not in node.hyperparams:
            return node
        found.append(True)
        old = node.hyperparams["learning_rate"]
        new = jnp.asarray(learning_rate, dtype=old.dtype).reshape(jnp.shape(old))
        return node._replace(hyperparams={**node.hyperparams, "learning_rate": new})

    new_state = jax.tree.map(replace, opt_state, is_leaf=_is_inject_state)
    if not found:
        raise ValueError(
            "No injected learning_rate found in opt_state; build the optimizer with "
            "update_rule or batch_manhattan."
        )
    return new_state


def get_learning_rate(opt_state: optax.OptState) -> jax.Array:
    """Return the learning rate stored in ``opt_state`` (the first one found).

    Raises:
      ValueError: if ``opt_state`` contains no injected learning rate.
    """
    nodes = jax.tree.leaves(opt_state, is_leaf=_is_inject_state)
    for node in nodes:
        if _is_inject_state(node) and "learning_rate" in node.hyperparams:
            return node.hyperparams["learning_rate"]
    raise ValueError(
        "No injected learning_rate found in opt_state; build the optimizer with update_rule "
        "or batch_manhattan."
    )


def init_sweep_state(
    tx: optax.GradientTransformation,
    params: optax.Params,
    learning_rates: Any,
    *,
    params_axis: int | None = None,
) -> optax.OptState:
    """Initialise one optimizer state per learning rate, stacked on a leading run axis.

    The states differ only in their learning rate, so ``jax.vmap(tx.update)`` over them runs
    the whole sweep as one program, compiled once.

    Args:
      tx: an optimizer from ``update_rule`` or ``batch_manhattan`` (optionally wrapped).
      params: the parameters, shared by all runs (``params_axis=None``) or with a leading run
        axis (``params_axis=0``).
      learning_rates: 1-D array of rates, one per run.
      params_axis: the run axis of ``params``, or None.

    Returns:
      The optimizer state with a leading axis of ``len(learning_rates)`` on every leaf.
    """
    rates = jnp.asarray(learning_rates)
    if rates.ndim != 1:
        raise ValueError(f"learning_rates must be 1-D, got shape {rates.shape}.")

    def init_one(run_params, rate):
        return set_learning_rate(tx.init(run_params), rate)

    return jax.vmap(init_one, in_axes=(params_axis, 0))(params, rates)


def sweep_learning_rates(
    base_learning_rate: float = PAPER_BASE_LEARNING_RATE,
    multipliers: Sequence[float] = PAPER_LR_MULTIPLIERS,
) -> np.ndarray:
    """Return the learning rates of a sweep, ``base_learning_rate * multiplier`` (float32).

    The paper runs each {condition, dataset} pair with the base rate 5e-4 times 100, 10, 1,
    0.1 and 0.01 and reports the best run.

    Raises:
      ValueError: if the base rate or a multiplier is not positive, or no multiplier is given.
    """
    if not base_learning_rate > 0:
        raise ValueError(f"base_learning_rate must be > 0, got {base_learning_rate!r}.")
    if len(multipliers) == 0 or not all(x > 0 for x in multipliers):
        raise ValueError(
            f"multipliers must be a non-empty sequence of values > 0, got {multipliers!r}."
        )
    return np.asarray([base_learning_rate * x for x in multipliers], dtype=np.float32)


def _check_schedule(boundaries: Sequence[int], factors: Sequence[float]) -> None:
    if any(int(b) != b or b < 1 for b in boundaries) or any(
        b1 >= b2 for b1, b2 in zip(boundaries, boundaries[1:], strict=False)
    ):
        raise ValueError(
            f"boundaries must be strictly increasing epoch numbers >= 1, got {boundaries!r}."
        )
    if len(factors) != len(boundaries) + 1 or not all(x > 0 for x in factors):
        raise ValueError(
            f"factors must be {len(boundaries) + 1} positive values (one more than the "
            f"boundaries {boundaries!r}), got {factors!r}."
        )


def epoch_schedule_factor(
    epoch: Any,
    boundaries: Sequence[int] = PAPER_LR_BOUNDARIES,
    factors: Sequence[float] = PAPER_LR_FACTORS,
) -> jax.Array:
    """Return the learning-rate factor of a 1-based ``epoch`` (an int or a traced int array).

    The factor is ``factors[0]`` for epochs 1 to ``boundaries[0]``, ``factors[1]`` up to
    ``boundaries[1]``, and so on. The paper's default is 1 for epochs 1-50, 0.1 for 51-60 and
    0.01 for 61-65. Use it where the caller counts epochs, e.g. to set the rate once per epoch
    with ``set_learning_rate(opt_state, base_rate * epoch_schedule_factor(epoch))``, which works
    whatever the batch size of each epoch.

    Raises:
      ValueError: for boundaries that are not increasing positive integers, or a wrong number
        of factors or a non-positive factor.
    """
    boundaries = tuple(boundaries)
    factors = tuple(float(x) for x in factors)
    _check_schedule(boundaries, factors)
    passed = jnp.sum(jnp.asarray(epoch)[..., None] > jnp.asarray(boundaries, jnp.int32), axis=-1)
    return jnp.asarray(factors, jnp.float32)[passed]


def paper_schedule_factor(
    steps_per_epoch: int | Sequence[int],
    boundaries: Sequence[int] = PAPER_LR_BOUNDARIES,
    factors: Sequence[float] = PAPER_LR_FACTORS,
) -> Callable[[jax.Array], jax.Array]:
    """Build the paper's step schedule: the learning-rate factor of each update step.

    The factor of a step is ``epoch_schedule_factor`` of its epoch: by default 1 for epochs
    1-50, 0.1 for 51-60 and 0.01 for 61-65. Steps count from 0, so with ``k`` steps per epoch,
    step ``50 k - 1`` is the last one at factor 1 and step ``50 k`` the first at 0.1.

    When the batch size changes during a run (the paper's uSF+BM procedure: batch 100 for 3
    epochs, then 500), pass the number of steps of each epoch instead of one number. The epoch
    boundaries then fall at the cumulative step counts, and the optimizer's own step counter
    keeps counting across the change, so the schedule needs no epoch argument.

    Args:
      steps_per_epoch: update steps per epoch (> 0), or a sequence of the steps of epochs 1, 2,
        ... covering at least ``max(boundaries)`` epochs.
      boundaries: strictly increasing epoch numbers (>= 1) after which the factor changes.
      factors: ``len(boundaries) + 1`` positive factors.

    Returns:
      A function of the step count (int array, traceable) returning a float32 factor, usable
      as ``update_rule(..., schedule=...)``.

    Raises:
      ValueError: for non-positive step counts, boundaries that are not increasing positive
        integers, a per-epoch step list shorter than the last boundary, or a wrong number of
        factors or a non-positive factor.
    """
    boundaries = tuple(boundaries)
    factors = tuple(float(x) for x in factors)
    _check_schedule(boundaries, factors)

    if isinstance(steps_per_epoch, int | np.integer):
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch!r}.")
        step_boundaries = [steps_per_epoch * b for b in boundaries]
    else:
        epoch_steps = [int(x) for x in steps_per_epoch]
        if any(x < 1 for x in epoch_steps):
            raise ValueError(f"steps_per_epoch entries must be >= 1, got {steps_per_epoch!r}.")
        if boundaries and len(epoch_steps) < boundaries[-1]:
            raise ValueError(
                f"steps_per_epoch lists {len(epoch_steps)} epochs, fewer than the last "
                f"boundary {boundaries[-1]}."
            )
        cumulative = np.cumsum(epoch_steps)
        step_boundaries = [int(cumulative[b - 1]) for b in boundaries]

    # optax counts steps in int32.
    step_boundaries = np.asarray(step_boundaries, dtype=np.int32)
    factor_table = np.asarray(factors, dtype=np.float32)

    def schedule(step):
        index = jnp.searchsorted(step_boundaries, step, side="right")
        return jnp.asarray(factor_table)[index]

    return schedule


def freeze(
    tx: optax.GradientTransformation, frozen: bool | Any | Callable[[optax.Params], Any]
) -> optax.GradientTransformationExtraArgs:
    """Wrap ``tx`` so that frozen leaves get zero updates and no optimizer state.

    The clamped-layer controls (a layer kept at its random initialisation) need this: frozen
    leaves get ``optax.set_to_zero`` (no weight decay either), the other leaves go through
    ``tx`` unchanged, and ``tx`` keeps state (momentum buffers) only for the trainable leaves.

    Args:
      tx: any optax transformation, e.g. ``update_rule(...)``.
      frozen: tree of bools like the params (or a prefix of it), or a function of the params
        returning one; True marks a frozen leaf.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (an ``optax.multi_transform``).
    """

    def param_labels(params):
        frozen_tree = frozen(params) if callable(frozen) else frozen
        # Label every leaf, not a prefix, so tx receives optax.MaskedNode exactly at the frozen
        # leaves and a full-tree mask inside tx (e.g. weight_decay_mask) still matches.
        return jax.tree.map(
            lambda is_frozen, subtree: jax.tree.map(
                lambda _: "frozen" if is_frozen else "trainable", subtree
            ),
            frozen_tree,
            params,
        )

    return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, param_labels)
