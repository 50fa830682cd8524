"""Tests for the update rules (settings 0-3), the learning-rate schedule and freezing."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from asym_jax import layers, optimizers

# Hand-computed trajectories. One kernel of five components, lr = 1/4, m = 1/2, d = 1/8: every
# value is a short dyadic fraction, so float32 arithmetic is exact and the tolerance is 0.
#   c0: the gradient changes sign (2, -1/2, 1);
#   c1: zero gradient for two steps, so only decay and momentum move it;
#   c2: zero gradient at step 3;
#   c3: w = 0 and g = 0 throughout, so every sign is sign(0) = 0 and it never moves;
#   c4: setting 2 and setting 3 part at step 2.
LR, MOMENTUM, DECAY = 0.25, 0.5, 0.125
W0 = (1.0, -2.0, 0.5, 0.0, 3.0)
GRADIENTS = (
    (2.0, 0.0, -1.0, 0.0, 1.0),
    (-0.5, 0.0, -4.0, 0.0, -1.0),
    (1.0, 3.0, 0.0, 0.0, -1.0),
)

# Per step: (the momentum buffer in the paper's terms, which is tau, or kappa for setting 3;
# w after the step, which is w + lr * tau).
TRAJECTORIES = {
    # Setting 0: tau = -g + m tau(t-1) - d w.
    0: (
        # step 1:
        #   c0: tau = -2 + 0 - 1/8 = -17/8; w = 1 - 17/32 = 15/32
        #   c1: tau = 0 + 0 + 1/4 = 1/4; w = -2 + 1/16 = -31/16
        #   c2: tau = 1 + 0 - 1/16 = 15/16; w = 1/2 + 15/64 = 47/64
        #   c3: tau = 0 + 0 + 0 = 0; w = 0
        #   c4: tau = -1 + 0 - 3/8 = -11/8; w = 3 - 11/32 = 85/32
        ((-17 / 8, 1 / 4, 15 / 16, 0, -11 / 8), (15 / 32, -31 / 16, 47 / 64, 0, 85 / 32)),
        # step 2:
        #   c0: tau = 1/2 - 17/16 - 15/256 = -159/256; w = 15/32 - 159/1024 = 321/1024
        #   c1: tau = 0 + 1/8 + 31/128 = 47/128; w = -31/16 + 47/512 = -945/512
        #   c2: tau = 4 + 15/32 - 47/512 = 2241/512; w = 47/64 + 2241/2048 = 3745/2048
        #   c3: tau = 0; w = 0
        #   c4: tau = 1 - 11/16 - 85/256 = -5/256; w = 85/32 - 5/1024 = 2715/1024
        (
            (-159 / 256, 47 / 128, 2241 / 512, 0, -5 / 256),
            (321 / 1024, -945 / 512, 3745 / 2048, 0, 2715 / 1024),
        ),
        # step 3:
        #   c0: tau = -1 - 159/512 - 321/8192 = -11057/8192; w = 321/1024 - 11057/32768
        #       = -785/32768
        #   c1: tau = -3 + 47/256 + 945/4096 = -10591/4096; w = -945/512 - 10591/16384
        #       = -40831/16384
        #   c2: tau = 0 + 2241/1024 - 3745/16384 = 32111/16384; w = 3745/2048 + 32111/65536
        #       = 151951/65536
        #   c3: tau = 0; w = 0
        #   c4: tau = 1 - 5/512 - 2715/8192 = 5397/8192; w = 2715/1024 + 5397/32768
        #       = 92277/32768
        (
            (-11057 / 8192, -10591 / 4096, 32111 / 16384, 0, 5397 / 8192),
            (-785 / 32768, -40831 / 16384, 151951 / 65536, 0, 92277 / 32768),
        ),
    ),
    # Setting 1: tau = -sign(g) + m tau(t-1) - d w.
    1: (
        # step 1:
        #   c0: tau = -1 + 0 - 1/8 = -9/8; w = 1 - 9/32 = 23/32
        #   c1: tau = 0 + 0 + 1/4 = 1/4; w = -2 + 1/16 = -31/16
        #   c2: tau = 1 + 0 - 1/16 = 15/16; w = 1/2 + 15/64 = 47/64
        #   c3: tau = 0; w = 0
        #   c4: tau = -1 + 0 - 3/8 = -11/8; w = 3 - 11/32 = 85/32
        ((-9 / 8, 1 / 4, 15 / 16, 0, -11 / 8), (23 / 32, -31 / 16, 47 / 64, 0, 85 / 32)),
        # step 2:
        #   c0: tau = 1 - 9/16 - 23/256 = 89/256; w = 23/32 + 89/1024 = 825/1024
        #   c1: tau = 0 + 1/8 + 31/128 = 47/128; w = -31/16 + 47/512 = -945/512
        #   c2: tau = 1 + 15/32 - 47/512 = 705/512; w = 47/64 + 705/2048 = 2209/2048
        #   c3: tau = 0; w = 0
        #   c4: tau = 1 - 11/16 - 85/256 = -5/256; w = 85/32 - 5/1024 = 2715/1024
        (
            (89 / 256, 47 / 128, 705 / 512, 0, -5 / 256),
            (825 / 1024, -945 / 512, 2209 / 2048, 0, 2715 / 1024),
        ),
        # step 3:
        #   c0: tau = -1 + 89/512 - 825/8192 = -7593/8192; w = 825/1024 - 7593/32768
        #       = 18807/32768
        #   c1: tau = -1 + 47/256 + 945/4096 = -2399/4096; w = -945/512 - 2399/16384
        #       = -32639/16384
        #   c2: tau = 0 + 705/1024 - 2209/16384 = 9071/16384; w = 2209/2048 + 9071/65536
        #       = 79759/65536
        #   c3: tau = 0; w = 0
        #   c4: tau = 1 - 5/512 - 2715/8192 = 5397/8192; w = 2715/1024 + 5397/32768
        #       = 92277/32768
        (
            (-7593 / 8192, -2399 / 4096, 9071 / 16384, 0, 5397 / 8192),
            (18807 / 32768, -32639 / 16384, 79759 / 65536, 0, 92277 / 32768),
        ),
    ),
    # Setting 2: tau = sign(-sign(g) + m tau(t-1) - d w). The buffer stores the signed tau.
    2: (
        # step 1:
        #   c0: tau = sign(-1 + 0 - 1/8) = -1; w = 1 - 1/4 = 3/4
        #   c1: tau = sign(0 + 0 + 1/4) = 1; w = -2 + 1/4 = -7/4
        #   c2: tau = sign(1 + 0 - 1/16) = 1; w = 1/2 + 1/4 = 3/4
        #   c3: tau = sign(0) = 0; w = 0
        #   c4: tau = sign(-1 + 0 - 3/8) = -1; w = 3 - 1/4 = 11/4
        ((-1, 1, 1, 0, -1), (3 / 4, -7 / 4, 3 / 4, 0, 11 / 4)),
        # step 2:
        #   c0: tau = sign(1 - 1/2 - 3/32) = sign(13/32) = 1; w = 3/4 + 1/4 = 1
        #   c1: tau = sign(0 + 1/2 + 7/32) = sign(23/32) = 1; w = -7/4 + 1/4 = -3/2
        #   c2: tau = sign(1 + 1/2 - 3/32) = sign(45/32) = 1; w = 3/4 + 1/4 = 1
        #   c3: tau = sign(0) = 0; w = 0
        #   c4: tau = sign(1 - 1/2 - 11/32) = sign(5/32) = 1; w = 11/4 + 1/4 = 3
        ((1, 1, 1, 0, 1), (1, -3 / 2, 1, 0, 3)),
        # step 3:
        #   c0: tau = sign(-1 + 1/2 - 1/8) = sign(-5/8) = -1; w = 1 - 1/4 = 3/4
        #   c1: tau = sign(-1 + 1/2 + 3/16) = sign(-5/16) = -1; w = -3/2 - 1/4 = -7/4
        #   c2: tau = sign(0 + 1/2 - 1/8) = sign(3/8) = 1; w = 1 + 1/4 = 5/4
        #   c3: tau = sign(0) = 0; w = 0
        #   c4: tau = sign(1 + 1/2 - 3/8) = sign(9/8) = 1; w = 3 + 1/4 = 13/4
        ((-1, -1, 1, 0, 1), (3 / 4, -7 / 4, 5 / 4, 0, 13 / 4)),
    ),
    # Setting 3: kappa = -sign(g) + m kappa(t-1) - d w, tau = sign(kappa). The buffer stores kappa.
    3: (
        # step 1:
        #   c0: kappa = -1 + 0 - 1/8 = -9/8, tau = -1; w = 1 - 1/4 = 3/4
        #   c1: kappa = 0 + 0 + 1/4 = 1/4, tau = 1; w = -2 + 1/4 = -7/4
        #   c2: kappa = 1 + 0 - 1/16 = 15/16, tau = 1; w = 1/2 + 1/4 = 3/4
        #   c3: kappa = 0, tau = sign(0) = 0; w = 0
        #   c4: kappa = -1 + 0 - 3/8 = -11/8, tau = -1; w = 3 - 1/4 = 11/4
        ((-9 / 8, 1 / 4, 15 / 16, 0, -11 / 8), (3 / 4, -7 / 4, 3 / 4, 0, 11 / 4)),
        # step 2:
        #   c0: kappa = 1 - 9/16 - 3/32 = 11/32, tau = 1; w = 3/4 + 1/4 = 1
        #   c1: kappa = 0 + 1/8 + 7/32 = 11/32, tau = 1; w = -7/4 + 1/4 = -3/2
        #   c2: kappa = 1 + 15/32 - 3/32 = 11/8, tau = 1; w = 3/4 + 1/4 = 1
        #   c3: kappa = 0, tau = 0; w = 0
        #   c4: kappa = 1 - 11/16 - 11/32 = -1/32, tau = -1 (setting 2 gave +1); w = 11/4 - 1/4
        #       = 5/2
        ((11 / 32, 11 / 32, 11 / 8, 0, -1 / 32), (1, -3 / 2, 1, 0, 5 / 2)),
        # step 3:
        #   c0: kappa = -1 + 11/64 - 1/8 = -61/64, tau = -1; w = 1 - 1/4 = 3/4
        #   c1: kappa = -1 + 11/64 + 3/16 = -41/64, tau = -1; w = -3/2 - 1/4 = -7/4
        #   c2: kappa = 0 + 11/16 - 1/8 = 9/16, tau = 1; w = 1 + 1/4 = 5/4
        #   c3: kappa = 0, tau = 0; w = 0
        #   c4: kappa = 1 - 1/64 - 5/16 = 43/64, tau = 1; w = 5/2 + 1/4 = 11/4
        ((-61 / 64, -41 / 64, 9 / 16, 0, 43 / 64), (3 / 4, -7 / 4, 5 / 4, 0, 11 / 4)),
    ),
}


def _is_momentum_state(node):
    return isinstance(node, optax.TraceState | optimizers.SignedTraceState)


def _momentum_buffers(opt_state):
    """Return the momentum buffers (optax sign convention: -tau, or -kappa) in opt_state."""
    leaves = jax.tree.leaves(opt_state, is_leaf=_is_momentum_state)
    return [leaf.trace for leaf in leaves if _is_momentum_state(leaf)]


def _run(tx, params, gradients):
    """Apply tx for each gradient tree; return [(params, opt_state)] after every step."""
    opt_state = tx.init(params)
    update = jax.jit(tx.update)
    history = []
    for grads in gradients:
        updates, opt_state = update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        history.append((params, opt_state))
    return history


def _kernel_tree(values):
    return {"layer": {"kernel": jnp.asarray(values, jnp.float32)}}


@pytest.mark.parametrize("setting", optimizers.SETTINGS)
def test_update_rule_matches_hand_computed_trajectory(setting):
    tx = optimizers.update_rule(setting, LR, momentum=MOMENTUM, weight_decay=DECAY)
    history = _run(tx, _kernel_tree(W0), [_kernel_tree(g) for g in GRADIENTS])

    for step, ((params, opt_state), (buffer, weights)) in enumerate(
        zip(history, TRAJECTORIES[setting], strict=True), start=1
    ):
        (trace,) = _momentum_buffers(opt_state)
        np.testing.assert_array_equal(
            -trace["layer"]["kernel"], np.float32(buffer), err_msg=f"buffer, step {step}"
        )
        np.testing.assert_array_equal(
            params["layer"]["kernel"], np.float32(weights), err_msg=f"weights, step {step}"
        )


def _reference_trajectory(setting, kernel, bias, gradients, lr, m, d):
    """The paper's formulas in float64; decay on the kernel only, sign(0) = 0."""
    weights = {"kernel": np.float64(kernel), "bias": np.float64(bias)}
    buffers = {name: np.zeros_like(w) for name, w in weights.items()}
    for grads in gradients:
        for name, w in weights.items():
            g = np.float64(grads[name])
            decay = d * w if name == "kernel" else 0.0
            gradient_term = -g if setting == 0 else -np.sign(g)
            accumulated = gradient_term + m * buffers[name] - decay
            tau = accumulated if setting in (0, 1) else np.sign(accumulated)
            buffers[name] = tau if setting != 3 else accumulated
            weights[name] = w + lr * tau
    return weights


@pytest.mark.parametrize("setting", optimizers.SETTINGS)
def test_update_rule_matches_float64_reference(setting):
    rng = np.random.default_rng(setting)
    kernel = rng.normal(size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=(3,)).astype(np.float32)
    gradients = [
        {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=(3,))} for _ in range(5)
    ]
    gradients = [jax.tree.map(np.float32, g) for g in gradients]
    tx = optimizers.update_rule(setting, 0.01)  # momentum 0.9, weight decay 5e-4

    history = _run(tx, {"kernel": kernel, "bias": bias}, gradients)
    expected = _reference_trajectory(setting, kernel, bias, gradients, 0.01, 0.9, 5e-4)

    params, _ = history[-1]
    # Five float32 steps of a few ops each.
    np.testing.assert_allclose(params["kernel"], expected["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["bias"], expected["bias"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("setting", (1, 2, 3))
def test_zero_gradient_gives_no_push(setting):
    # No decay on biases: with sign(0) = 0 a bias whose gradient is always 0 stays put.
    params = {"layer": {"bias": jnp.array([0.0, 1.5])}}
    grads = {"layer": {"bias": jnp.zeros(2)}}
    tx = optimizers.update_rule(setting, 0.1)

    history = _run(tx, params, [grads] * 3)

    for step, (params_after, _) in enumerate(history, start=1):
        np.testing.assert_array_equal(
            params_after["layer"]["bias"], np.float32([0.0, 1.5]), err_msg=f"step {step}"
        )


@pytest.mark.parametrize("sign_of_zero", (-1.0, 0.0, 1.0))
@pytest.mark.parametrize("setting", (1, 2, 3))
def test_sign_of_zero_choices(setting, sign_of_zero):
    # Component 0: g = 1, w = -8, so -sign(g) + m * 0 - d w = -1 + 1 = 0 exactly, which is the
    # final sign's argument in settings 2 and 3. Component 1: g = 0 and w = 0, so the gradient
    # sign is sign(0). With s = sign_of_zero, lr = 1/4, m = 1/2, d = 1/8:
    #   setting 1:    tau = (-1 + 1, -s) = (0, -s)
    #   settings 2/3: tau = (sign(0), sign(-s)) = (s, -s)
    s = sign_of_zero
    tau = (0.0, -s) if setting == 1 else (s, -s)
    tx = optimizers.update_rule(
        setting, LR, momentum=MOMENTUM, weight_decay=DECAY, sign_of_zero=sign_of_zero
    )

    ((params, _),) = _run(tx, _kernel_tree((-8.0, 0.0)), [_kernel_tree((1.0, 0.0))])

    expected = np.float32([-8.0 + LR * tau[0], LR * tau[1]])
    np.testing.assert_array_equal(params["layer"]["kernel"], expected)


def test_scale_by_sign_maps_zero_to_chosen_value():
    updates = {"a": jnp.array([-3.0, 0.0, 2.0])}
    for sign_of_zero in (-1.0, 0.0, 1.0):
        out, _ = optimizers.scale_by_sign(sign_of_zero).update(updates, optax.EmptyState())
        np.testing.assert_array_equal(out["a"], np.float32([-1.0, sign_of_zero, 1.0]))


def test_signed_trace_carries_the_sign():
    tx = optimizers.signed_trace(0.5)
    state = tx.init(jnp.zeros(3))
    # Step 1: sign([0.25, 0, -3] + 0) = [1, 0, -1].
    out, state = tx.update(jnp.array([0.25, 0.0, -3.0]), state)
    np.testing.assert_array_equal(out, np.float32([1.0, 0.0, -1.0]))
    np.testing.assert_array_equal(state.trace, np.float32([1.0, 0.0, -1.0]))
    # Step 2: sign([-0.25, 0, 0.75] + 0.5 * [1, 0, -1]) = sign([0.25, 0, 0.25]) = [1, 0, 1]. An
    # unsigned trace would contain [-0.25, 0, 0.75] + 0.5 * [0.25, 0, -3] = [-0.125, 0, -0.75],
    # whose sign is [-1, 0, -1].
    out, state = tx.update(jnp.array([-0.25, 0.0, 0.75]), state)
    np.testing.assert_array_equal(out, np.float32([1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(state.trace, np.float32([1.0, 0.0, 1.0]))


@pytest.mark.parametrize("setting", optimizers.SETTINGS)
def test_building_block_chain_equals_update_rule(setting):
    rng = np.random.default_rng(10 + setting)
    params = {"dense": {"kernel": rng.normal(size=(3, 2)), "bias": rng.normal(size=(2,))}}
    params = jax.tree.map(np.float32, params)
    gradients = [jax.tree.map(lambda p: np.float32(rng.normal(size=p.shape)), params)] * 3
    block = optax.chain(
        optimizers.scale_by_update_rule(setting, 0.9, 5e-4), optax.scale_by_learning_rate(0.01)
    )

    expected, _ = _run(block, params, gradients)[-1]
    actual, _ = _run(optimizers.update_rule(setting, 0.01), params, gradients)[-1]

    # Same float32 ops in the same order, but learning rates are cast differently.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), actual, expected
    )


def test_batch_manhattan_is_update_rule_setting_1():
    params = _kernel_tree(W0)
    ((params_after, _),) = _run(
        optimizers.batch_manhattan(LR, momentum=MOMENTUM, weight_decay=DECAY),
        params,
        [_kernel_tree(GRADIENTS[0])],
    )
    np.testing.assert_array_equal(
        params_after["layer"]["kernel"], np.float32(TRAJECTORIES[1][0][1])
    )


# Schedule.


def test_paper_schedule_changes_at_epoch_boundaries():
    steps_per_epoch = 7
    schedule = jax.jit(optimizers.paper_schedule_factor(steps_per_epoch))
    cases = {
        0: 1.0,
        steps_per_epoch * 50 - 1: 1.0,  # last step of epoch 50
        steps_per_epoch * 50: 0.1,  # first step of epoch 51
        steps_per_epoch * 60 - 1: 0.1,
        steps_per_epoch * 60: 0.01,
        steps_per_epoch * 65 - 1: 0.01,
    }
    for step, factor in cases.items():
        assert schedule(jnp.int32(step)) == np.float32(factor), f"step {step}"


def test_paper_schedule_with_changing_batch_size():
    # The paper's uSF+BM procedure on 60,000 examples: batch 100 (600 steps) for 3 epochs,
    # then batch 500 (120 steps). Epoch 50 ends at 3 * 600 + 47 * 120 = 7440 steps and epoch
    # 60 at 3 * 600 + 57 * 120 = 8640.
    schedule = optimizers.paper_schedule_factor([600] * 3 + [120] * 62)
    cases = {1799: 1.0, 1800: 1.0, 7439: 1.0, 7440: 0.1, 8639: 0.1, 8640: 0.01}
    for step, factor in cases.items():
        assert schedule(jnp.int32(step)) == np.float32(factor), f"step {step}"


def test_paper_schedule_custom_boundaries_and_factors():
    schedule = optimizers.paper_schedule_factor(2, boundaries=(1, 3, 4), factors=(4, 2, 1, 0.5))
    factors = [float(schedule(jnp.int32(step))) for step in range(10)]
    assert factors == [4, 4, 2, 2, 2, 2, 1, 1, 0.5, 0.5]


def test_epoch_schedule_factor_at_boundaries():
    epochs = np.array([1, 50, 51, 60, 61, 65])

    factors = jax.jit(optimizers.epoch_schedule_factor)(epochs)

    np.testing.assert_array_equal(factors, np.float32([1, 1, 0.1, 0.1, 0.01, 0.01]))
    assert float(optimizers.epoch_schedule_factor(51)) == np.float32(0.1)


def test_step_and_epoch_schedules_agree():
    steps_per_epoch = 3
    steps = np.arange(65 * steps_per_epoch)

    by_step = optimizers.paper_schedule_factor(steps_per_epoch)(steps)
    by_epoch = optimizers.epoch_schedule_factor(steps // steps_per_epoch + 1)

    np.testing.assert_array_equal(by_step, by_epoch)


@pytest.mark.parametrize("setting", (0, 1))
def test_schedule_step_keeps_momentum_buffer(setting):
    # g = 1 = sign(g), d = 0, m = 1/2: the buffer -tau is 1, 3/2, 7/4, 15/8 whether or not the
    # rate changes. From step 3 (the first step of epoch 3) the factor is 1/4, so the updates
    # are -lr * f * (1, 3/2, 7/4, 15/8) with lr = 1/2 and f = (1, 1, 1/4, 1/4).
    schedule = optimizers.paper_schedule_factor(1, boundaries=(2,), factors=(1.0, 0.25))
    tx = optimizers.update_rule(setting, 0.5, momentum=0.5, weight_decay=0.0, schedule=schedule)
    params = jnp.zeros(1)
    opt_state = tx.init(params)

    updates = []
    buffers = []
    for _ in range(4):
        update, opt_state = tx.update(jnp.ones(1), opt_state, params)
        updates.append(float(update[0]))
        buffers.append(float(_momentum_buffers(opt_state)[0][0]))

    assert buffers == [1.0, 1.5, 1.75, 1.875]
    assert updates == [-0.5, -0.75, -0.5 * 0.25 * 1.75, -0.5 * 0.25 * 1.875]


def test_set_learning_rate_keeps_momentum_buffer():
    tx = optimizers.update_rule(1, 0.5, momentum=0.5, weight_decay=0.0)
    params = jnp.zeros(1)
    opt_state = tx.init(params)
    _, opt_state = tx.update(jnp.ones(1), opt_state, params)

    opt_state = optimizers.set_learning_rate(opt_state, 0.125)
    update, opt_state = tx.update(jnp.ones(1), opt_state, params)

    # -tau = 1 + 1/2 * 1 = 3/2, scaled by the new rate only.
    assert float(_momentum_buffers(opt_state)[0][0]) == 1.5
    assert float(update[0]) == -0.125 * 1.5


# Learning rate in the state: sweeps and compilation.


def _sweep_problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {"dense": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=(3,))}}
    params = jax.tree.map(np.float32, params)
    gradients = [
        jax.tree.map(lambda p: np.float32(rng.normal(size=p.shape)), params) for _ in range(3)
    ]
    return params, gradients


@pytest.mark.parametrize("setting", optimizers.SETTINGS)
def test_vmapped_sweep_equals_separate_runs(setting):
    params, gradients = _sweep_problem()
    rates = optimizers.sweep_learning_rates()
    tx = optimizers.update_rule(setting, 1.0)
    opt_state = optimizers.init_sweep_state(tx, params, rates)
    run_params = jax.tree.map(lambda p: jnp.broadcast_to(p, (len(rates), *p.shape)), params)
    sweep_update = jax.jit(jax.vmap(tx.update, in_axes=(None, 0, 0)))

    for grads in gradients:
        updates, opt_state = sweep_update(grads, opt_state, run_params)
        run_params = optax.apply_updates(run_params, updates)

    for run, rate in enumerate(rates):
        separate, _ = _run(optimizers.update_rule(setting, float(rate)), params, gradients)[-1]
        for path in (("dense", "kernel"), ("dense", "bias")):
            actual = run_params[path[0]][path[1]][run]
            expected = separate[path[0]][path[1]]
            # The same float32 ops, batched or not.
            np.testing.assert_allclose(actual, expected, rtol=1e-6, err_msg=f"run {run} {path}")


def test_jitted_update_compiles_once_for_all_rates():
    params, gradients = _sweep_problem()
    tx = optimizers.update_rule(1, 1.0)
    traces = []

    @jax.jit
    def update(grads, opt_state, params):
        traces.append(None)
        return tx.update(grads, opt_state, params)

    first_updates = {}
    for rate in (0.1, 0.01, 3.0):
        opt_state = optimizers.set_learning_rate(tx.init(params), rate)
        updates, _ = update(gradients[0], opt_state, params)
        first_updates[rate] = updates["dense"]["bias"]

    assert len(traces) == 1
    # The rate is read from the state, not baked in at the first trace.
    np.testing.assert_allclose(first_updates[3.0], 30 * first_updates[0.1], rtol=1e-6)


def test_vmapped_sweep_compiles_once_for_new_rates():
    params, gradients = _sweep_problem()
    tx = optimizers.update_rule(2, 1.0)
    traces = []

    @jax.jit
    def sweep_update(grads, opt_state):
        traces.append(None)
        return jax.vmap(tx.update, in_axes=(None, 0, None))(grads, opt_state, params)

    for rates in (optimizers.sweep_learning_rates(), optimizers.sweep_learning_rates(1e-3)):
        sweep_update(gradients[0], optimizers.init_sweep_state(tx, params, rates))

    assert len(traces) == 1


def test_init_sweep_state_one_rate_per_run():
    params, _ = _sweep_problem()
    rates = optimizers.sweep_learning_rates()
    tx = optimizers.freeze(
        optimizers.update_rule(1, 1.0), {"dense": {"kernel": False, "bias": True}}
    )

    opt_state = optimizers.init_sweep_state(tx, params, rates)

    np.testing.assert_array_equal(optimizers.get_learning_rate(opt_state), rates)
    (trace,) = _momentum_buffers(opt_state)
    assert trace["dense"]["kernel"].shape == (5, 4, 3)


def test_init_sweep_state_with_params_per_run():
    params, _ = _sweep_problem()
    run_params = jax.tree.map(lambda p: jnp.stack([p, 2 * p]), params)
    tx = optimizers.update_rule(0, 1.0)

    opt_state = optimizers.init_sweep_state(tx, run_params, [0.5, 0.25], params_axis=0)

    np.testing.assert_array_equal(optimizers.get_learning_rate(opt_state), np.float32([0.5, 0.25]))
    assert _momentum_buffers(opt_state)[0]["dense"]["kernel"].shape == (2, 4, 3)


def test_sweep_learning_rates_are_base_times_multipliers():
    rates = optimizers.sweep_learning_rates()
    np.testing.assert_array_equal(rates, np.float32([5e-2, 5e-3, 5e-4, 5e-5, 5e-6]))
    assert rates.dtype == np.float32


def test_tree_set_and_set_learning_rate_agree():
    # optax.tree_utils.tree_set is the generic way to write a hyperparameter; both must reach
    # the learning rate nested inside freeze().
    params, _ = _sweep_problem()
    tx = optimizers.freeze(
        optimizers.update_rule(1, 1.0), {"dense": {"kernel": False, "bias": True}}
    )
    opt_state = tx.init(params)

    by_tree_set = optax.tree_utils.tree_set(opt_state, learning_rate=jnp.float32(0.125))
    by_helper = optimizers.set_learning_rate(opt_state, 0.125)

    assert optimizers.get_learning_rate(by_tree_set) == np.float32(0.125)
    assert optimizers.get_learning_rate(by_helper) == np.float32(0.125)
    assert jax.tree.structure(by_helper) == jax.tree.structure(opt_state)


def test_set_learning_rate_without_injected_rate_raises():
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.set_learning_rate(optax.sgd(0.1).init(jnp.zeros(2)), 0.5)


# Weight-decay mask, freezing and feedback variables.


def _two_layer_params():
    return {
        "Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
        "BatchNorm_0": {"scale": jnp.ones(3), "bias": jnp.ones(3)},
    }


@pytest.mark.parametrize("setting", optimizers.SETTINGS)
def test_weight_decay_applies_to_kernels_only(setting):
    # Zero gradients and no momentum: only the decay term -d w = -1/2 acts. Settings 0 and 1
    # move the kernel by lr * (-1/2) = -1/8, settings 2 and 3 by lr * sign(-1/2) = -1/4.
    params = _two_layer_params()
    grads = jax.tree.map(jnp.zeros_like, params)
    tx = optimizers.update_rule(setting, 0.25, momentum=0.0, weight_decay=0.5)

    ((params_after, _),) = _run(tx, params, [grads])

    kernel = 0.875 if setting in (0, 1) else 0.75
    np.testing.assert_array_equal(params_after["Dense_0"]["kernel"], np.full((2, 3), kernel))
    np.testing.assert_array_equal(params_after["Dense_0"]["bias"], np.ones(3))
    np.testing.assert_array_equal(params_after["BatchNorm_0"]["scale"], np.ones(3))
    np.testing.assert_array_equal(params_after["BatchNorm_0"]["bias"], np.ones(3))


def test_custom_weight_decay_mask_is_used():
    params = _two_layer_params()
    grads = jax.tree.map(jnp.zeros_like, params)
    everything = lambda tree: jax.tree.map(lambda _: True, tree)
    tx = optimizers.update_rule(
        0, 0.25, momentum=0.0, weight_decay=0.5, weight_decay_mask=everything
    )

    ((params_after, _),) = _run(tx, params, [grads])

    np.testing.assert_array_equal(params_after["Dense_0"]["bias"], np.full(3, 0.875))
    np.testing.assert_array_equal(params_after["BatchNorm_0"]["scale"], np.full(3, 0.875))


class _TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = layers.AsymDense(4, rule="rndf")(x)
        x = nn.BatchNorm(use_running_average=True)(x)
        return layers.AsymDense(2, rule="frsf")(nn.relu(x))


def test_optimizer_sees_params_without_feedback_state():
    variables = _TinyNet().init(
        {"params": jax.random.key(0), "feedback": jax.random.key(1)}, jnp.ones((1, 3))
    )
    assert "feedback" in variables  # RndF and frSF keep V outside the params
    params = variables["params"]
    tx = optimizers.update_rule(1, 0.1)

    opt_state = tx.init(params)

    (trace,) = _momentum_buffers(opt_state)
    assert jax.tree.structure(trace) == jax.tree.structure(params)
    state_sizes = sum(np.size(leaf) for leaf in jax.tree.leaves(opt_state))
    params_size = sum(np.size(leaf) for leaf in jax.tree.leaves(params))
    # One buffer entry per parameter, plus four scalars (step count, learning rate, momentum,
    # weight decay), and nothing for V.
    assert state_sizes == params_size + 4
    mask = optimizers.weight_decay_mask(params)
    assert mask["AsymDense_0"] == {"kernel": True, "bias": False}
    assert mask["BatchNorm_0"] == {"scale": False, "bias": False}


def _freeze_problem():
    params = {
        "bottom": {"kernel": jnp.full((3, 2), 0.5), "bias": jnp.full(2, -0.5)},
        "top": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full(2, 1.0)},
    }
    gradients = [jax.tree.map(lambda p, i=i: jnp.full(p.shape, i - 1.5), params) for i in range(3)]
    return params, gradients


@pytest.mark.parametrize(
    "frozen",
    (
        {"bottom": {"kernel": True, "bias": True}, "top": {"kernel": False, "bias": False}},
        {"bottom": True, "top": False},  # a prefix of the params tree
        lambda params: {"bottom": True, "top": False},
    ),
    ids=("full_tree", "prefix", "callable"),
)
@pytest.mark.parametrize("setting", optimizers.SETTINGS)
def test_frozen_leaves_do_not_move(setting, frozen):
    params, gradients = _freeze_problem()
    tx = optimizers.freeze(optimizers.update_rule(setting, 0.1), frozen)

    params_after, opt_state = _run(tx, params, gradients)[-1]
    unfrozen_after, _ = _run(optimizers.update_rule(setting, 0.1), params, gradients)[-1]

    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(params_after["bottom"][name], params["bottom"][name])
        np.testing.assert_array_equal(params_after["top"][name], unfrozen_after["top"][name])
    (trace,) = _momentum_buffers(opt_state)
    assert jax.tree.leaves(trace["bottom"]) == []  # no momentum buffer for frozen leaves
    assert trace["top"]["kernel"].shape == (2, 2)


@pytest.mark.parametrize(
    "frozen",
    ({"bottom": True, "top": False}, lambda params: {"bottom": True, "top": False}),
    ids=("prefix", "callable"),
)
def test_freeze_with_full_tree_decay_mask(frozen):
    # The engine passes weight_decay_mask(params) as a full tree of bools; it must still match
    # what freeze() hands the inner optimizer. Zero gradients, m = 0, d = 1/2, lr = 1/4: the top
    # kernel moves by lr * (-d w) = -1/4, the top bias and the frozen bottom not at all.
    params, _ = _freeze_problem()
    decay_mask = optimizers.weight_decay_mask(jax.eval_shape(lambda: params))
    inner = optimizers.update_rule(
        0, 0.25, momentum=0.0, weight_decay=0.5, weight_decay_mask=decay_mask
    )
    tx = optimizers.freeze(inner, frozen)

    ((params_after, _),) = _run(tx, params, [jax.tree.map(jnp.zeros_like, params)])

    np.testing.assert_array_equal(params_after["top"]["kernel"], np.full((2, 2), 1.75))
    np.testing.assert_array_equal(params_after["top"]["bias"], params["top"]["bias"])
    np.testing.assert_array_equal(params_after["bottom"]["kernel"], params["bottom"]["kernel"])
    np.testing.assert_array_equal(params_after["bottom"]["bias"], params["bottom"]["bias"])


# Composition with other optax transforms.


def test_clip_by_global_norm_before_sgd():
    params, gradients = _sweep_problem()
    grads = gradients[0]
    clipped, _ = optax.clip_by_global_norm(0.5).update(grads, optax.EmptyState())
    tx = optax.chain(optax.clip_by_global_norm(0.5), optimizers.update_rule(0, 0.1))

    updates, opt_state = tx.update(grads, tx.init(params), params)
    expected, _ = optimizers.update_rule(0, 0.1).update(
        clipped, optimizers.update_rule(0, 0.1).init(params), params
    )

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, expected)
    assert optimizers.get_learning_rate(optimizers.set_learning_rate(opt_state, 0.5)) == 0.5


def test_batch_manhattan_ignores_gradient_clipping():
    # sign(c * g) = sign(g) for c > 0, so clipping the norm cannot change a BM update.
    params, gradients = _sweep_problem()
    tx = optax.chain(optax.clip_by_global_norm(1e-3), optimizers.batch_manhattan(0.1))

    clipped_after, _ = _run(tx, params, gradients)[-1]
    plain_after, _ = _run(optimizers.batch_manhattan(0.1), params, gradients)[-1]

    # The two programs are compiled separately and may round the decay term differently by an
    # ulp; an unsigned update would differ by orders of magnitude.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        clipped_after,
        plain_after,
    )


def test_masked_passes_other_leaves_through():
    # optax.masked applies Batch Manhattan to the kernel and passes the bias gradient through.
    params = {"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
    grads = {"dense": {"kernel": jnp.array([3.0, -0.5]), "bias": jnp.array([3.0, -0.5])}}
    mask = {"dense": {"kernel": True, "bias": False}}
    tx = optax.masked(optimizers.batch_manhattan(0.25, weight_decay=0.0), mask)

    updates, _ = tx.update(grads, tx.init(params), params)

    np.testing.assert_array_equal(updates["dense"]["kernel"], np.float32([-0.25, 0.25]))
    np.testing.assert_array_equal(updates["dense"]["bias"], np.float32([3.0, -0.5]))


# Invalid hyperparameters.

INVALID_CASES = {
    "negative_rate": (lambda: optimizers.update_rule(1, -0.1), "-0.1"),
    "nan_rate": (lambda: optimizers.update_rule(1, float("nan")), "nan"),
    "callable_rate": (lambda: optimizers.update_rule(1, lambda step: 0.1), "schedule"),
    "momentum_one": (lambda: optimizers.update_rule(1, 0.1, momentum=1.0), "momentum.*1.0"),
    "negative_momentum": (lambda: optimizers.update_rule(1, 0.1, momentum=-0.5), "-0.5"),
    "negative_decay": (lambda: optimizers.update_rule(1, 0.1, weight_decay=-1e-4), "-0.0001"),
    "unknown_setting": (lambda: optimizers.update_rule(4, 0.1), "setting 4.*0, 1, 2, 3"),
    "bool_setting": (lambda: optimizers.update_rule(True, 0.1), "setting True"),
    "bm_setting_0": (lambda: optimizers.batch_manhattan(0.1, setting=0), "setting 0"),
    "sign_of_zero": (lambda: optimizers.update_rule(1, 0.1, sign_of_zero=0.5), "0.5"),
    "block_setting": (lambda: optimizers.scale_by_update_rule(7), "setting 7"),
    "signed_trace_decay": (lambda: optimizers.signed_trace(1.5), "1.5"),
    "schedule_steps": (lambda: optimizers.paper_schedule_factor(0), "steps_per_epoch.*0"),
    "schedule_short_list": (
        lambda: optimizers.paper_schedule_factor([10] * 55),
        "55 epochs.*60",
    ),
    "schedule_boundaries": (
        lambda: optimizers.paper_schedule_factor(10, boundaries=(60, 50)),
        r"\(60, 50\)",
    ),
    "schedule_factors": (
        lambda: optimizers.paper_schedule_factor(10, factors=(1.0, 0.1)),
        r"3 positive values",
    ),
    "epoch_schedule_factors": (
        lambda: optimizers.epoch_schedule_factor(1, factors=(1.0, 0.1, 0.01, 0.001)),
        r"3 positive values",
    ),
    "sweep_base": (lambda: optimizers.sweep_learning_rates(0.0), "base_learning_rate"),
    "sweep_rates_2d": (
        lambda: optimizers.init_sweep_state(
            optimizers.update_rule(1, 1.0), jnp.zeros(2), [[0.1, 0.2]]
        ),
        "1-D",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_CASES))
def test_invalid_hyperparameter_raises(case):
    build, message = INVALID_CASES[case]
    with pytest.raises(ValueError, match=message):
        build()
