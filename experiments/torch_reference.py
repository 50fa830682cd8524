"""The paper's networks with asymmetric feedback in PyTorch, as a speed reference.

`experiments/benchmark.py` times these against asym_jax on the same network, batch, feedback
rule and update rule. The layers follow `asym_jax.models`: Table 1 of Liao, Leibo & Poggio
(AAAI 2016), weight layer -> optional BN -> ReLU -> pool, layers followed by BN without bias,
max-pools padded with -inf, average pools divided by their cell count inside the input, and
the dense layers reading the features in (H, W, C) order. Kernels keep asym_jax's shapes
where PyTorch allows: dense kernels are (in, out) and convolution kernels are PyTorch's
(out, in, kh, kw), the transpose of asym_jax's HWIO.

The backward pass of every weight layer sends the input gradient through the feedback matrix V
of `asym_jax.feedback` (built from W at every forward pass) and computes the weight and bias
gradients as backpropagation does. PyTorch's max-pool sends the gradient of tied maxima to one
of them, where asym_jax splits it. Ties after a ReLU are at zero, where the gradient is zero
either way.

Requires the `bench` extra (`pip install -e '.[bench]'`).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from asym_jax import feedback, models


def _sign(w: torch.Tensor, sign_of_zero: float) -> torch.Tensor:
    return torch.where(w > 0, 1.0, torch.where(w < 0, -1.0, sign_of_zero)).to(w.dtype)


def feedback_matrix(
    rule: feedback.FeedbackRule, weight: torch.Tensor, state: torch.Tensor | None
) -> torch.Tensor:
    """Return V for `weight` (dense (in, out) or conv (out, in, kh, kw)) under `rule`."""
    if rule.name == "symmetric":
        return weight
    if rule.name == "rndf":
        return state
    signs = _sign(weight, rule.sign_of_zero)
    if rule.name == "usf":
        return signs
    if rule.name == "nusf":
        fan_in = weight.shape[0] if weight.ndim == 2 else math.prod(weight.shape[1:])
        return signs / fan_in
    if rule.redraws_per_step:
        magnitudes = torch.rand_like(weight)
        if rule.name == "brsf_p":
            flips = torch.rand_like(weight) < rule.flip_prob
            magnitudes = torch.where(flips, -magnitudes, magnitudes)
        return magnitudes * signs
    return state * signs


class _AsymLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, v):
        ctx.save_for_backward(x, v)
        ctx.has_bias = bias is not None
        y = x @ weight
        return y + bias if bias is not None else y

    @staticmethod
    def backward(ctx, dy):
        x, v = ctx.saved_tensors
        db = dy.sum(0) if ctx.has_bias else None
        return dy @ v.T, x.T @ dy, db, None


class _AsymConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, v, stride, padding):
        ctx.save_for_backward(x, v)
        ctx.geometry = (stride, padding, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, dy):
        x, v = ctx.saved_tensors
        stride, padding, has_bias = ctx.geometry
        # convolution_backward computes the input gradient with the weight argument (V here)
        # and the weight gradient from the input and dy alone.
        dx, dw, db = torch.ops.aten.convolution_backward(
            dy,
            x,
            v,
            [v.shape[0]] if has_bias else None,
            stride,
            padding,
            [1, 1],
            False,
            [0, 0],
            1,
            [ctx.needs_input_grad[0], True, has_bias],
        )
        return dx, dw, db if has_bias else None, None, None, None


class TorchNetwork(torch.nn.Module):
    """One of `asym_jax.models.ARCHITECTURES` with asymmetric feedback, in PyTorch.

    Args:
      architecture: an `asym_jax.models.Architecture` (convolution networks only).
      rule: the feedback rule of every weight layer.
      bn_mode: "none", "plain" or "affine", as in `asym_jax.models.create_model`.
      bn_momentum: asym_jax's running-average decay (PyTorch's momentum is 1 minus it).
      generator: seeds the weights and the fixed feedback state.
    """

    def __init__(
        self,
        architecture: models.Architecture,
        rule: feedback.FeedbackRule,
        bn_mode: str = "none",
        bn_momentum: float = 0.9,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if len(architecture.input_shape) != 3:
            raise ValueError(f"TorchNetwork needs a convolution network, got {architecture.name}.")
        self.architecture, self.rule, self.bn_mode = architecture, rule, bn_mode
        self.weights = torch.nn.ParameterDict()
        self.biases = torch.nn.ParameterDict()
        self.norms = torch.nn.ModuleDict()
        self.feedback_states = {}
        height, width, channels = architecture.input_shape
        for layer in architecture.layers:
            if isinstance(layer, models.Pool):
                height, width = (
                    models._pool_output_size(size, layer.size, layer.stride, pad)
                    for size, pad in zip((height, width), layer.padding, strict=True)
                )
                continue
            if isinstance(layer, models.Conv):
                shape = (layer.features, channels, layer.size, layer.size)
                height, width = (
                    (size + sum(pad) - layer.size) // layer.stride + 1
                    for size, pad in zip((height, width), layer.padding, strict=True)
                )
                channels = layer.features
            else:
                shape = (height * width * channels, layer.features)
                height = width = 1
                channels = layer.features
            self._add_weight_layer(layer.name, shape, generator)
        self._avg_pool_counts = {}

    def _add_weight_layer(self, name, shape, generator):
        weight = torch.randn(shape, generator=generator) * 0.01
        self.weights[name] = torch.nn.Parameter(weight)
        has_bn = self.bn_mode != "none" and name != models.OUTPUT_LAYER
        if not has_bn:
            self.biases[name] = torch.nn.Parameter(torch.zeros(shape[0 if len(shape) == 4 else 1]))
        else:
            features = shape[0] if len(shape) == 4 else shape[1]
            norm = torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d
            self.norms[name] = norm(features, affine=self.bn_mode == "affine", momentum=0.1)
        if self.rule.has_state:
            if self.rule.name == "rndf":
                state = self.rule.sigma * torch.randn(shape, generator=generator)
            else:
                state = torch.rand(shape, generator=generator)
                if self.rule.name == "frsf_p":
                    flips = torch.rand(shape, generator=generator) < self.rule.flip_prob
                    state = torch.where(flips, -state, state)
            self.register_buffer(f"feedback_{name}", state)
            self.feedback_states[name] = f"feedback_{name}"

    def _state(self, name):
        key = self.feedback_states.get(name)
        return None if key is None else getattr(self, key)

    def _pool(self, layer, x):
        (top, bottom), (left, right) = layer.padding
        if layer.kind == "max":
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom), value=-math.inf)
            return F.max_pool2d(x, layer.size, layer.stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        total = F.avg_pool2d(x, layer.size, layer.stride) * (layer.size * layer.size)
        key = (layer.name, tuple(x.shape[2:]))
        if key not in self._avg_pool_counts:
            in_hw = (x.shape[2] - top - bottom, x.shape[3] - left - right)
            counts = models._valid_cell_counts(in_hw, layer.size, layer.stride, layer.padding)
            self._avg_pool_counts[key] = torch.from_numpy(counts[..., 0]).to(x.device)[:, None]
        return total / self._avg_pool_counts[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits of NCHW images `x` (any memory format)."""
        for layer in self.architecture.layers:
            if isinstance(layer, models.Pool):
                x = self._pool(layer, x)
                continue
            weight = self.weights[layer.name]
            bias = self.biases[layer.name] if layer.name in self.biases else None
            v = feedback_matrix(self.rule, weight, self._state(layer.name))
            if isinstance(layer, models.Conv):
                (top, bottom), (left, right) = layer.padding
                if top != bottom or left != right:
                    raise ValueError(f"{layer.name}: only symmetric convolution padding.")
                x = _AsymConv2d.apply(x, weight, bias, v, [layer.stride] * 2, [top, left])
            else:
                if x.ndim == 4:
                    # (H, W, C) feature order, as asym_jax's NHWC flattening.
                    x = x.permute(0, 2, 3, 1).flatten(1)
                x = _AsymLinear.apply(x, weight, bias, v)
            if layer.name != models.OUTPUT_LAYER:
                if layer.name in self.norms:
                    x = self.norms[layer.name](x)
                x = F.relu(x)
        return x

    def load_jax_variables(self, variables) -> None:
        """Copy the params and feedback state of an asym_jax `Network` into this module."""
        params = variables["params"]
        with torch.no_grad():
            for name, weight in self.weights.items():
                kernel = np.asarray(params[name]["kernel"])
                weight.copy_(torch.from_numpy(_to_torch_layout(kernel)))
                if name in self.biases:
                    self.biases[name].copy_(torch.tensor(np.asarray(params[name]["bias"])))
                if name in self.feedback_states:
                    state = np.asarray(variables["feedback"][name]["state"])
                    getattr(self, self.feedback_states[name]).copy_(
                        torch.from_numpy(_to_torch_layout(state))
                    )
                if name in self.norms and self.bn_mode == "affine":
                    norm_params = params[name + "_bn"]
                    self.norms[name].weight.copy_(torch.tensor(np.asarray(norm_params["scale"])))
                    self.norms[name].bias.copy_(torch.tensor(np.asarray(norm_params["bias"])))

    def gradients_in_jax_layout(self) -> dict[str, dict[str, np.ndarray]]:
        """Return the weight-layer gradients keyed and shaped as asym_jax's params."""
        grads = {}
        for name, weight in self.weights.items():
            grads[name] = {"kernel": _to_jax_layout(weight.grad.numpy())}
            if name in self.biases:
                grads[name]["bias"] = self.biases[name].grad.numpy()
        return grads


def _to_torch_layout(kernel: np.ndarray) -> np.ndarray:
    return np.array(kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel)


def _to_jax_layout(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(2, 3, 1, 0) if kernel.ndim == 4 else kernel


def _update_rule_sign(x: torch.Tensor, sign_of_zero: float) -> torch.Tensor:
    return _sign(x, sign_of_zero) if sign_of_zero else torch.sign(x)


class UpdateRule:
    """`asym_jax.optimizers.update_rule` for settings 0 (SGD) to 3, on a PyTorch module.

    Weight decay applies to the weight-layer kernels only, as asym_jax's default mask does.
    """

    def __init__(
        self,
        network: TorchNetwork,
        setting: int,
        learning_rate: float,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        sign_of_zero: float = 0.0,
    ):
        self.setting, self.learning_rate = setting, learning_rate
        self.momentum, self.weight_decay, self.sign_of_zero = momentum, weight_decay, sign_of_zero
        kernels = {id(p) for p in network.weights.values()}
        self.params = [p for p in network.parameters() if p.requires_grad]
        self.decayed = [id(p) in kernels for p in self.params]
        self.traces = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        """Apply one update from the parameters' `.grad`."""
        for param, decayed, trace in zip(self.params, self.decayed, self.traces, strict=True):
            update = param.grad
            if self.setting:
                update = _update_rule_sign(update, self.sign_of_zero)
            if decayed and self.weight_decay:
                update = update + self.weight_decay * param
            trace.mul_(self.momentum).add_(update)
            if self.setting == 2:
                trace.copy_(_update_rule_sign(trace, -self.sign_of_zero))
            step = trace
            if self.setting == 3:
                step = _update_rule_sign(trace, -self.sign_of_zero)
            param.sub_(self.learning_rate * step)
            param.grad = None


def train_step(
    network: TorchNetwork, update: UpdateRule, images: torch.Tensor, labels: torch.Tensor
) -> float:
    """Run one training step with the summed cross-entropy; return the loss."""
    loss = F.cross_entropy(network(images), labels, reduction="sum")
    loss.backward()
    update.step()
    return float(loss.detach())
