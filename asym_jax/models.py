"""The five networks of Liao, Leibo & Poggio (AAAI 2016), Table 1, built from asymmetric layers.

Every convolution and dense layer, the output layer included, is an ``AsymConv`` or
``AsymDense`` whose backward pass uses one feedback rule (``asym_jax.feedback``). The
architectures, as (name, input) -> layers, with ``AxBxC/D`` = C maps of AxB at stride D:

* ``general`` (119x119x3, the datasets without a network of their own): conv 9x9x48/2,
  maxpool 2x2/2, conv 5x5x128/1, maxpool 2x2/2, FC max(256, 3 * classes), FC 2 * classes,
  FC classes. No padding; spatial sizes 119 -> 56 -> 28 -> 24 -> 12.
* ``mnist`` (28x28x1): conv 5x5x20, maxpool 2x2/2, conv 5x5x50, maxpool 2x2/2, FC 500,
  FC classes.
* ``cifar`` (32x32x3): conv 5x5x32, maxpool 3x3/2, conv 5x5x64, avgpool 3x3/2, conv 5x5x64,
  avgpool 3x3/2, FC 128, FC classes. Convolutions pad 2 on every side, pools pad 1 on the
  bottom and right only; spatial sizes 32 -> 16 -> 8 -> 4.
* ``svhn`` (32x32x3): conv 5x5x20, maxpool 2x2/2, conv 7x7x512, maxpool 2x2/2, FC 40,
  FC classes.
* ``timit`` (1845 inputs, 15 stacked frames of 123 MFCC features): FC 512, FC 256,
  FC classes.

Each hidden layer is weight layer -> optional batch normalization -> ReLU, and pools follow
the ReLU. A max-pool runs before plain BN and ReLU where they commute (``pool_first``): the
values and gradients are the same, and the normalisation and ReLU touch a quarter of the
cells. The output
layer returns logits (the softmax cross-entropy is the loss's job). The
paper does not give the BN placement; this one is fixed. Its other open choices are
``create_model`` arguments: BN statistics, the bias of layers followed by BN, pooling
semantics and the weight initialisation. BUILD_NOTES.md lists them with their defaults.

Variable collections: ``params`` (kernels, biases, BN scale/shift), ``feedback`` (fixed
feedback state of frSF, frSF-p and RndF layers, drawn at init from the ``"feedback"`` rng
stream), ``batch_stats`` (BN running averages) and, when made mutable, ``intermediates``
(each layer's output, sown as ``<layer name>_out``).
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from asym_jax import feedback, layers

BN_MODES = ("none", "plain", "affine")
BN_EVAL_STATISTICS = ("running", "batch")
INITS = ("normal_0.01", "he", "lecun")
POOL_IMPLS = ("slices", "reduce_window")
CLAMPS = ("none", "bottom", "top")

OUTPUT_LAYER = "output"
"""Name of the last (logits) layer in every architecture."""

_BN_SUFFIX = "_bn"

Padding2D = tuple[tuple[int, int], tuple[int, int]]
_NO_PADDING: Padding2D = ((0, 0), (0, 0))


# Architecture tables.


@dataclasses.dataclass(frozen=True)
class Conv:
    """A convolution row of Table 1: ``features`` maps of ``size`` x ``size`` at ``stride``."""

    name: str
    features: int
    size: int
    stride: int = 1
    padding: Padding2D = _NO_PADDING


@dataclasses.dataclass(frozen=True)
class Pool:
    """A pooling row of Table 1: ``kind`` is ``"max"`` or ``"avg"``."""

    name: str
    kind: str
    size: int
    stride: int
    padding: Padding2D = _NO_PADDING


@dataclasses.dataclass(frozen=True)
class Dense:
    """A fully connected row of Table 1 with ``features`` outputs."""

    name: str
    features: int


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A network of Table 1 for a given class count.

    Attributes:
      name: registry key in ``ARCHITECTURES``.
      input_shape: shape of one example, ``(H, W, C)``, or ``(features,)`` for the MLP.
      layers: the rows of Table 1 in order; the last one is the ``Dense`` output layer
        named ``OUTPUT_LAYER``.
    """

    name: str
    input_shape: tuple[int, ...]
    layers: tuple[Conv | Pool | Dense, ...]

    @property
    def weight_layer_names(self) -> tuple[str, ...]:
        """Names of the convolution and dense layers, input side first."""
        return tuple(layer.name for layer in self.layers if not isinstance(layer, Pool))


def general_cnn(num_classes: int) -> Architecture:
    """Return the network used for every dataset without a network of its own."""
    return Architecture(
        name="general",
        input_shape=(119, 119, 3),
        layers=(
            Conv("conv1", features=48, size=9, stride=2),
            Pool("pool1", "max", size=2, stride=2),
            Conv("conv2", features=128, size=5),
            Pool("pool2", "max", size=2, stride=2),
            Dense("fc1", max(256, 3 * num_classes)),
            Dense("fc2", 2 * num_classes),
            Dense(OUTPUT_LAYER, num_classes),
        ),
    )


def mnist_cnn(num_classes: int) -> Architecture:
    """Return the MNIST network (the LeNet of MatConvNet's MNIST example)."""
    return Architecture(
        name="mnist",
        input_shape=(28, 28, 1),
        layers=(
            Conv("conv1", features=20, size=5),
            Pool("pool1", "max", size=2, stride=2),
            Conv("conv2", features=50, size=5),
            Pool("pool2", "max", size=2, stride=2),
            Dense("fc1", 500),
            Dense(OUTPUT_LAYER, num_classes),
        ),
    )


def cifar_cnn(num_classes: int) -> Architecture:
    """Return the CIFAR-10/100 network."""
    conv_padding = ((2, 2), (2, 2))
    pool_padding = ((0, 1), (0, 1))
    return Architecture(
        name="cifar",
        input_shape=(32, 32, 3),
        layers=(
            Conv("conv1", features=32, size=5, padding=conv_padding),
            Pool("pool1", "max", size=3, stride=2, padding=pool_padding),
            Conv("conv2", features=64, size=5, padding=conv_padding),
            Pool("pool2", "avg", size=3, stride=2, padding=pool_padding),
            Conv("conv3", features=64, size=5, padding=conv_padding),
            Pool("pool3", "avg", size=3, stride=2, padding=pool_padding),
            Dense("fc1", 128),
            Dense(OUTPUT_LAYER, num_classes),
        ),
    )


def svhn_cnn(num_classes: int) -> Architecture:
    """Return the SVHN network."""
    return Architecture(
        name="svhn",
        input_shape=(32, 32, 3),
        layers=(
            Conv("conv1", features=20, size=5),
            Pool("pool1", "max", size=2, stride=2),
            Conv("conv2", features=512, size=7),
            Pool("pool2", "max", size=2, stride=2),
            Dense("fc1", 40),
            Dense(OUTPUT_LAYER, num_classes),
        ),
    )


def timit_mlp(num_classes: int) -> Architecture:
    """Return the TIMIT-80 multilayer perceptron over 15 stacked frames of 123 MFCCs."""
    return Architecture(
        name="timit",
        input_shape=(1845,),
        layers=(
            Dense("fc1", 512),
            Dense("fc2", 256),
            Dense(OUTPUT_LAYER, num_classes),
        ),
    )


ARCHITECTURES: dict[str, Callable[[int], Architecture]] = {
    "general": general_cnn,
    "mnist": mnist_cnn,
    "cifar": cifar_cnn,
    "svhn": svhn_cnn,
    "timit": timit_mlp,
}
"""Architecture name -> constructor taking the class count."""


def get_architecture(name: str, num_classes: int) -> Architecture:
    """Return the architecture ``name`` for ``num_classes`` classes.

    Raises:
      ValueError: for an unknown name or a class count that is not an int >= 2.
    """
    if name not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {name!r}; valid choices: {', '.join(ARCHITECTURES)}."
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    return ARCHITECTURES[name](int(num_classes))


# Pooling.


def _pool_output_size(size: int, window: int, stride: int, padding: tuple[int, int]) -> int:
    return (size + padding[0] + padding[1] - window) // stride + 1


def _pool_output_hw(x: jax.Array, window: int, stride: int, padding: Padding2D):
    return tuple(
        _pool_output_size(size, window, stride, pad)
        for size, pad in zip(x.shape[1:3], padding, strict=True)
    )


def _window_slices(x: jax.Array, window: int, stride: int, out_hw: tuple[int, int]):
    """Return the ``window**2`` strided views of padded NHWC ``x``, one per window offset."""
    n, _, _, c = x.shape
    span_h, span_w = (stride * (size - 1) + 1 for size in out_hw)
    strides = (1, stride, stride, 1)
    return [
        lax.slice(x, (0, dy, dx, 0), (n, dy + span_h, dx + span_w, c), strides)
        for dy in range(window)
        for dx in range(window)
    ]


def _valid_cell_counts(
    in_hw: tuple[int, int], window: int, stride: int, padding: Padding2D
) -> np.ndarray:
    """Return, per output position, how many cells of its window lie inside the input."""
    counts = []
    for size, pad in zip(in_hw, padding, strict=True):
        starts = np.arange(_pool_output_size(size, window, stride, pad)) * stride - pad[0]
        ends = starts + window
        counts.append(np.minimum(ends, size) - np.maximum(starts, 0))
    return np.outer(counts[0], counts[1]).astype(np.float32)[None, :, :, None]


def max_pool(
    x: jax.Array,
    window: int,
    stride: int,
    padding: Padding2D = _NO_PADDING,
    impl: str = "slices",
) -> jax.Array:
    """Max-pool NHWC ``x`` over ``window`` x ``window`` cells at ``stride``.

    Padded cells are -inf, so they never win. Output sizes round down,
    ``(size + pad - window) // stride + 1``.

    Args:
      x: NHWC input.
      window: pooling window height and width.
      stride: step between windows, in cells.
      padding: ``((top, bottom), (left, right))`` cells added around the input.
      impl: ``"slices"`` (default): non-overlapping unpadded windows as reshape + max, other
        windows as the max over the ``window**2`` strided slices of the padded input. The
        gradient of a window is split equally among its tied maxima. ``"reduce_window"``:
        ``lax.reduce_window``, whose gradient goes to a single maximum of each window (the
        first in row-major order on XLA:CPU with jax 0.10.2). Its backward pass is several
        times slower on CPU.

    Returns:
      The pooled NHWC array.
    """
    _check_pool_impl(impl)
    if impl == "reduce_window":
        return lax.reduce_window(
            x,
            -jnp.inf,
            lax.max,
            (1, window, window, 1),
            (1, stride, stride, 1),
            ((0, 0), *padding, (0, 0)),
        )
    if window == stride and padding == _NO_PADDING:
        n, height, width, c = x.shape
        out_h, out_w = height // window, width // window
        x = x[:, : out_h * window, : out_w * window, :]
        return x.reshape(n, out_h, window, out_w, window, c).max(axis=(2, 4))
    return _max_pool_slices(x, window, stride, padding)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _max_pool_slices(x, window, stride, padding):
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
    out_hw = _pool_output_hw(x, window, stride, padding)
    return functools.reduce(jnp.maximum, _window_slices(padded, window, stride, out_hw))


@_max_pool_slices.defjvp
def _max_pool_slices_jvp(window, stride, padding, primals, tangents):
    # The tangent of a window is the mean tangent of its tied maxima, as for jnp.max. Written
    # out because the backward pass of jnp.max(jnp.stack(slices)) took 5x longer on CPU
    # (measured on a 100x32x32x32 input, 3x3/2 windows), and chained jnp.maximum would split
    # ties unequally (1/2, 1/4, ...).
    (x,), (x_dot,) = primals, tangents
    y = _max_pool_slices(x, window, stride, padding)
    out_hw = y.shape[1:3]
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
    padded_dot = jnp.pad(x_dot, ((0, 0), *padding, (0, 0)))
    is_max = [v == y for v in _window_slices(padded, window, stride, out_hw)]
    ties = sum(m.astype(y.dtype) for m in is_max)
    tangent_slices = _window_slices(padded_dot, window, stride, out_hw)
    y_dot = sum(jnp.where(m, t, 0) for m, t in zip(is_max, tangent_slices, strict=True))
    return y, y_dot / ties


def avg_pool(
    x: jax.Array,
    window: int,
    stride: int,
    padding: Padding2D = _NO_PADDING,
    impl: str = "slices",
    count_padding: bool = False,
) -> jax.Array:
    """Average-pool NHWC ``x`` over ``window`` x ``window`` cells at ``stride``.

    Args:
      x: NHWC input.
      window: pooling window height and width.
      stride: step between windows, in cells.
      padding: ``((top, bottom), (left, right))`` zero cells added around the input.
      impl: ``"slices"`` (sum of the ``window**2`` strided slices of the padded input) or
        ``"reduce_window"`` (``lax.reduce_window``); both give the same values and gradients.
      count_padding: if False (MatConvNet's rule), each window's sum is divided by the
        number of its cells inside the input. If True, it is divided by ``window**2``, so
        padded zeros pull the average down.

    Returns:
      The pooled NHWC array.
    """
    _check_pool_impl(impl)
    if impl == "reduce_window":
        total = lax.reduce_window(
            x,
            0.0,
            lax.add,
            (1, window, window, 1),
            (1, stride, stride, 1),
            ((0, 0), *padding, (0, 0)),
        )
    else:
        out_hw = _pool_output_hw(x, window, stride, padding)
        padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
        total = sum(_window_slices(padded, window, stride, out_hw))
    if count_padding:
        return total / (window * window)
    counts = _valid_cell_counts(tuple(x.shape[1:3]), window, stride, padding)
    return total / jnp.asarray(counts, x.dtype)


def _check_pool_impl(impl: str) -> None:
    if impl not in POOL_IMPLS:
        raise ValueError(f"Unknown pool impl {impl!r}; valid choices: {', '.join(POOL_IMPLS)}.")


# Batch normalization.


class BatchNorm(nn.Module):
    """Batch normalization over all axes but the last (channels of NHWC, units of a dense layer).

    Variables have ``nn.BatchNorm``'s names and layout: ``params`` ``scale`` and ``bias``
    (when used) and ``batch_stats`` ``mean`` and ``var``. Train mode normalises with the
    batch mean and biased variance and updates the running averages (never at init), as
    ``nn.BatchNorm(use_running_average=not train, use_fast_variance=False)`` does. Unlike
    ``nn.BatchNorm`` it can also normalise with batch statistics in eval mode without
    touching the running averages.

    Attributes:
      use_scale: whether to learn a per-channel scale after normalising.
      use_bias: whether to learn a per-channel shift after normalising.
      momentum: running average decay, ``avg = momentum * avg + (1 - momentum) * batch``.
      epsilon: added to the variance before the square root.
      eval_statistics: ``"running"`` or ``"batch"``: the statistics used in eval mode.
    """

    use_scale: bool = False
    use_bias: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5
    eval_statistics: str = "running"

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool,
        pool: Callable[[jax.Array], jax.Array] | None = None,
    ) -> jax.Array:
        """Normalise ``x``; in train mode also update the running averages.

        Args:
          x: the input, features last.
          train: normalise with the batch statistics and update the running averages.
          pool: a max-pool applied after the statistics are taken from all of ``x`` and
            before normalising, so that only the pooled cells are normalised. The result
            equals pooling the normalised ``x`` because, without a learned scale,
            normalising is increasing in each channel.

        Raises:
          ValueError: if ``pool`` is given to a module with a learned scale, which can be
            negative.
        """
        _check_choice("eval_statistics", self.eval_statistics, BN_EVAL_STATISTICS)
        if pool is not None and self.use_scale:
            raise ValueError(
                "pool needs a BatchNorm without a learned scale (use_scale=False): a negative "
                "scale would turn the maximum of each window into its minimum."
            )
        features = x.shape[-1]
        axes = tuple(range(x.ndim - 1))
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)

        if train or self.eval_statistics == "batch":
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            if train and not self.is_initializing():
                m = self.momentum
                running_mean.value = m * running_mean.value + (1 - m) * mean
                running_var.value = m * running_var.value + (1 - m) * var
        else:
            mean, var = running_mean.value, running_var.value

        if pool is not None:
            x = pool(x)
        y = (x - mean) * lax.rsqrt(var + self.epsilon)
        if self.use_scale:
            y = y * self.param("scale", nn.initializers.ones_init(), (features,), jnp.float32)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (features,), jnp.float32)
        return y.astype(x.dtype)


# Initialisation.


def kernel_initializer(init: str) -> layers.Initializer:
    """Return the kernel initializer named ``init`` (one of ``INITS``).

    ``"normal_0.01"`` draws ``0.01 * N(0, 1)`` (MatConvNet's example networks);
    ``"he"`` draws ``N(0, 2 / fan_in)`` and ``"lecun"`` ``N(0, 1 / fan_in)``, untruncated, with
    ``fan_in = kh * kw * in_channels`` for a convolution and the input count for a dense
    layer. Biases always start at zero.

    Raises:
      ValueError: for an unknown name.
    """
    if init == "normal_0.01":
        return nn.initializers.normal(stddev=0.01)
    if init == "he":
        return nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    if init == "lecun":
        return nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    raise ValueError(f"Unknown init {init!r}; valid choices: {', '.join(INITS)}.")


# The network.


class Network(nn.Module):
    """A network of Table 1 whose weight layers all use ``rule`` for feedback.

    Build it with ``create_model``. The attributes are the arguments of ``create_model``,
    except that ``init`` is called ``weight_init`` here because ``nn.Module.init`` takes that
    name. Construction raises ``ValueError`` for an invalid field, as ``create_model`` does.
    """

    architecture: Architecture
    rule: feedback.FeedbackRule
    bn_mode: str = "none"
    weight_init: str = "normal_0.01"
    conv_impl: str = "xla_per_run"
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    bn_eval_statistics: str = "running"
    bias_with_bn: bool = False
    pool_impl: str = "slices"
    avg_pool_count_padding: bool = False
    pool_first: bool = True

    def __post_init__(self):
        _check_choice("bn_mode", self.bn_mode, BN_MODES)
        _check_choice("init", self.weight_init, INITS)
        _check_choice("conv_impl", self.conv_impl, layers.CONV_IMPLS)
        _check_choice("bn_eval_statistics", self.bn_eval_statistics, BN_EVAL_STATISTICS)
        _check_choice("pool_impl", self.pool_impl, POOL_IMPLS)
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1), got {self.bn_momentum!r}.")
        if not self.bn_epsilon > 0.0:
            raise ValueError(f"bn_epsilon must be > 0, got {self.bn_epsilon!r}.")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Return the logits ``(N, num_classes)`` of the batch ``x``.

        Args:
          x: float input of shape ``(N, *architecture.input_shape)``.
          train: batch statistics and running-average updates in BN (the ``batch_stats``
            collection must then be mutable); in eval mode BN uses the statistics chosen by
            ``bn_eval_statistics``.

        Raises:
          ValueError: if ``x`` has the wrong shape or is not a float array.
        """
        _check_input(x, self.architecture)
        rows = self.architecture.layers
        pooled = False
        for layer, next_layer in zip(rows, (*rows[1:], None), strict=True):
            if isinstance(layer, Pool):
                if not pooled:
                    x = self._pool(layer, x)
                pooled = False
            else:
                x = self._weight_layer(layer, x)
                if layer.name != OUTPUT_LAYER:
                    pool = self._early_pool(next_layer)
                    x = nn.relu(self._normalize(layer.name, x, train, pool))
                    pooled = pool is not None
            self.sow("intermediates", layer.name + "_out", x)
        return x

    def _early_pool(self, layer) -> Callable[[jax.Array], jax.Array] | None:
        """Return the max-pool ``layer`` as a function when it may run before BN and ReLU.

        ReLU and BN without a learned scale are increasing in each channel, so they commute
        with a max-pool: values and gradients are the same, and the cells a window does not
        pass on get a zero gradient either way. Not while ``intermediates`` are sown, whose
        ``<layer>_out`` must stay the activation before pooling.
        """
        if (
            not self.pool_first
            or not isinstance(layer, Pool)
            or layer.kind != "max"
            or self.bn_mode == "affine"
            or self.is_mutable_collection("intermediates")
        ):
            return None
        return functools.partial(self._pool, layer)

    def _weight_layer(self, layer: Conv | Dense, x: jax.Array) -> jax.Array:
        # BN cancels the bias of the layer it follows, so such layers have none by default.
        has_bn = self.bn_mode != "none" and layer.name != OUTPUT_LAYER
        common = dict(
            rule=self.rule,
            use_bias=self.bias_with_bn or not has_bn,
            kernel_init=kernel_initializer(self.weight_init),
            name=layer.name,
        )
        if isinstance(layer, Conv):
            return layers.AsymConv(
                layer.features,
                layer.size,
                strides=layer.stride,
                padding=layer.padding,
                impl=self.conv_impl,
                **common,
            )(x)
        return layers.AsymDense(layer.features, **common)(x.reshape(x.shape[0], -1))

    def _normalize(self, layer_name: str, x: jax.Array, train: bool, pool=None) -> jax.Array:
        if self.bn_mode == "none":
            return x if pool is None else pool(x)
        affine = self.bn_mode == "affine"
        return BatchNorm(
            use_scale=affine,
            use_bias=affine,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            eval_statistics=self.bn_eval_statistics,
            name=layer_name + _BN_SUFFIX,
        )(x, train=train, pool=pool)

    def _pool(self, layer: Pool, x: jax.Array) -> jax.Array:
        if layer.kind == "max":
            return max_pool(x, layer.size, layer.stride, layer.padding, impl=self.pool_impl)
        return avg_pool(
            x,
            layer.size,
            layer.stride,
            layer.padding,
            impl=self.pool_impl,
            count_padding=self.avg_pool_count_padding,
        )


def _check_input(x: jax.Array, architecture: Architecture) -> None:
    expected = architecture.input_shape
    if jnp.ndim(x) != len(expected) + 1 or tuple(jnp.shape(x)[1:]) != expected:
        raise ValueError(
            f"The {architecture.name} network expects input of shape (batch, "
            f"{', '.join(map(str, expected))}), got {tuple(jnp.shape(x))}."
        )
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(
            f"The {architecture.name} network expects float input, got {jnp.result_type(x)}; "
            "convert and normalise the data first."
        )


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; valid choices: {', '.join(choices)}.")


def create_model(
    architecture: str,
    *,
    num_classes: int,
    rule: feedback.FeedbackRule | str,
    bn_mode: str = "none",
    init: str = "normal_0.01",
    conv_impl: str = "xla_per_run",
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    bn_eval_statistics: str = "running",
    bias_with_bn: bool = False,
    pool_impl: str = "slices",
    avg_pool_count_padding: bool = False,
    pool_first: bool = True,
) -> Network:
    """Build one of the paper's networks.

    Initialise with ``model.init({"params": key1, "feedback": key2}, x, train=False)``; the
    ``"feedback"`` key draws the fixed feedback state of every layer (frSF, frSF-p, RndF).
    Train with ``model.apply(variables, x, train=True, mutable=["batch_stats"],
    rngs={"feedback": key})``; the key is needed only by rules that redraw V every step.

    Args:
      architecture: a key of ``ARCHITECTURES``: ``general``, ``mnist``, ``cifar``, ``svhn``
        or ``timit``.
      num_classes: number of classes (logits), >= 2.
      rule: the feedback rule of every weight layer, a ``FeedbackRule`` or a rule name.
      bn_mode: ``"none"``; ``"plain"``, batch normalization without learnable scale and
        shift (the paper's ``+BN`` conditions); or ``"affine"``, with them (its plain
        ``BN`` and ``BN+BM`` conditions). BN sits after every convolution and hidden dense
        layer, before the ReLU, never after the output layer.
      init: kernel initialisation, one of ``INITS`` (see ``kernel_initializer``).
      conv_impl: one of ``layers.CONV_IMPLS``, see ``layers.asym_conv``.
      bn_momentum: decay of the BN running averages.
      bn_epsilon: added to the BN variance.
      bn_eval_statistics: ``"running"`` (running averages) or ``"batch"`` (statistics of
        the evaluated batch) in eval mode.
      bias_with_bn: keep the bias of layers followed by BN. Off by default because the BN
        mean subtraction cancels the bias and its gradient is zero.
      pool_impl: ``"slices"`` (fast, max-pool ties share the gradient) or
        ``"reduce_window"`` (ties send it to one maximum), see ``max_pool``.
      avg_pool_count_padding: divide padded average-pool windows by ``window**2`` instead
        of by their cell count inside the input (MatConvNet's rule, the default).
      pool_first: run each max-pool before the ReLU (and plain BN) that precede it, which
        gives the same values and gradients with less work. False keeps the layer order of
        Table 1; affine BN and average pools always keep it.

    Returns:
      A ``Network`` whose ``__call__(x, *, train)`` returns logits.

    Raises:
      ValueError: for an unknown architecture, rule, ``bn_mode``, ``init``, ``conv_impl``,
        ``bn_eval_statistics`` or ``pool_impl``, a class count below 2, or a BN momentum
        outside [0, 1) or epsilon <= 0.
    """
    spec = get_architecture(architecture, num_classes)
    if isinstance(rule, str):
        rule = feedback.get_rule(rule)
    if not isinstance(rule, feedback.FeedbackRule):
        raise ValueError(f"rule must be a FeedbackRule or a rule name, got {rule!r}.")
    return Network(
        architecture=spec,
        rule=rule,
        bn_mode=bn_mode,
        weight_init=init,
        conv_impl=conv_impl,
        bn_momentum=float(bn_momentum),
        bn_epsilon=float(bn_epsilon),
        bn_eval_statistics=bn_eval_statistics,
        bias_with_bn=bool(bias_with_bn),
        pool_impl=pool_impl,
        avg_pool_count_padding=bool(avg_pool_count_padding),
        pool_first=bool(pool_first),
    )


# Clamped controls.


def _layer_of(path) -> str:
    """Return the weight layer that owns the variable at ``path`` (BN belongs to its layer)."""
    top = path[0]
    name = top.key if hasattr(top, "key") else str(top)
    return name.removesuffix(_BN_SUFFIX)


def clamp_mask(params, clamp: str):
    """Return which parameters a clamped control freezes, for an optimizer freeze mask.

    Clamped controls (Liao, Leibo & Poggio, Experiment C2) keep some layers at their
    random initial values:

    * ``"bottom"``: the last (output) layer is frozen, all earlier layers learn.
    * ``"top"``: every layer but the output layer is frozen, only the output layer learns.
    * ``"none"``: nothing is frozen.

    The BN scale and shift of a layer freeze with it. Running BN averages and feedback
    state are not parameters and are unaffected.

    Args:
      params: the ``params`` collection of a ``Network`` (also with a leading run axis).
      clamp: one of ``CLAMPS``.

    Returns:
      A pytree with the structure of ``params``: True where the leaf is frozen.

    Raises:
      ValueError: for an unknown clamp, or params without an ``OUTPUT_LAYER`` entry.
    """
    _check_choice("clamp", clamp, CLAMPS)
    if OUTPUT_LAYER not in params:
        raise ValueError(
            f"params has no {OUTPUT_LAYER!r} layer (top-level keys: {', '.join(params)}); "
            "pass the 'params' collection of a model from create_model."
        )

    def frozen(path, _):
        is_output = _layer_of(path) == OUTPUT_LAYER
        return {"none": False, "bottom": is_output, "top": not is_output}[clamp]

    return jax.tree_util.tree_map_with_path(frozen, params)


def count_parameters(params) -> int:
    """Return the number of scalars in ``params``."""
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree_util.tree_leaves(params))
