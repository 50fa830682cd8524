"""Tests for the asymmetric dense/conv ops and their flax modules.

The input cotangent must equal plain autodiff of the same op with V in place of W, and the
weight and bias cotangents must equal ordinary backpropagation. The feedback state gets an
exactly zero gradient and no optimizer step changes it. Results must agree under jit, vmap
over runs and remat.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from asym_jax import feedback, layers

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# (strides, padding): none, "SAME" (pads (1, 1) and (0, 1) for the 3x2 kernel), right/bottom-only
# padding with stride 2, and uneven strides and pads.
CONV_GEOMETRIES = [
    (1, "VALID"),
    (1, "SAME"),
    (2, ((0, 1), (0, 1))),
    ((2, 1), ((2, 2), (1, 0))),
]
NUM_RUNS = 5
# Float32 tolerance for one op whose sums run in a different order than XLA's convolution.
RTOL = 1e-5


def _rule(name):
    return feedback.get_rule(name, flip_prob=0.25 if name.endswith("_p") else 0.0)


def _assert_close(actual, expected, rtol=RTOL):
    """Compare arrays with an absolute tolerance relative to the largest expected entry."""
    expected = np.asarray(expected)
    atol = rtol * max(float(np.max(np.abs(expected))), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def _assert_trees_close(actual, expected):
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        _assert_close(a, b)


def _feedback_args(rule, kernel, seed=7):
    """Return ``(state, key)`` for ``rule``: the rule's state and a per-step key, or None."""
    state_key, step_key = jax.random.split(jax.random.key(seed))
    state = rule.init_state(state_key, kernel)
    key = step_key if rule.redraws_per_step else None
    return state, key


def _plain_conv(x, kernel, strides, padding):
    if isinstance(strides, int):
        strides = (strides, strides)
    return lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=DIMENSION_NUMBERS
    )


def _random(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


def _op_case(op, strides=None, padding=None, impl=None, use_bias=True):
    """Return ``(asym_fn, plain_fn, x, kernel, bias)`` for one op configuration.

    ``asym_fn(rule, x, kernel, bias, state, key)`` is the op under test and
    ``plain_fn(x, kernel, bias)`` the ordinary op it must match in the forward pass.
    """
    if op == "dense":
        x, kernel = _random(0, (2, 3, 5)), _random(1, (5, 4))
        asym_fn = layers.asym_dense

        def plain_fn(x, kernel, bias):
            y = x @ kernel
            return y if bias is None else y + bias

    else:
        # A non-square kernel and input catch transposed height/width or patch ordering.
        x, kernel = _random(0, (2, 7, 6, 3)), _random(1, (3, 2, 3, 4))

        def asym_fn(rule, x, kernel, bias, state, key):
            return layers.asym_conv(
                rule, x, kernel, bias, state, key, strides=strides, padding=padding, impl=impl
            )

        def plain_fn(x, kernel, bias):
            y = _plain_conv(x, kernel, strides, padding)
            return y if bias is None else y + bias

    bias = _random(2, kernel.shape[-1:]) if use_bias else None
    return asym_fn, plain_fn, x, kernel, bias


OP_CASES = [("dense", None, None, None)] + [
    ("conv", strides, padding, impl)
    for strides, padding in CONV_GEOMETRIES
    for impl in layers.CONV_IMPLS
]


def _case_id(case):
    op, strides, padding, impl = case
    return op if op == "dense" else f"{impl}-s{strides}-{padding}".replace(" ", "")


# Every rule with every op case, except that "lax_patches" shares all rule handling with
# "patches" and is checked with one rule of each kind to keep the suite fast.
LAX_PATCHES_RULES = ("symmetric", "brsf_p", "frsf_p")
VJP_CASES = [
    pytest.param(name, case, id=f"{name}-{_case_id(case)}")
    for name in feedback.RULE_NAMES
    for case in OP_CASES
    if case[3] != "lax_patches" or name in LAX_PATCHES_RULES
]


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name, case", VJP_CASES)
def test_vjp_matches_reference(name, case, use_bias):
    rule = _rule(name)
    asym_fn, plain_fn, x, kernel, bias = _op_case(*case, use_bias=use_bias)
    state, key = _feedback_args(rule, kernel)
    v = rule.matrix(kernel, state, key)

    y, vjp_fn = jax.vjp(lambda x, k, b: asym_fn(rule, x, k, b, state, key), x, kernel, bias)
    dy = _random(3, y.shape)
    dx, dkernel, dbias = vjp_fn(dy)
    y_plain, plain_vjp_fn = jax.vjp(plain_fn, x, kernel, bias)
    _, dkernel_plain, dbias_plain = plain_vjp_fn(dy)
    _, v_vjp_fn = jax.vjp(lambda x: plain_fn(x, v, bias), x)
    (dx_reference,) = v_vjp_fn(dy)

    _assert_close(y, y_plain)
    _assert_close(dx, dx_reference)
    _assert_close(dkernel, dkernel_plain)
    if use_bias:
        _assert_close(dbias, dbias_plain)
    else:
        assert dbias is None


@pytest.mark.parametrize("case", OP_CASES, ids=_case_id)
def test_symmetric_equals_jax_grad(case):
    rule = feedback.get_rule("symmetric")
    asym_fn, plain_fn, x, kernel, bias = _op_case(*case)

    def loss(fn, x, kernel, bias):
        return jnp.sum(jnp.sin(fn(x, kernel, bias)))

    grads = jax.grad(loss, argnums=(1, 2, 3))(
        lambda x, k, b: asym_fn(rule, x, k, b, None, None), x, kernel, bias
    )
    expected = jax.grad(loss, argnums=(1, 2, 3))(plain_fn, x, kernel, bias)
    for actual, wanted in zip(grads, expected, strict=True):
        _assert_close(actual, wanted)


@pytest.mark.parametrize("name", ["frsf", "frsf_p", "rndf"])
@pytest.mark.parametrize("case", [OP_CASES[0], OP_CASES[1], OP_CASES[2]], ids=_case_id)
def test_state_gradient_is_zero(name, case):
    rule = _rule(name)
    asym_fn, _, x, kernel, bias = _op_case(*case)
    state, _ = _feedback_args(rule, kernel)

    def loss(state):
        return jnp.sum(asym_fn(rule, x, kernel, bias, state, None) ** 2)

    dstate = jax.grad(loss)(state)
    assert dstate.shape == state.shape
    assert not np.any(np.asarray(dstate))


def test_key_cotangent_is_zero():
    rule = _rule("brsf")
    x, kernel = _random(0, (3, 5)), _random(1, (5, 4))
    raw_key = jax.random.PRNGKey(0)
    _, vjp_fn = jax.vjp(lambda k: layers.asym_dense(rule, x, kernel, None, None, k), raw_key)
    (dkey,) = vjp_fn(jnp.ones((3, 4)))
    assert dkey.dtype == jax.dtypes.float0


class _TwoLayerNet(nn.Module):
    """Conv -> ReLU -> dense, so the conv gradient depends on the dense layer's V."""

    rule: feedback.FeedbackRule
    impl: str = "patches"

    @nn.compact
    def __call__(self, x):
        x = layers.AsymConv(
            4, (3, 2), strides=2, padding=((0, 1), (0, 1)), rule=self.rule, impl=self.impl
        )(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        return layers.AsymDense(3, rule=self.rule)(x)


class _PlainNet(nn.Module):
    """``_TwoLayerNet`` with flax's own layers and the same parameter names."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 2), strides=2, padding=((0, 1), (0, 1)), name="AsymConv_0")(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        return nn.Dense(3, name="AsymDense_0")(x)


NET_INPUT_SHAPE = (4, 8, 7, 3)


def _net_setup(name, impl="patches", seed=0):
    rule = _rule(name)
    net = _TwoLayerNet(rule, impl)
    x = _random(10, NET_INPUT_SHAPE)
    rngs = {"params": jax.random.key(seed), "feedback": jax.random.key(seed + 100)}
    variables = net.init(rngs, x)
    return net, variables, x


def _net_loss(net, params, variables, x, feedback_key):
    rngs = None if feedback_key is None else {"feedback": feedback_key}
    logits = net.apply({**variables, "params": params}, x, rngs=rngs)
    labels = jnp.arange(x.shape[0]) % logits.shape[-1]
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def _grads_fn(model, variables, x, key):
    return jax.grad(_net_loss, argnums=1)(model, variables["params"], variables, x, key)


_jitted_grads = jax.jit(_grads_fn, static_argnums=0)


@pytest.mark.parametrize("impl", layers.CONV_IMPLS)
def test_symmetric_net_equals_flax_layers(impl):
    net, variables, x = _net_setup("symmetric", impl)
    plain_loss = _net_loss(_PlainNet(), variables["params"], variables, x, None)
    _assert_close(_net_loss(net, variables["params"], variables, x, None), plain_loss)
    _assert_trees_close(
        _jitted_grads(net, variables, x, None), _jitted_grads(_PlainNet(), variables, x, None)
    )


@pytest.mark.parametrize("name", [n for n in feedback.RULE_NAMES if n != "symmetric"])
def test_hidden_gradients_differ_from_backprop(name):
    net, variables, x = _net_setup(name)
    key = jax.random.key(5)
    grads = _jitted_grads(net, variables, x, key)
    plain_grads = _jitted_grads(_TwoLayerNet(_rule("symmetric")), variables, x, None)

    hidden, plain_hidden = grads["AsymConv_0"]["kernel"], plain_grads["AsymConv_0"]["kernel"]
    assert np.all(np.isfinite(hidden))
    assert float(jnp.max(jnp.abs(hidden))) > 0
    assert float(jnp.max(jnp.abs(hidden - plain_hidden))) > 1e-3 * float(
        jnp.max(jnp.abs(plain_hidden))
    )
    # The top layer's gradient needs no feedback matrix, so it is backprop's.
    _assert_close(grads["AsymDense_0"]["kernel"], plain_grads["AsymDense_0"]["kernel"])


@pytest.mark.parametrize("name", ["frsf", "frsf_p", "rndf"])
def test_training_never_changes_feedback(name):
    net, variables, x = _net_setup(name)
    tx = optax.adamw(1e-2, weight_decay=0.5)
    opt_state = tx.init(variables["params"])

    def loss(params, feedback_state, key):
        logits, new_state = net.apply(
            {"params": params, "feedback": feedback_state},
            x,
            rngs={"feedback": key},
            mutable=["feedback"],
        )
        labels = jnp.arange(x.shape[0]) % logits.shape[-1]
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels)), new_state

    @jax.jit
    def step(variables, opt_state, key):
        (grads, feedback_grads), new_state = jax.grad(loss, argnums=(0, 1), has_aux=True)(
            variables["params"], variables["feedback"], key
        )
        updates, opt_state = tx.update(grads, opt_state, variables["params"])
        params = optax.apply_updates(variables["params"], updates)
        return {"params": params, **new_state}, opt_state, feedback_grads

    trained = variables
    for i in range(3):
        trained, opt_state, feedback_grads = step(trained, opt_state, jax.random.key(i))
        for grad in jax.tree.leaves(feedback_grads):
            assert not np.any(np.asarray(grad))

    for before, after in zip(
        jax.tree.leaves(variables["params"]), jax.tree.leaves(trained["params"]), strict=True
    ):
        assert float(jnp.max(jnp.abs(before - after))) > 0
    for before, after in zip(
        jax.tree.leaves(variables["feedback"]), jax.tree.leaves(trained["feedback"]), strict=True
    ):
        np.testing.assert_array_equal(before, after)


def test_brsf_gradient_changes_every_step():
    net, variables, x = _net_setup("brsf")
    grads1 = _jitted_grads(net, variables, x, jax.random.key(1))["AsymConv_0"]["kernel"]
    grads2 = _jitted_grads(net, variables, x, jax.random.key(2))["AsymConv_0"]["kernel"]
    grads1_again = _jitted_grads(net, variables, x, jax.random.key(1))["AsymConv_0"]["kernel"]
    assert float(jnp.max(jnp.abs(grads1 - grads2))) > 1e-3 * float(jnp.max(jnp.abs(grads1)))
    np.testing.assert_array_equal(grads1, grads1_again)


@pytest.mark.parametrize("name", ["frsf", "rndf"])
def test_fixed_rule_gradient_ignores_key(name):
    net, variables, x = _net_setup(name)
    grads1 = _jitted_grads(net, variables, x, jax.random.key(1))
    grads2 = _jitted_grads(net, variables, x, jax.random.key(2))
    for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads2), strict=True):
        np.testing.assert_array_equal(a, b)


def _remat_net(rule, impl):
    """``_TwoLayerNet`` with both layers under ``nn.remat``, sharing its parameter names."""

    class RematNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            conv = nn.remat(layers.AsymConv)
            x = conv(4, (3, 2), 2, ((0, 1), (0, 1)), rule, impl=impl, name="AsymConv_0")(x)
            x = nn.relu(x).reshape(x.shape[0], -1)
            return nn.remat(layers.AsymDense)(3, rule, name="AsymDense_0")(x)

    return RematNet()


# One rule of each kind: V from W only (nusf), a per-step key (brsf_p), a fixed state that
# multiplies sign(W) (frsf_p) and a fixed state that replaces W (rndf).
TRANSFORM_CASES = [
    ("nusf", "patches"),
    ("brsf_p", "patches"),
    ("frsf_p", "patches"),
    ("rndf", "patches"),
    ("brsf_p", "xla"),
    ("frsf_p", "xla"),
    ("brsf_p", "lax_patches"),
    ("brsf_p", "xla_per_run"),
    ("rndf", "xla_per_run"),
]


@pytest.mark.parametrize("name, impl", TRANSFORM_CASES)
def test_jit_vmap_remat_agree(name, impl):
    net, _, x = _net_setup(name, impl)
    remat_net = _remat_net(net.rule, impl)
    init_keys = jax.random.split(jax.random.key(0), NUM_RUNS)
    step_keys = jax.random.split(jax.random.key(1), NUM_RUNS)
    runs = jax.vmap(lambda k: net.init({"params": k, "feedback": k}, x))(init_keys)

    @jax.jit
    def batched_grads(runs, keys):
        # The input x is shared by all runs: only parameters, state and keys have a run axis.
        plain = jax.vmap(lambda v, k: _grads_fn(net, v, x, k))(runs, keys)
        remat = jax.vmap(lambda v, k: _grads_fn(remat_net, v, x, k))(runs, keys)
        return plain, remat

    @jax.jit
    def single_run_grads(variables, key):
        loss = jax.checkpoint(lambda p, v, k: _net_loss(net, p, v, x, k))
        checkpointed = jax.grad(loss)(variables["params"], variables, key)
        return _grads_fn(net, variables, x, key), checkpointed

    vmapped, vmapped_remat = batched_grads(runs, step_keys)
    for i in range(NUM_RUNS):
        expected, checkpointed = single_run_grads(
            jax.tree.map(lambda a, i=i: a[i], runs), step_keys[i]
        )
        _assert_trees_close(checkpointed, expected)
        _assert_trees_close(jax.tree.map(lambda a, i=i: a[i], vmapped), expected)
        _assert_trees_close(jax.tree.map(lambda a, i=i: a[i], vmapped_remat), expected)


@pytest.mark.parametrize("name", ["brsf", "frsf"])
def test_jit_matches_eager(name):
    net, variables, x = _net_setup(name)
    key = jax.random.key(3)
    jitted = jax.jit(lambda v, k: _grads_fn(net, v, x, k))(variables, key)
    _assert_trees_close(_grads_fn(net, variables, x, key), jitted)


def _equations(jaxpr, primitive_name):
    """Return the equations of ``primitive_name`` in ``jaxpr`` and its sub-jaxprs."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive_name:
            found.append(eqn)
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                found.extend(_equations(inner, primitive_name))
    return found


def _conv_group_counts(jaxpr):
    """Return the ``(feature_group_count, batch_group_count)`` of every convolution."""
    return [
        (eqn.params["feature_group_count"], eqn.params["batch_group_count"])
        for eqn in _equations(jaxpr, "conv_general_dilated")
    ]


def _num_batched_matmuls(jaxpr):
    """Return the number of ``dot_general`` equations with batch dimensions."""
    return sum(
        1 for eqn in _equations(jaxpr, "dot_general") if eqn.params["dimension_numbers"][1][0]
    )


def _vmapped_conv_vjp_jaxpr(impl, batched_input, strides=2, padding=((0, 1), (0, 1))):
    """Return the jaxpr of the VJP of one conv vmapped over runs (kernel, bias and key)."""
    rule = _rule("brsf")
    x = _random(0, (NUM_RUNS, 2, 7, 6, 3) if batched_input else (2, 7, 6, 3))
    kernels = _random(1, (NUM_RUNS, 3, 2, 3, 4))
    biases = _random(2, (NUM_RUNS, 4))
    keys = jax.random.split(jax.random.key(0), NUM_RUNS)

    def vjp(x, kernel, bias, key):
        def conv(x, kernel, bias):
            return layers.asym_conv(
                rule, x, kernel, bias, None, key, strides=strides, padding=padding, impl=impl
            )

        y, vjp_fn = jax.vjp(conv, x, kernel, bias)
        return vjp_fn(y)

    in_axes = (0 if batched_input else None, 0, 0, 0)
    return jax.make_jaxpr(jax.vmap(vjp, in_axes=in_axes))(x, kernels, biases, keys).jaxpr


@pytest.mark.parametrize("batched_input", [True, False], ids=["batched_x", "shared_x"])
def test_vmapped_patches_has_no_run_grouped_conv(batched_input):
    # 3 input channels and 5 runs: a group count divisible by 5 means grouping over the runs.
    for impl, expect_grouped in (("patches", False), ("lax_patches", False), ("xla", True)):
        jaxpr = _vmapped_conv_vjp_jaxpr(impl, batched_input)
        counts = _conv_group_counts(jaxpr)
        grouped = [c for c in counts if any(g % NUM_RUNS == 0 for g in c)]
        assert bool(grouped) == expect_grouped, (impl, counts)
        if impl != "xla":
            assert _num_batched_matmuls(jaxpr) >= 1, impl
    # The sliced patches need no convolution at all.
    assert not _conv_group_counts(_vmapped_conv_vjp_jaxpr("patches", batched_input))


@pytest.mark.parametrize("batched_input", [True, False], ids=["batched_x", "shared_x"])
@pytest.mark.parametrize("strides", [1, 2])
def test_vmapped_xla_per_run_runs_one_conv_per_run(batched_input, strides):
    jaxpr = _vmapped_conv_vjp_jaxpr("xla_per_run", batched_input, strides, "SAME")
    counts = _conv_group_counts(jaxpr)
    assert all(c == (1, 1) for c in counts), counts
    # With stride 2 the transposed convolution for dx would do 4 times the work of dy V^T,
    # so dx is that batched matrix product (and col2im) instead.
    dx_convs = NUM_RUNS if strides == 1 else 0
    # With a shared input, the forward pass and dW are one convolution each over the runs'
    # kernels side by side.
    other_convs = 2 * NUM_RUNS if batched_input else 2
    assert len(counts) == dx_convs + other_convs, counts
    assert (_num_batched_matmuls(jaxpr) >= 1) == (strides == 2)


def test_dense_module_matches_flax_dense():
    x = _random(0, (3, 2, 5))
    init = nn.initializers.normal(0.3)
    module = layers.AsymDense(4, rule="usf", kernel_init=init, bias_init=init)
    variables = module.init(jax.random.key(0), x)
    reference = nn.Dense(4, kernel_init=init, bias_init=init)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
        jnp.shape, reference.init(jax.random.key(0), x)
    )
    _assert_close(module.apply(variables, x), reference.apply(variables, x))
    assert float(jnp.max(jnp.abs(variables["params"]["bias"]))) > 0


@pytest.mark.parametrize("impl", layers.CONV_IMPLS)
@pytest.mark.parametrize("strides, padding", CONV_GEOMETRIES)
def test_conv_module_matches_flax_conv(impl, strides, padding):
    x = _random(0, (2, 9, 8, 3))
    module = layers.AsymConv(5, (3, 2), strides, padding, rule="nusf", impl=impl)
    variables = module.init(jax.random.key(0), x)
    reference = nn.Conv(5, (3, 2), strides, padding)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
        jnp.shape, reference.init(jax.random.key(0), x)
    )
    _assert_close(module.apply(variables, x), reference.apply(variables, x))


def test_conv_module_accepts_unbatched_input():
    module = layers.AsymConv(2, 3, padding="SAME")
    x = _random(0, (5, 5, 3))
    variables = module.init(jax.random.key(0), x)
    batched = module.apply(variables, x[None])
    _assert_close(module.apply(variables, x), batched[0])


def test_module_custom_initializers():
    module = layers.AsymConv(
        2,
        3,
        use_bias=True,
        kernel_init=nn.initializers.constant(0.25),
        bias_init=nn.initializers.constant(-1.5),
    )
    params = module.init(jax.random.key(0), jnp.ones((1, 4, 4, 2)))["params"]
    np.testing.assert_array_equal(params["kernel"], jnp.full((3, 3, 2, 2), 0.25))
    np.testing.assert_array_equal(params["bias"], jnp.full((2,), -1.5))


@pytest.mark.parametrize("name", feedback.RULE_NAMES)
def test_module_collections(name):
    rule = _rule(name)
    module = layers.AsymDense(3, rule=rule, use_bias=False)
    variables = module.init(
        {"params": jax.random.key(0), "feedback": jax.random.key(1)}, jnp.ones((2, 4))
    )
    assert set(variables["params"]) == {"kernel"}
    if rule.has_state:
        assert set(variables) == {"params", "feedback"}
        assert variables["feedback"]["state"].shape == (4, 3)
    else:
        assert set(variables) == {"params"}


def test_module_state_drawn_from_feedback_stream():
    module = layers.AsymDense(3, rule="rndf")
    x = jnp.ones((2, 4))
    a = module.init({"params": jax.random.key(0), "feedback": jax.random.key(1)}, x)
    b = module.init({"params": jax.random.key(0), "feedback": jax.random.key(2)}, x)
    np.testing.assert_array_equal(a["params"]["kernel"], b["params"]["kernel"])
    assert float(jnp.max(jnp.abs(a["feedback"]["state"] - b["feedback"]["state"]))) > 0


def test_module_evaluation_needs_no_feedback_key():
    net, variables, x = _net_setup("brsf")
    logits = net.apply(variables, x)
    assert logits.shape == (NET_INPUT_SHAPE[0], 3)
    with pytest.raises(ValueError, match="PRNG key"):
        _grads_fn(net, variables, x, None)


def test_jitted_step_compiles_once():
    net, variables, x = _net_setup("brsf_p")
    traces = []

    @jax.jit
    def grads(variables, key):
        traces.append(1)
        return _grads_fn(net, variables, x, key)

    for i in range(3):
        grads(variables, jax.random.key(i))
    assert len(traces) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(impl="cudnn"), "'cudnn'.*patches, lax_patches, xla"),
        (dict(padding="FULL"), "'FULL'.*VALID"),
        (dict(padding=((1, 1), (1,))), "Invalid padding"),
        (dict(strides=(1, 2, 3)), "strides.*pair"),
        (dict(strides=0), "strides >= 1.*0"),
        (dict(padding=((0, -1), (0, 0))), "padding must be >= 0.*-1"),
        (dict(padding=((0, 0), (0, 0)), strides=1, kernel_hw=(6, 3)), "6x3 kernel.*5x5"),
    ],
)
def test_asym_conv_rejects_invalid(kwargs, message):
    kernel_hw = kwargs.pop("kernel_hw", (3, 3))
    x, kernel = jnp.ones((1, 5, 5, 2)), jnp.ones((*kernel_hw, 2, 4))
    with pytest.raises(ValueError, match=message):
        layers.asym_conv(_rule("usf"), x, kernel, None, None, None, **kwargs)


def test_dtype_mismatch_raises():
    x, kernel = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4), jnp.bfloat16)
    with pytest.raises(ValueError, match="one dtype.*float32.*bfloat16"):
        layers.asym_conv(_rule("usf"), x, kernel, None, None, None)
    with pytest.raises(ValueError, match="one dtype.*float32.*bfloat16"):
        layers.asym_dense(_rule("usf"), x[0, 0], kernel[0, 0], None, None, None)


def test_module_promotes_dtypes():
    module = layers.AsymDense(3, param_dtype=jnp.bfloat16)
    x = jnp.ones((2, 4), jnp.float32)
    y = module.apply(module.init(jax.random.key(0), x), x)
    assert y.dtype == jnp.float32


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="kernel"):
        layers.asym_dense(_rule("usf"), jnp.ones((2, 3)), jnp.ones((4, 5)), None, None, None)
    with pytest.raises(ValueError, match="channels"):
        layers.asym_conv(
            _rule("usf"), jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 3, 4)), None, None, None
        )
    with pytest.raises(ValueError, match="bias"):
        layers.asym_dense(_rule("usf"), jnp.ones((2, 3)), jnp.ones((3, 5)), jnp.ones(4), None, None)
