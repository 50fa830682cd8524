"""Tests for the paper's five networks, their pooling, batch normalization and clamp masks.

Checked properties, for the networks of Liao, Leibo & Poggio (AAAI 2016), Table 1:

* every architecture has the paper's layer sizes (parameter counts and spatial sizes);
* with the symmetric rule, gradients equal those of the same network built from plain flax
  layers;
* the fast pooling agrees with ``lax.reduce_window`` in value, and in gradient wherever no
  window has tied maxima;
* BN has a learnable scale and shift only in the affine mode and updates its running
  averages only in train mode;
* the clamp masks freeze exactly the layers of Experiment C2;
* every architecture trains under every feedback rule and BN mode, also vmapped over runs.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from asym_jax import feedback, models, optimizers

# Class counts as in the paper, except that five classes keep the general network's last two
# dense layers small.
TEST_CLASSES = {"general": 5, "mnist": 10, "cifar": 10, "svhn": 10, "timit": 80}
BATCH = 4


def _rule(name):
    return feedback.get_rule(name, flip_prob=0.25 if name.endswith("_p") else 0.0)


def _model(architecture, rule="symmetric", num_classes=None, **kwargs):
    if num_classes is None:
        num_classes = TEST_CLASSES[architecture]
    return models.create_model(
        architecture,
        num_classes=num_classes,
        rule=_rule(rule) if isinstance(rule, str) else rule,
        **kwargs,
    )


def _inputs(model, batch=BATCH, seed=0):
    shape = (batch, *model.architecture.input_shape)
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _labels(model, batch=BATCH):
    return jnp.arange(batch) % model.architecture.layers[-1].features


def _init(model, x, params_seed=0, feedback_seed=1):
    rngs = {"params": jax.random.key(params_seed), "feedback": jax.random.key(feedback_seed)}
    return _jitted_init(model, rngs, x)


@functools.partial(jax.jit, static_argnums=0)
def _jitted_init(model, rngs, x):
    return model.init(rngs, x, train=False)


def _init_shapes(model, x):
    rngs = {"params": jax.random.key(0), "feedback": jax.random.key(1)}
    return jax.eval_shape(lambda x: model.init(rngs, x, train=False), x)


def _assert_close(actual, expected, rtol):
    """Compare arrays with an absolute tolerance relative to the largest expected entry."""
    expected = np.asarray(expected)
    atol = rtol * max(float(np.max(np.abs(expected))), 1e-30)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol)


# Architectures: sizes.

# Expected parameter counts without BN, derived from Table 1 (weights + biases per layer).
EXPECTED_PARAMS = {
    # conv1 5*5*1*20+20 = 520; conv2 5*5*20*50+50 = 25,050; 28 -> 24 -> 12 -> 8 -> 4, so
    # fc1 has 4*4*50 = 800 inputs: 800*500+500 = 400,500; output 500*10+10 = 5,010.
    ("mnist", 10): 520 + 25_050 + 400_500 + 5_010,
    # conv1 5*5*3*32+32 = 2,432; conv2 5*5*32*64+64 = 51,264; conv3 5*5*64*64+64 = 102,464;
    # fc1 has 4*4*64 = 1,024 inputs: 1,024*128+128 = 131,200; output 128*10+10 = 1,290.
    ("cifar", 10): 2_432 + 51_264 + 102_464 + 131_200 + 1_290,
    # The same with output 128*100+100 = 12,900.
    ("cifar", 100): 2_432 + 51_264 + 102_464 + 131_200 + 12_900,
    # conv1 5*5*3*20+20 = 1,520; conv2 7*7*20*512+512 = 502,272; 32 -> 28 -> 14 -> 8 -> 4,
    # so fc1 has 4*4*512 = 8,192 inputs: 8,192*40+40 = 327,720; output 40*10+10 = 410.
    ("svhn", 10): 1_520 + 502_272 + 327_720 + 410,
    # fc1 1,845*512+512 = 945,152; fc2 512*256+256 = 131,328; output 256*80+80 = 20,560.
    ("timit", 80): 945_152 + 131_328 + 20_560,
    # conv1 9*9*3*48+48 = 11,712; conv2 5*5*48*128+128 = 153,728; fc1 has 12*12*128 =
    # 18,432 inputs. 10 classes: fc1 max(256, 30) = 256 units: 18,432*256+256 = 4,718,848;
    # fc2 20 units: 256*20+20 = 5,140; output 20*10+10 = 210.
    ("general", 10): 11_712 + 153_728 + 4_718_848 + 5_140 + 210,
    # 102 classes: fc1 max(256, 306) = 306 units: 18,432*306+306 = 5,640,498; fc2 204 units:
    # 306*204+204 = 62,628; output 204*102+102 = 20,910.
    ("general", 102): 11_712 + 153_728 + 5_640_498 + 62_628 + 20_910,
}


@pytest.mark.parametrize("architecture,num_classes", sorted(EXPECTED_PARAMS))
def test_parameter_count_and_logits_shape(architecture, num_classes):
    model = _model(architecture, num_classes=num_classes)
    x = jax.ShapeDtypeStruct((BATCH, *model.architecture.input_shape), jnp.float32)
    variables = _init_shapes(model, x)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)

    assert (
        models.count_parameters(variables["params"]) == EXPECTED_PARAMS[(architecture, num_classes)]
    )
    assert logits.shape == (BATCH, num_classes)
    assert logits.dtype == jnp.float32


def test_registry_covers_all_architectures():
    assert set(models.ARCHITECTURES) == {"general", "mnist", "cifar", "svhn", "timit"}
    for name, constructor in models.ARCHITECTURES.items():
        spec = constructor(10)
        assert spec.name == name
        assert spec.layers[-1] == models.Dense(models.OUTPUT_LAYER, 10)


def test_bn_modes_change_parameter_count():
    # MNIST hidden units: conv1 20 + conv2 50 + fc1 500 = 570. "plain" drops their biases;
    # "affine" drops them and adds a scale and a shift per unit.
    counts = {}
    for bn_mode in models.BN_MODES:
        model = _model("mnist", bn_mode=bn_mode)
        variables = _init_shapes(model, _inputs(model))
        counts[bn_mode] = models.count_parameters(variables["params"])
    assert counts["none"] == EXPECTED_PARAMS[("mnist", 10)]
    assert counts["plain"] == counts["none"] - 570
    assert counts["affine"] == counts["none"] + 570


def _layer_output_shapes(model):
    x = jax.ShapeDtypeStruct((BATCH, *model.architecture.input_shape), jnp.float32)
    variables = _init_shapes(model, x)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]), variables, x
    )
    return {name: value[0].shape for name, value in state["intermediates"].items()}


def test_cifar_spatial_sizes():
    shapes = _layer_output_shapes(_model("cifar"))
    assert shapes["conv1_out"] == (BATCH, 32, 32, 32)
    assert shapes["pool1_out"] == (BATCH, 16, 16, 32)
    assert shapes["conv2_out"] == (BATCH, 16, 16, 64)
    assert shapes["pool2_out"] == (BATCH, 8, 8, 64)
    assert shapes["conv3_out"] == (BATCH, 8, 8, 64)
    assert shapes["pool3_out"] == (BATCH, 4, 4, 64)
    assert shapes["fc1_out"] == (BATCH, 128)


def test_general_spatial_sizes():
    shapes = _layer_output_shapes(_model("general", num_classes=10))
    assert shapes["conv1_out"] == (BATCH, 56, 56, 48)
    assert shapes["pool1_out"] == (BATCH, 28, 28, 48)
    assert shapes["conv2_out"] == (BATCH, 24, 24, 128)
    assert shapes["pool2_out"] == (BATCH, 12, 12, 128)
    assert shapes["fc1_out"] == (BATCH, 256)
    assert shapes["fc2_out"] == (BATCH, 20)


def test_general_hidden_sizes_follow_classes():
    spec = models.get_architecture("general", 102)
    dense = {layer.name: layer.features for layer in spec.layers if isinstance(layer, models.Dense)}
    assert dense == {"fc1": 306, "fc2": 204, "output": 102}


# Pooling.

POOL_CASES = [
    # (kind, window, stride, padding, input height/width)
    ("max", 2, 2, ((0, 0), (0, 0)), 24),
    ("max", 2, 2, ((0, 0), (0, 0)), 7),  # odd size: the last row and column are dropped
    ("max", 3, 2, ((0, 1), (0, 1)), 32),
    ("max", 3, 2, ((0, 1), (0, 1)), 9),
    ("avg", 3, 2, ((0, 1), (0, 1)), 16),
    ("avg", 3, 2, ((0, 1), (0, 1)), 9),
    ("avg", 2, 2, ((0, 0), (0, 0)), 8),
]


def _pool(kind, impl, window, stride, padding, **kwargs):
    fn = models.max_pool if kind == "max" else models.avg_pool
    return jax.jit(lambda x: fn(x, window, stride, padding, impl=impl, **kwargs))


def _distinct_values(shape, seed=0):
    # A permutation of distinct values, so no pooling window has tied maxima.
    values = jax.random.permutation(jax.random.key(seed), np.prod(shape)).astype(jnp.float32)
    return (values / np.prod(shape) - 0.5).reshape(shape)


@pytest.mark.parametrize("kind,window,stride,padding,size", POOL_CASES)
def test_pool_matches_reduce_window(kind, window, stride, padding, size):
    x = _distinct_values((2, size, size, 3))
    cotangent = jax.random.normal(
        jax.random.key(1), _pool(kind, "slices", window, stride, padding)(x).shape
    )
    fast = _pool(kind, "slices", window, stride, padding)
    reference = _pool(kind, "reduce_window", window, stride, padding)

    y_fast, x_bar_fast = jax.jit(_value_and_vjp, static_argnums=0)(fast, x, cotangent)
    y_reference, x_bar_reference = jax.jit(_value_and_vjp, static_argnums=0)(
        reference, x, cotangent
    )
    np.testing.assert_allclose(y_fast, y_reference, rtol=1e-6, atol=1e-7)
    _assert_close(x_bar_fast, x_bar_reference, rtol=1e-6)


def _value_and_vjp(fn, x, cotangent):
    y, vjp = jax.vjp(fn, x)
    return y, vjp(cotangent)[0]


def _grad_of_sum(fn, x):
    return jax.jit(jax.grad(lambda x: fn(x).sum()))(x)


def test_max_pool_splits_tied_gradient():
    # One 3x3/2 window over a 2x2 input padded at the bottom/right: the four real cells tie.
    x = jnp.ones((1, 2, 2, 1))
    padding = ((0, 1), (0, 1))

    fast = _grad_of_sum(lambda x: models.max_pool(x, 3, 2, padding), x)
    reference = _grad_of_sum(lambda x: models.max_pool(x, 3, 2, padding, "reduce_window"), x)
    reshape = _grad_of_sum(lambda x: models.max_pool(x, 2, 2), x)

    np.testing.assert_array_equal(fast.ravel(), [0.25, 0.25, 0.25, 0.25])
    np.testing.assert_array_equal(reshape.ravel(), [0.25, 0.25, 0.25, 0.25])
    assert float(reference.sum()) == 1.0
    assert int(jnp.count_nonzero(reference)) == 1


def test_max_pool_partial_tie_gradient():
    # Windows of the 3x3/2 pool on a 4x4 input overlap in row and column 2.
    x = jnp.array(
        [[5.0, 1.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]]
    ).reshape(1, 4, 4, 1)
    padding = ((0, 1), (0, 1))
    y = models.max_pool(x, 3, 2, padding)
    grad = _grad_of_sum(lambda x: models.max_pool(x, 3, 2, padding), x)[0, :, :, 0]

    np.testing.assert_array_equal(y[0, :, :, 0], [[5.0, 5.0], [2.0, 9.0]])
    # Window (0, 0) ties at (0, 0) and (0, 2); window (0, 1) has (0, 2) alone.
    assert float(grad[0, 0]) == 0.5
    assert float(grad[0, 2]) == 1.5
    assert float(grad[2, 0]) == 1.0
    assert float(grad[3, 3]) == 1.0
    assert float(grad.sum()) == 4.0


def test_max_pool_padding_never_wins():
    x = _distinct_values((1, 4, 4, 1)) - 2.0
    y = models.max_pool(x, 3, 2, ((0, 1), (0, 1)))
    assert float(jnp.max(y)) < -1.0


def test_max_pool_forward_mode_matches_reverse():
    # <J t, u> == <t, J^T u> for the custom JVP and its automatic transpose.
    x = _distinct_values((2, 9, 9, 2))
    padding = ((0, 1), (0, 1))
    pool = lambda x: models.max_pool(x, 3, 2, padding)  # noqa: E731
    tangent = jax.random.normal(jax.random.key(2), x.shape)
    cotangent = jax.random.normal(jax.random.key(3), pool(x).shape)

    y_dot = jax.jit(lambda x, t: jax.jvp(pool, (x,), (t,))[1])(x, tangent)
    _, x_bar = jax.jit(_value_and_vjp, static_argnums=0)(pool, x, cotangent)
    np.testing.assert_allclose(jnp.vdot(y_dot, cotangent), jnp.vdot(tangent, x_bar), rtol=1e-5)


def test_avg_pool_padding_denominator():
    x = jnp.ones((1, 32, 32, 1))
    padding = ((0, 1), (0, 1))
    excluded = models.avg_pool(x, 3, 2, padding)[0, :, :, 0]
    counted = models.avg_pool(x, 3, 2, padding, count_padding=True)[0, :, :, 0]

    np.testing.assert_allclose(excluded, np.ones((16, 16)), rtol=1e-6)
    # The last row and column of windows cover 2 input rows (columns) and the padding.
    np.testing.assert_allclose(counted[:15, :15], np.ones((15, 15)), rtol=1e-6)
    np.testing.assert_allclose(counted[15, :15], np.full(15, 6 / 9), rtol=1e-6)
    np.testing.assert_allclose(counted[:15, 15], np.full(15, 6 / 9), rtol=1e-6)
    np.testing.assert_allclose(counted[15, 15], 4 / 9, rtol=1e-6)


def test_pool_rejects_unknown_impl():
    with pytest.raises(ValueError, match="'fast'.*slices, reduce_window"):
        models.max_pool(jnp.ones((1, 4, 4, 1)), 2, 2, impl="fast")
    with pytest.raises(ValueError, match="'fast'.*slices, reduce_window"):
        models.avg_pool(jnp.ones((1, 4, 4, 1)), 2, 2, impl="fast")


# Symmetric rule against plain flax layers.


class PlainNetwork(nn.Module):
    """The same network from nn.Conv, nn.Dense, nn.BatchNorm and lax.reduce_window pooling."""

    architecture: models.Architecture
    bn_mode: str = "none"

    @nn.compact
    def __call__(self, x, *, train):
        use_bias = self.bn_mode == "none"
        for layer in self.architecture.layers:
            if isinstance(layer, models.Pool):
                x = self._pool(layer, x)
                continue
            if isinstance(layer, models.Conv):
                x = nn.Conv(
                    layer.features,
                    (layer.size, layer.size),
                    strides=layer.stride,
                    padding=layer.padding,
                    use_bias=use_bias,
                    name=layer.name,
                )(x)
            else:
                x = x.reshape(x.shape[0], -1)
                is_output = layer.name == models.OUTPUT_LAYER
                x = nn.Dense(layer.features, use_bias=use_bias or is_output, name=layer.name)(x)
                if is_output:
                    return x
            if self.bn_mode != "none":
                affine = self.bn_mode == "affine"
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=0.9,
                    epsilon=1e-5,
                    use_fast_variance=False,
                    use_scale=affine,
                    use_bias=affine,
                    name=layer.name + "_bn",
                )(x)
            x = nn.relu(x)
        raise AssertionError("the architecture has no output layer")

    def _pool(self, layer, x):
        window, strides = (1, layer.size, layer.size, 1), (1, layer.stride, layer.stride, 1)
        padding = ((0, 0), *layer.padding, (0, 0))
        if layer.kind == "max":
            return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, padding)
        total = lax.reduce_window(x, 0.0, lax.add, window, strides, padding)
        cells = lax.reduce_window(jnp.ones_like(x), 0.0, lax.add, window, strides, padding)
        return total / cells


def _summed_loss(model, variables, x, labels, **apply_kwargs):
    def loss(params, x):
        logits, _ = model.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"], **apply_kwargs
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()

    return loss


@pytest.mark.parametrize(
    "architecture,bn_mode,conv_impl",
    [("mnist", "none", "patches"), ("cifar", "affine", "xla")],
)
def test_symmetric_gradients_match_plain_flax(architecture, bn_mode, conv_impl):
    model = _model(architecture, bn_mode=bn_mode, init="he", conv_impl=conv_impl)
    x = _inputs(model)
    labels = _labels(model)
    variables = _init(model, x)
    reference = PlainNetwork(model.architecture, bn_mode=bn_mode)

    loss = _summed_loss(model, variables, x, labels)
    reference_loss = _summed_loss(reference, variables, x, labels)
    value, (grads, x_grad) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(
        variables["params"], x
    )
    ref_value, (ref_grads, ref_x_grad) = jax.jit(jax.value_and_grad(reference_loss, (0, 1)))(
        variables["params"], x
    )

    # Several float32 ops whose sums run in a different order than XLA's convolution.
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        ref_grad = ref_grads
        for key in path:
            ref_grad = ref_grad[key.key]
        _assert_close(grad, ref_grad, rtol=2e-5)
    _assert_close(x_grad, ref_x_grad, rtol=2e-5)


@pytest.mark.parametrize(
    "architecture,bn_mode,rule",
    [("mnist", "plain", "usf"), ("mnist", "none", "frsf"), ("cifar", "plain", "symmetric")],
)
def test_pool_first_keeps_values_and_gradients(architecture, bn_mode, rule):
    early = _model(architecture, rule=rule, bn_mode=bn_mode, init="he")
    late = _model(architecture, rule=rule, bn_mode=bn_mode, init="he", pool_first=False)
    x = _inputs(early, batch=6)
    labels = _labels(early, batch=6)
    variables = _init(early, x)

    def value_and_grads(model):
        def loss(params, x):
            logits, updates = model.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
            return loss, updates

        grad_fn = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
        return jax.jit(grad_fn)(variables["params"], x)

    (value, updates), grads = value_and_grads(early)
    (ref_value, ref_updates), ref_grads = value_and_grads(late)
    # The BN sums run over the pooled cells instead of the whole map, in another order.
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        _assert_close(got, expected, rtol=1e-5)
    for got, expected in zip(jax.tree.leaves(updates), jax.tree.leaves(ref_updates), strict=True):
        _assert_close(got, expected, rtol=1e-6)


def test_pool_first_keeps_sown_activations():
    model = _model("mnist", bn_mode="plain")
    x = _inputs(model)
    variables = _init(model, x)
    _, state = model.apply(variables, x, train=False, mutable=["intermediates"])
    assert state["intermediates"]["conv1_out"][0].shape == (BATCH, 24, 24, 20)
    assert state["intermediates"]["pool1_out"][0].shape == (BATCH, 12, 12, 20)


def test_batch_norm_pool_needs_no_scale():
    x = _random_map()
    module = models.BatchNorm(use_scale=True)
    variables = module.init(jax.random.key(0), x, train=False)
    with pytest.raises(ValueError, match="use_scale=False"):
        module.apply(variables, x, train=False, pool=lambda y: y)


def _random_map():
    return jax.random.normal(jax.random.key(0), (2, 4, 4, 3))


# Batch normalization.


def test_plain_bn_has_no_scale_or_shift():
    model = _model("mnist", bn_mode="plain")
    variables = _init_shapes(model, _inputs(model))
    params = variables["params"]

    assert "conv1_bn" not in params
    assert set(params["conv1"]) == {"kernel"}
    assert set(params["fc1"]) == {"kernel"}
    assert set(params["output"]) == {"kernel", "bias"}
    assert set(variables["batch_stats"]) == {"conv1_bn", "conv2_bn", "fc1_bn"}
    assert set(variables["batch_stats"]["conv1_bn"]) == {"mean", "var"}


def test_affine_bn_has_scale_and_shift():
    model = _model("mnist", bn_mode="affine")
    params = _init_shapes(model, _inputs(model))["params"]

    for name, units in (("conv1", 20), ("conv2", 50), ("fc1", 500)):
        assert set(params[name]) == {"kernel"}
        assert set(params[name + "_bn"]) == {"scale", "bias"}
        assert params[name + "_bn"]["scale"].shape == (units,)
    assert "output_bn" not in params


def test_bias_with_bn_keeps_bias():
    model = _model("timit", bn_mode="plain", bias_with_bn=True)
    params = _init_shapes(model, _inputs(model))["params"]
    assert set(params["fc1"]) == {"kernel", "bias"}


def test_no_bn_has_no_batch_stats():
    model = _model("timit")
    variables = _init_shapes(model, _inputs(model))
    assert "batch_stats" not in variables


def test_running_stats_update_in_train_mode_only():
    model = _model("timit", bn_mode="plain", bn_momentum=0.8)
    x = _inputs(model) * 3.0 + 1.0
    variables = _init(model, x)
    initial = variables["batch_stats"]["fc1_bn"]

    _, eval_state = model.apply(variables, x, train=False, mutable=["batch_stats"])
    _, train_state = model.apply(variables, x, train=True, mutable=["batch_stats"])

    np.testing.assert_array_equal(initial["mean"], np.zeros(512))
    np.testing.assert_array_equal(initial["var"], np.ones(512))
    for key in ("mean", "var"):
        np.testing.assert_array_equal(eval_state["batch_stats"]["fc1_bn"][key], initial[key])
    # fc1's pre-activations: the running mean moves 20% of the way to their batch mean.
    pre_activation = x @ variables["params"]["fc1"]["kernel"]
    _assert_close(
        train_state["batch_stats"]["fc1_bn"]["mean"], 0.2 * pre_activation.mean(0), rtol=1e-5
    )
    _assert_close(
        train_state["batch_stats"]["fc1_bn"]["var"],
        0.8 + 0.2 * pre_activation.var(0),
        rtol=1e-5,
    )


def test_eval_statistics_choice():
    x = _inputs(_model("timit"))
    running = _model("timit", bn_mode="affine", bn_eval_statistics="running")
    batch = _model("timit", bn_mode="affine", bn_eval_statistics="batch")
    variables = _init(running, x)

    train_logits, _ = running.apply(variables, x, train=True, mutable=["batch_stats"])
    batch_logits = batch.apply(variables, x, train=False)
    running_logits = running.apply(variables, x, train=False)

    # Eval with batch statistics repeats the train-mode forward pass and needs no mutable
    # collection. Eval with the initial running averages (0, 1) gives other logits.
    np.testing.assert_array_equal(batch_logits, train_logits)
    assert float(jnp.max(jnp.abs(running_logits - train_logits))) > 1e-3


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_flax(train, affine):
    x = 2.0 + 3.0 * jax.random.normal(jax.random.key(0), (8, 5, 5, 6))
    ours = models.BatchNorm(use_scale=affine, use_bias=affine, momentum=0.9, epsilon=1e-5)
    theirs = nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        use_fast_variance=False,
        use_scale=affine,
        use_bias=affine,
    )
    variables = theirs.init(jax.random.key(0), x)
    variables = jax.tree.map(lambda v: v + 0.5 * jax.random.uniform(jax.random.key(1)), variables)

    y, state = ours.apply(variables, x, train=train, mutable=["batch_stats"])
    y_ref, state_ref = theirs.apply(variables, x, mutable=["batch_stats"])

    assert jax.tree.structure(ours.init(jax.random.key(0), x, train=False)) == jax.tree.structure(
        variables
    )
    _assert_close(y, y_ref, rtol=1e-6)
    for key in ("mean", "var"):
        _assert_close(state["batch_stats"][key], state_ref["batch_stats"][key], rtol=1e-6)


# Feedback state and initialisation.


def test_feedback_state_from_one_key():
    model = _model("mnist", rule="rndf")
    x = _inputs(model)
    variables = _init(model, x, feedback_seed=1)
    same = _init(model, x, feedback_seed=1)
    other = _init(model, x, feedback_seed=2)
    states = variables["feedback"]

    assert set(states) == {"conv1", "conv2", "fc1", "output"}
    for name, layer_state in states.items():
        assert layer_state["state"].shape == variables["params"][name]["kernel"].shape
        np.testing.assert_array_equal(layer_state["state"], same["feedback"][name]["state"])
        assert not np.array_equal(layer_state["state"], other["feedback"][name]["state"])
    # The forward weights do not depend on the feedback key.
    params, other_params = variables["params"], other["params"]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(other_params), strict=True):
        np.testing.assert_array_equal(a, b)
    # Layers draw different states: compare the first 20 entries of two 5x5 kernels.
    first = states["conv1"]["state"].ravel()[:20]
    second = states["conv2"]["state"].ravel()[:20]
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("rule", ["symmetric", "usf", "nusf", "brsf", "brsf_p"])
def test_rules_without_state_have_no_feedback_collection(rule):
    model = _model("timit", rule=rule)
    assert "feedback" not in _init_shapes(model, _inputs(model))


@pytest.mark.parametrize(
    "init,layer,expected_std",
    [
        ("normal_0.01", "fc1", 0.01),
        ("he", "fc1", np.sqrt(2 / 800)),  # fan-in 4*4*50
        ("he", "conv2", np.sqrt(2 / 500)),  # fan-in 5*5*20
        ("lecun", "fc1", np.sqrt(1 / 800)),
    ],
)
def test_kernel_init_scale(init, layer, expected_std):
    model = _model("mnist", init=init)
    params = _init(model, _inputs(model))["params"]
    kernel = np.asarray(params[layer]["kernel"])

    # 400,000 (fc1) or 25,000 (conv2) draws: the sample std is within 2% of the target.
    np.testing.assert_allclose(kernel.std(), expected_std, rtol=0.02)
    assert abs(kernel.mean()) < 0.05 * expected_std
    for name in ("conv1", "conv2", "fc1", "output"):
        np.testing.assert_array_equal(params[name]["bias"], 0.0)


# Clamped controls.


def _train_steps(model, variables, tx, x, labels, steps, rng_seed=0):
    params = variables["params"]
    opt_state = tx.init(params)
    others = {k: v for k, v in variables.items() if k != "params"}

    @jax.jit
    def step(params, opt_state, others, key):
        def loss(params):
            logits, updated = model.apply(
                {**others, "params": params},
                x,
                train=True,
                mutable=["batch_stats"],
                rngs={"feedback": key},
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updated

        (value, updated), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {**others, **updated}, value

    losses = []
    for key in jax.random.split(jax.random.key(rng_seed), steps):
        params, opt_state, others, value = step(params, opt_state, others, key)
        losses.append(float(value))
    return {**others, "params": params}, losses


def test_clamp_mask_values():
    model = _model("cifar", bn_mode="affine")
    params = _init_shapes(model, _inputs(model))["params"]

    none = models.clamp_mask(params, "none")
    bottom = models.clamp_mask(params, "bottom")
    top = models.clamp_mask(params, "top")

    assert jax.tree.structure(bottom) == jax.tree.structure(params)
    assert not any(jax.tree.leaves(none))
    for name in params:
        is_output = name == models.OUTPUT_LAYER
        assert all(leaf == is_output for leaf in jax.tree.leaves(bottom[name])), name
        assert all(leaf == (not is_output) for leaf in jax.tree.leaves(top[name])), name
    assert top["conv1_bn"]["scale"]


@pytest.mark.parametrize("clamp", ["bottom", "top"])
def test_clamp_freezes_layers(clamp):
    model = _model("timit", bn_mode="affine", init="he")
    x = _inputs(model, batch=16)
    labels = _labels(model, batch=16)
    variables = _init(model, x)
    tx = optimizers.freeze(
        optax.sgd(0.1, momentum=0.9), models.clamp_mask(variables["params"], clamp)
    )

    trained, _ = _train_steps(model, variables, tx, x, labels, steps=3)

    for name in variables["params"]:
        frozen = (name == models.OUTPUT_LAYER) == (clamp == "bottom")
        for before, after in zip(
            jax.tree.leaves(variables["params"][name]),
            jax.tree.leaves(trained["params"][name]),
            strict=True,
        ):
            if frozen:
                np.testing.assert_array_equal(after, before, err_msg=name)
            else:
                assert not np.array_equal(after, before), name


def test_clamp_mask_with_multi_transform():
    # The mask also works with optax alone, without asym_jax.optimizers.
    model = _model("timit", init="he")
    x = _inputs(model, batch=16)
    variables = _init(model, x)
    mask = models.clamp_mask(variables["params"], "bottom")
    labels_tree = jax.tree.map(lambda frozen: "frozen" if frozen else "train", mask)
    tx = optax.multi_transform(
        {"train": optax.sgd(0.1), "frozen": optax.set_to_zero()}, labels_tree
    )

    trained, _ = _train_steps(model, variables, tx, x, _labels(model, 16), steps=2)

    np.testing.assert_array_equal(
        trained["params"]["output"]["kernel"], variables["params"]["output"]["kernel"]
    )
    assert not np.array_equal(
        trained["params"]["fc1"]["kernel"], variables["params"]["fc1"]["kernel"]
    )


def test_clamp_mask_rejects_bad_input():
    params = {"output": {"kernel": jnp.zeros((2, 2))}}
    with pytest.raises(ValueError, match="'middle'.*none, bottom, top"):
        models.clamp_mask(params, "middle")
    with pytest.raises(ValueError, match="no 'output' layer"):
        models.clamp_mask({"params": params}, "top")


# Training on random data, every rule and BN mode.

RULES = feedback.RULE_NAMES
# The default suite: every architecture with the symmetric rule and no BN, every rule on the
# cheap MLP (cycling through the BN modes), and both BN modes on the CIFAR network.
DEFAULT_TRAINING_CASES = sorted(
    {(architecture, "symmetric", "none") for architecture in models.ARCHITECTURES}
    | {("timit", rule, models.BN_MODES[i % 3]) for i, rule in enumerate(RULES)}
    | {("cifar", "frsf_p", "plain"), ("cifar", "nusf", "affine")}
)
ALL_TRAINING_CASES = [
    (architecture, rule, bn_mode)
    for architecture in models.ARCHITECTURES
    for rule in RULES
    for bn_mode in models.BN_MODES
    if (architecture, rule, bn_mode) not in DEFAULT_TRAINING_CASES
]


def _check_training(architecture, rule, bn_mode):
    # Adam on the mean loss of one fixed batch of 4: every layer gets a useful step whatever
    # the feedback rule, so a failure points at the model rather than at a learning rate.
    model = _model(architecture, rule=rule, bn_mode=bn_mode, init="he", conv_impl="xla")
    x = _inputs(model)
    labels = _labels(model)
    variables = _init(model, x)

    trained, losses = _train_steps(model, variables, optax.adam(1e-4), x, labels, steps=4)

    assert np.all(np.isfinite(losses)), losses
    for before, after in zip(
        jax.tree.leaves(variables["params"]), jax.tree.leaves(trained["params"]), strict=True
    ):
        assert not np.array_equal(before, after)
    if rule == "symmetric":
        assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("architecture,rule,bn_mode", DEFAULT_TRAINING_CASES)
def test_training_steps(architecture, rule, bn_mode):
    _check_training(architecture, rule, bn_mode)


@pytest.mark.slow
@pytest.mark.parametrize("architecture,rule,bn_mode", ALL_TRAINING_CASES)
def test_training_steps_exhaustive(architecture, rule, bn_mode):
    _check_training(architecture, rule, bn_mode)


# Vmap over a run axis.


@pytest.mark.parametrize("architecture,rule", [("mnist", "frsf"), ("timit", "brsf_p")])
def test_vmap_over_runs_matches_single_runs(architecture, rule):
    # The layer tests cover the patches convolution under vmap; XLA's compiles twice as fast.
    model = _model(architecture, rule=rule, bn_mode="plain", conv_impl="xla")
    x = _inputs(model)
    labels = _labels(model)
    runs = [_init(model, x, params_seed=seed, feedback_seed=10 + seed) for seed in range(2)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *runs)
    keys = jax.random.split(jax.random.key(5), 2)

    def grads(variables, key):
        loss = _summed_loss(model, variables, x, labels, rngs={"feedback": key})
        return jax.grad(loss)(variables["params"], x)

    def grads_and_logits(variables, key):
        return grads(variables, key), model.apply(variables, x, train=False)

    batched = jax.jit(jax.vmap(grads_and_logits))(stacked, keys)
    single_run = jax.jit(grads_and_logits)

    for run, variables in enumerate(runs):
        single = single_run(variables, keys[run])
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
            _assert_close(a[run], b, rtol=1e-5)


# Input validation.


def test_create_model_rejects_bad_config():
    cases = [
        (dict(architecture="alexnet"), "'alexnet'.*general, mnist, cifar, svhn, timit"),
        (dict(num_classes=1), "num_classes must be >= 2, got 1"),
        (dict(num_classes=True), "num_classes must be an int >= 2, got True"),
        (dict(num_classes=2.5), "num_classes must be an int >= 2, got 2.5"),
        (dict(bn_mode="batch"), "bn_mode 'batch'.*none, plain, affine"),
        (dict(init="xavier"), "init 'xavier'.*normal_0.01, he, lecun"),
        (dict(conv_impl="cudnn"), "conv_impl 'cudnn'.*patches, xla"),
        (dict(bn_eval_statistics="ema"), "bn_eval_statistics 'ema'.*running, batch"),
        (dict(pool_impl="fast"), "pool_impl 'fast'.*slices, reduce_window"),
        (dict(bn_momentum=1.0), r"bn_momentum must be in \[0, 1\), got 1.0"),
        (dict(bn_epsilon=0.0), "bn_epsilon must be > 0, got 0.0"),
        (dict(rule="sgd"), "'sgd'.*symmetric"),
        (dict(rule=3), "rule must be a FeedbackRule or a rule name, got 3"),
    ]
    for overrides, message in cases:
        kwargs = {"architecture": "mnist", "num_classes": 10, "rule": "symmetric", **overrides}
        with pytest.raises(ValueError, match=message):
            models.create_model(kwargs.pop("architecture"), **kwargs)


def test_network_validates_fields():
    spec = models.get_architecture("timit", 80)
    with pytest.raises(ValueError, match="bn_mode 'batch'.*none, plain, affine"):
        models.Network(spec, feedback.get_rule("usf"), bn_mode="batch")
    with pytest.raises(ValueError, match="init 'xavier'.*normal_0.01, he, lecun"):
        models.Network(spec, feedback.get_rule("usf"), weight_init="xavier")


def test_create_model_accepts_rule_name():
    model = models.create_model("mnist", num_classes=10, rule="nusf")
    assert model.rule == feedback.get_rule("nusf")


@pytest.mark.parametrize(
    "architecture,shape",
    [
        ("mnist", (4, 28, 28, 3)),
        ("mnist", (4, 28, 28)),
        ("cifar", (4, 3, 32, 32)),
        ("timit", (4, 1845, 1)),
        ("general", (4, 120, 120, 3)),
    ],
)
def test_wrong_input_shape_raises(architecture, shape):
    model = _model(architecture)
    variables = _init_shapes(model, _inputs(model))
    expected = ", ".join(map(str, model.architecture.input_shape))
    with pytest.raises(ValueError, match=rf"expects input of shape \(batch, {expected}\)"):
        model.apply(variables, jnp.zeros(shape), train=False)


def test_integer_input_raises():
    model = _model("mnist")
    variables = _init_shapes(model, _inputs(model))
    with pytest.raises(ValueError, match="expects float input, got uint8"):
        model.apply(variables, jnp.zeros((2, 28, 28, 1), jnp.uint8), train=False)
