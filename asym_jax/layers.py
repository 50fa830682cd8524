"""Dense and convolution layers whose backward pass uses a feedback matrix V instead of W.

The forward pass is the ordinary one, ``y = x W + b``. The backward pass sends the input
cotangent through V, ``dx = dy V^T``, and computes the weight and bias cotangents exactly as
backpropagation does, ``dW = x^T dy`` and ``db = sum(dy)``. V is built by a feedback rule
(``asym_jax.feedback``) inside the backward pass, so the forward pass costs the same as plain
backpropagation. The feedback state and the PRNG key are ordinary arguments whose cotangents
are zero. The flax modules keep the state in the ``"feedback"`` collection, outside
``params``, so an optimizer of ``params`` (weight decay included) never changes it.

Convolutions have four implementations with identical results up to float32 rounding:

* ``impl="xla_per_run"`` (default) uses ``lax.conv_general_dilated`` in NHWC/HWIO layout for the
  forward pass and dW, and for dx unless that transposed convolution, which runs over the
  zero-padded and stride-dilated dy, would do at least 3 times the work of the matrix product
  ``dy V^T``; then dx is that product followed by col2im. Under ``jax.vmap`` over a leading
  run axis it runs one convolution per run (``jax.custom_batching.custom_vmap``), except where
  only the kernel is batched, as in a first layer whose input all runs share: that stays one
  convolution whose output channels are those of all runs. XLA:CPU runs these convolutions
  through its library kernels: on 2 CPU cores (jax 0.10.2) every convolution layer of the
  paper's networks trained faster this way than with ``"patches"``, vmapped over 5 runs.
* ``impl="patches"`` extracts the input patches with strided slices and multiplies
  them with the kernel reshaped to a matrix. The backward pass is two matrix products plus
  col2im, the linear transpose of the patch extraction. Under ``jax.vmap`` over a leading run
  axis the products become batched matrix products rather than grouped convolutions.
* ``impl="lax_patches"`` is the same with ``lax.conv_general_dilated_patches`` as the
  extraction. Its col2im is a transposed grouped convolution, which XLA:CPU runs about 250
  times slower than the sliced one (jax 0.10.2, 16x16x32 input, 5x5 kernel).
* ``impl="xla"`` uses ``lax.conv_general_dilated`` and the transposes that JAX derives for
  it, the reference. Under ``jax.vmap`` the convolutions are grouped over the runs, and inside
  ``lax.scan`` XLA:CPU (jax 0.10.2) runs the transposes, whose kernel layout is not HWIO,
  through a generic loop nest about 15 times slower than its library convolution.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from asym_jax import feedback

CONV_IMPLS = ("patches", "lax_patches", "xla", "xla_per_run")

_CONV_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

Initializer = Callable[..., jax.Array]
Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]


def _check_dtypes(x, kernel, bias):
    dtypes = {x.dtype, kernel.dtype} | ({bias.dtype} if bias is not None else set())
    if len(dtypes) > 1:
        raise ValueError(
            f"x, kernel and bias must share one dtype, got {x.dtype}, {kernel.dtype} and "
            f"{None if bias is None else bias.dtype}. Cast them first, e.g. with "
            "flax.linen.dtypes.promote_dtype."
        )


# Dense.


def _dense_forward(x, kernel, bias):
    y = lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    if bias is not None:
        y = y + bias
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _asym_dense(rule, x, kernel, bias, state, key):
    del rule, state, key
    return _dense_forward(x, kernel, bias)


def _asym_dense_fwd(rule, x, kernel, bias, state, key):
    del rule
    return _dense_forward(x, kernel, bias), (x, kernel, bias, state, key)


def _asym_dense_bwd(rule, residuals, dy):
    x, kernel, bias, state, key = residuals
    v = rule.matrix(kernel, state, key)
    dx = lax.dot_general(dy, v, (((dy.ndim - 1,), (1,)), ((), ())))
    x_rows = x.reshape(-1, x.shape[-1])
    dy_rows = dy.reshape(-1, dy.shape[-1])
    dw = lax.dot_general(x_rows, dy_rows, (((0,), (0,)), ((), ())))
    db = None if bias is None else jnp.sum(dy_rows, axis=0).astype(bias.dtype)
    return dx.astype(x.dtype), dw.astype(kernel.dtype), db, None, None


_asym_dense.defvjp(_asym_dense_fwd, _asym_dense_bwd)


def asym_dense(
    rule: feedback.FeedbackRule,
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    state: jax.Array | None,
    key: jax.Array | None,
) -> jax.Array:
    """Apply ``y = x kernel + bias`` with the input cotangent sent through V.

    Args:
      rule: feedback rule that builds V in the backward pass.
      x: input of shape ``(..., in)``.
      kernel: W of shape ``(in, out)``, same dtype as ``x``.
      bias: ``(out,)`` in the dtype of ``x``, or ``None``.
      state: the rule's state (``rule.init_state``) if ``rule.has_state``, else ``None``.
      key: PRNG key if ``rule.redraws_per_step``, else ``None``. Only the backward pass uses
        it, so evaluation needs no key.

    Returns:
      ``y`` of shape ``(..., out)``. Its VJP gives ``dx = dy V^T``, the ordinary ``dW`` and
      ``db``, and zero cotangents for ``state`` and ``key``.

    Raises:
      ValueError: if the shapes or dtypes do not match.
    """
    if kernel.ndim != 2 or x.shape[-1:] != kernel.shape[:1]:
        raise ValueError(
            f"asym_dense needs x (..., in) and kernel (in, out), got x {x.shape} and "
            f"kernel {kernel.shape}."
        )
    if bias is not None and bias.shape != kernel.shape[1:]:
        raise ValueError(f"bias must have shape {kernel.shape[1:]}, got {bias.shape}.")
    _check_dtypes(x, kernel, bias)
    return _asym_dense(rule, x, kernel, bias, state, key)


# Convolution.


class _ConvGeometry(NamedTuple):
    """Static description of a convolution: everything but the array values."""

    strides: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    input_hw: tuple[int, int]
    kernel_hw: tuple[int, int]
    impl: str


def _conv_xla(x, kernel, geometry):
    return lax.conv_general_dilated(
        x,
        kernel,
        geometry.strides,
        geometry.padding,
        dimension_numbers=_CONV_DIMENSION_NUMBERS,
    )


def _spatial_axes(geometry, out_hw):
    """Zip, per spatial axis: input size, kernel size, output size, stride, (low, high) pad."""
    return zip(
        geometry.input_hw,
        geometry.kernel_hw,
        out_hw,
        geometry.strides,
        geometry.padding,
        strict=True,
    )


def _conv_input_grad(dy, v, geometry):
    """Return dx: dy dilated by the stride and padded, correlated with V flipped in space.

    This is the transpose of ``_conv_xla`` in x, written with the kernel in HWIO layout (V's
    input and output channels swapped) so that XLA:CPU uses its library convolution.
    """
    padding = []
    for size, k, out, stride, (lo, _) in _spatial_axes(geometry, dy.shape[1:3]):
        before = k - 1 - lo
        padding.append((before, size - (out - 1) * stride - 1 + lo))
    flipped = jnp.flip(v, (0, 1)).swapaxes(2, 3)
    return lax.conv_general_dilated(
        dy,
        flipped,
        (1, 1),
        padding,
        lhs_dilation=geometry.strides,
        dimension_numbers=_CONV_DIMENSION_NUMBERS,
    )


def _conv_kernel_grad(x, dy, geometry):
    """Return dW, ``dW[t, c, o] = sum_{n, i} x_padded[n, s i + t, c] dy[n, i, o]``.

    This is a convolution in NHWC/HWIO layout in which the channels of x act as the batch,
    the examples as input channels, and dy, dilated by the stride s, as the kernel.
    """
    padding = []
    for size, k, out, stride, (lo, _) in _spatial_axes(geometry, dy.shape[1:3]):
        padding.append((lo, (out - 1) * stride + k - size - lo))
    dw = lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0),
        dy.transpose(1, 2, 0, 3),
        (1, 1),
        padding,
        rhs_dilation=geometry.strides,
        dimension_numbers=_CONV_DIMENSION_NUMBERS,
    )
    return dw.transpose(1, 2, 0, 3)


def _padded_transpose_is_wasteful(geometry, out_hw) -> bool:
    """Whether dx as a convolution does at least 3 times the multiply-adds of dy times V.

    The convolution computes every input cell from a whole kernel window of the padded dy
    (dilated too for strides above 1), so its work grows with the input area. The work of the
    matrix product ``dy V^T`` (followed by col2im) grows with the output area.
    """
    # NOTE: the factor 3 comes from two layers on one 2-core AMD EPYC (jax 0.10.2): at 3.06
    # (SVHN conv2) the product was 4 times faster, at 2.25 (MNIST conv2) 10% slower.
    return math.prod(geometry.input_hw) >= 3 * math.prod(out_hw)


def _per_run(fn):
    """Wrap ``fn(a, b)`` so that ``jax.vmap`` calls it once per run where both are batched.

    Where only one argument is batched the ordinary batching rule applies: for a convolution
    with a shared input and batched kernels it is one convolution with the runs' output
    channels side by side, which is faster than one per run.
    """
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, a, b):
        if not all(in_batched):
            in_axes = [0 if batched else None for batched in in_batched]
            return jax.vmap(fn, in_axes=in_axes)(a, b), True
        # Calling `wrapped` keeps nested vmaps (several run axes) on this rule.
        return jnp.stack([wrapped(a[run], b[run]) for run in range(axis_size)]), True

    return wrapped


def _slice_patches(x, kernel_hw, geometry):
    """Return the patches of ``x`` as ``(N, Ho, Wo, kh kw C)``, feature order (kh, kw, C).

    Built from one pad and kh * kw strided slices, so it is pure data movement and its
    linear transpose (col2im) is a sum of pads with no convolution.
    """
    (kh, kw), (sh, sw) = kernel_hw, geometry.strides
    (top, bottom), (left, right) = geometry.padding
    zero = jnp.zeros((), x.dtype)
    x = lax.pad(x, zero, ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
    n, h, w, c = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    windows = [
        lax.slice(
            x, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1)
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(windows, axis=3).reshape(n, ho, wo, kh * kw * c)


def _lax_patches(x, kernel_hw, geometry):
    """Return the patches of ``x`` as ``(N, Ho, Wo, C kh kw)``, feature order (C, kh, kw)."""
    # The extraction is a convolution with a 0/1 kernel. HIGHEST precision keeps it an exact
    # copy on accelerators that would otherwise round float32 inputs to TF32.
    return lax.conv_general_dilated_patches(
        x,
        kernel_hw,
        geometry.strides,
        geometry.padding,
        dimension_numbers=_CONV_DIMENSION_NUMBERS,
        precision=lax.Precision.HIGHEST,
    )


def _patches(x, kernel_hw, geometry):
    if geometry.impl == "patches":
        return _slice_patches(x, kernel_hw, geometry)
    return _lax_patches(x, kernel_hw, geometry)


def _kernel_to_matrix(kernel, impl):
    """Reshape an HWIO kernel to the ``(patch features, O)`` matrix of ``impl``'s patches."""
    kh, kw, c, o = kernel.shape
    if impl == "patches":
        return kernel.reshape(kh * kw * c, o)
    return kernel.transpose(2, 0, 1, 3).reshape(c * kh * kw, o)


def _matrix_to_kernel(matrix, kernel_shape, impl):
    kh, kw, c, o = kernel_shape
    if impl == "patches":
        return matrix.reshape(kernel_shape)
    return matrix.reshape(c, kh, kw, o).transpose(1, 2, 0, 3)


def _conv_forward(x, kernel, bias, geometry):
    if geometry.impl == "xla":
        y = _conv_xla(x, kernel, geometry)
        saved_input = x
    elif geometry.impl == "xla_per_run":
        y = _per_run(lambda x_, k_: _conv_xla(x_, k_, geometry))(x, kernel)
        saved_input = x
    else:
        patches = _patches(x, kernel.shape[:2], geometry)
        kernel_matrix = _kernel_to_matrix(kernel, geometry.impl)
        y = lax.dot_general(patches, kernel_matrix, (((3,), (0,)), ((), ())))
        saved_input = patches
    if bias is not None:
        y = y + bias
    return y, saved_input


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _asym_conv(rule, geometry, x, kernel, bias, state, key):
    del rule, state, key
    return _conv_forward(x, kernel, bias, geometry)[0]


def _asym_conv_fwd(rule, geometry, x, kernel, bias, state, key):
    del rule
    y, saved_input = _conv_forward(x, kernel, bias, geometry)
    return y, (saved_input, kernel, bias, state, key)


def _asym_conv_bwd(rule, geometry, residuals, dy):
    saved_input, kernel, bias, state, key = residuals
    v = rule.matrix(kernel, state, key)
    batch = dy.shape[0]
    x_struct = jax.ShapeDtypeStruct((batch, *geometry.input_hw, kernel.shape[2]), dy.dtype)

    if geometry.impl == "xla_per_run":
        if _padded_transpose_is_wasteful(geometry, dy.shape[1:3]):
            v_matrix = _kernel_to_matrix(v, "patches")
            dpatches = lax.dot_general(dy, v_matrix, (((3,), (1,)), ((), ())))
            col2im = jax.linear_transpose(
                lambda x: _slice_patches(x, kernel.shape[:2], geometry), x_struct
            )
            (dx,) = col2im(dpatches)
        else:
            dx = _per_run(lambda dy_, v_: _conv_input_grad(dy_, v_, geometry))(dy, v)
        dw = _per_run(lambda x_, dy_: _conv_kernel_grad(x_, dy_, geometry))(saved_input, dy)
    elif geometry.impl == "xla":
        x = saved_input
        (dx,) = jax.linear_transpose(lambda x_: _conv_xla(x_, v, geometry), x_struct)(dy)
        kernel_struct = jax.ShapeDtypeStruct(kernel.shape, kernel.dtype)
        (dw,) = jax.linear_transpose(lambda k: _conv_xla(x, k, geometry), kernel_struct)(dy)
    else:
        patches = saved_input
        v_matrix = _kernel_to_matrix(v, geometry.impl)
        dpatches = lax.dot_general(dy, v_matrix, (((3,), (1,)), ((), ())))
        col2im = jax.linear_transpose(lambda x: _patches(x, kernel.shape[:2], geometry), x_struct)
        (dx,) = col2im(dpatches)
        dw_matrix = lax.dot_general(patches, dy, (((0, 1, 2), (0, 1, 2)), ((), ())))
        dw = _matrix_to_kernel(dw_matrix, kernel.shape, geometry.impl)

    db = None if bias is None else jnp.sum(dy, axis=(0, 1, 2)).astype(bias.dtype)
    return dx.astype(saved_input.dtype), dw.astype(kernel.dtype), db, None, None


_asym_conv.defvjp(_asym_conv_fwd, _asym_conv_bwd)


def _normalize_pair(value, name):
    if isinstance(value, int):
        return (value, value)
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}.")
    return pair


def _normalize_padding(padding, input_hw, kernel_hw, strides):
    """Return explicit ``((top, bottom), (left, right))`` padding."""
    if isinstance(padding, str):
        if padding.upper() not in ("VALID", "SAME"):
            raise ValueError(
                f"Unknown padding {padding!r}; valid choices: 'VALID', 'SAME', an int, "
                "or ((top, bottom), (left, right))."
            )
        pads = lax.padtype_to_pads(input_hw, kernel_hw, strides, padding.upper())
        return tuple((int(lo), int(hi)) for lo, hi in pads)
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    entries = tuple(padding)
    if len(entries) == 2 and all(isinstance(p, int) for p in entries):
        return tuple((p, p) for p in entries)
    if len(entries) == 2 and all(
        not isinstance(p, int) and len(p) == 2 and all(isinstance(q, int) for q in p)
        for p in entries
    ):
        return tuple((int(p[0]), int(p[1])) for p in entries)
    raise ValueError(
        f"Invalid padding {padding!r}; valid choices: 'VALID', 'SAME', an int, a pair of "
        "ints, or ((top, bottom), (left, right))."
    )


def asym_conv(
    rule: feedback.FeedbackRule,
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    state: jax.Array | None,
    key: jax.Array | None,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    impl: str = "xla_per_run",
) -> jax.Array:
    """Apply a 2-D convolution with the input cotangent sent through V.

    Args:
      rule: feedback rule that builds V in the backward pass.
      x: input, NHWC.
      kernel: W, HWIO, same dtype as ``x``.
      bias: ``(O,)`` in the dtype of ``x``, or ``None``.
      state: the rule's state (``rule.init_state``) if ``rule.has_state``, else ``None``.
      key: PRNG key if ``rule.redraws_per_step``, else ``None``. Only the backward pass uses
        it, so evaluation needs no key.
      strides: an int or ``(stride_h, stride_w)``.
      padding: ``"VALID"``, ``"SAME"``, an int (all sides), ``(pad_h, pad_w)``, or explicit
        ``((top, bottom), (left, right))``, e.g. ``((0, 1), (0, 1))`` pads one row at the
        bottom and one column at the right only.
      impl: ``"patches"`` (sliced patches times the kernel matrix), ``"lax_patches"``
        (``lax.conv_general_dilated_patches`` times the kernel matrix), ``"xla"``
        (``lax.conv_general_dilated`` and JAX's transposes of it) or ``"xla_per_run"``
        (``lax.conv_general_dilated`` in every product, one convolution per run under
        ``jax.vmap``).

    Returns:
      ``y``, NHWC. Its VJP gives ``dx`` as the transposed convolution of ``dy`` with V, the
      ordinary ``dW`` and ``db``, and zero cotangents for ``state`` and ``key``.

    Raises:
      ValueError: for an unknown ``impl`` or ``padding``, or mismatched shapes or dtypes.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"Unknown conv impl {impl!r}; valid choices: {', '.join(CONV_IMPLS)}.")
    if x.ndim != 4 or kernel.ndim != 4 or x.shape[3] != kernel.shape[2]:
        raise ValueError(
            f"asym_conv needs x NHWC and kernel HWIO with matching channels, got x {x.shape} "
            f"and kernel {kernel.shape}."
        )
    if bias is not None and bias.shape != kernel.shape[3:]:
        raise ValueError(f"bias must have shape {kernel.shape[3:]}, got {bias.shape}.")
    _check_dtypes(x, kernel, bias)
    strides = _normalize_pair(strides, "strides")
    input_hw = tuple(x.shape[1:3])
    padding = _normalize_padding(padding, input_hw, tuple(kernel.shape[:2]), strides)
    if any(pad < 0 for pair in padding for pad in pair) or any(st < 1 for st in strides):
        raise ValueError(
            f"padding must be >= 0 and strides >= 1, got padding {padding} and strides {strides}."
        )
    padded_hw = [size + lo + hi for size, (lo, hi) in zip(input_hw, padding, strict=True)]
    if any(size < k for size, k in zip(padded_hw, kernel.shape[:2], strict=True)):
        raise ValueError(
            f"The {kernel.shape[0]}x{kernel.shape[1]} kernel is larger than the padded input "
            f"{padded_hw[0]}x{padded_hw[1]}; use a smaller kernel or more padding."
        )
    geometry = _ConvGeometry(strides, padding, input_hw, tuple(kernel.shape[:2]), impl)
    return _asym_conv(rule, geometry, x, kernel, bias, state, key)


# Flax modules.


def _resolve_rule(rule: feedback.FeedbackRule | str) -> feedback.FeedbackRule:
    return feedback.get_rule(rule) if isinstance(rule, str) else rule


def _feedback_inputs(module: nn.Module, rule: feedback.FeedbackRule, kernel: jax.Array):
    """Return the ``(state, key)`` arguments of the asymmetric op for ``module``.

    The fixed state lives in the ``"feedback"`` collection and is drawn at init from the
    ``"feedback"`` rng stream (flax falls back to ``"params"`` when that stream is absent).
    Per-step rules take a key from the ``"feedback"`` stream only when the caller provides
    it, so evaluation runs without one.
    """
    state = None
    if rule.has_state:
        state = module.variable(
            "feedback", "state", lambda: rule.init_state(module.make_rng("feedback"), kernel)
        ).value
    key = None
    if rule.redraws_per_step and module.has_rng("feedback"):
        key = module.make_rng("feedback")
    return state, key


class AsymDense(nn.Module):
    """Dense layer (drop-in for ``nn.Dense``) whose backward pass uses a feedback rule.

    Attributes:
      features: number of outputs.
      rule: a ``FeedbackRule`` or a rule name; the default is plain backpropagation.
      use_bias: whether to add a bias.
      kernel_init: initializer of the ``(in, features)`` kernel.
      bias_init: initializer of the ``(features,)`` bias.
      dtype: computation dtype; ``None`` infers it from the input and parameters.
      param_dtype: dtype of the parameters and of the feedback state.
    """

    features: int
    rule: feedback.FeedbackRule | str = "symmetric"
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the layer to ``x`` of shape ``(..., in)``."""
        rule = _resolve_rule(self.rule)
        kernel = self.param(
            "kernel", self.kernel_init, (jnp.shape(x)[-1], self.features), self.param_dtype
        )
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        state, key = _feedback_inputs(self, rule, kernel)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return asym_dense(rule, x, kernel, bias, state, key)


class AsymConv(nn.Module):
    """2-D convolution, NHWC (drop-in for ``nn.Conv``), whose backward pass uses a feedback rule.

    Attributes:
      features: number of output channels.
      kernel_size: an int or ``(kh, kw)``.
      strides: an int or ``(stride_h, stride_w)``.
      padding: ``"VALID"``, ``"SAME"``, an int, ``(pad_h, pad_w)`` or
        ``((top, bottom), (left, right))``. Unlike ``nn.Conv`` the default is ``"VALID"``.
      rule: a ``FeedbackRule`` or a rule name; the default is plain backpropagation.
      use_bias: whether to add a bias.
      kernel_init: initializer of the HWIO kernel.
      bias_init: initializer of the ``(features,)`` bias.
      impl: ``"patches"``, ``"lax_patches"``, ``"xla"`` or ``"xla_per_run"``, see
        ``asym_conv``.
      dtype: computation dtype; ``None`` infers it from the input and parameters.
      param_dtype: dtype of the parameters and of the feedback state.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Padding = "VALID"
    rule: feedback.FeedbackRule | str = "symmetric"
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    impl: str = "xla_per_run"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the layer to ``x`` of shape ``(N, H, W, C)`` or ``(H, W, C)``."""
        unbatched = jnp.ndim(x) == 3
        if unbatched:
            x = x[None]
        rule = _resolve_rule(self.rule)
        kernel_hw = _normalize_pair(self.kernel_size, "kernel_size")
        kernel_shape = (*kernel_hw, jnp.shape(x)[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        state, key = _feedback_inputs(self, rule, kernel)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = asym_conv(
            rule,
            x,
            kernel,
            bias,
            state,
            key,
            strides=self.strides,
            padding=self.padding,
            impl=self.impl,
        )
        return y[0] if unbatched else y
