"""Feedback rules: how the backward-pass matrix V is made from the forward weights W.

Liao, Leibo & Poggio, "How Important is Weight Symmetry in Backpropagation?" (AAAI 2016)
replace W by a feedback matrix V in the backward pass, so a layer with forward output
``y = x W`` sends ``dE/dx = dE/dy V^T`` to the layer below. Their rules, with
``M ~ U(0, 1)`` elementwise magnitudes and ``S_p`` elementwise signs that are -1 with
probability p and +1 otherwise:

==========  ==========================  =====================================
rule        V                           randomness
==========  ==========================  =====================================
symmetric   W                           none (ordinary backpropagation)
uSF         sign(W)                     none, follows W every step
NuSF        sign(W) / fan_in            none, follows W every step
brSF        M * sign(W)                 M redrawn every step (needs a key)
frSF        M * sign(W)                 M drawn once (state)
brSF-p      M * S_p * sign(W)           M and S_p redrawn every step
frSF-p      M * S_p * sign(W)           M and S_p drawn once (state)
RndF        N(0, sigma^2)               drawn once (state), sigma = 0.05
==========  ==========================  =====================================

``sign(0) = +1`` by default (``sign_of_zero``), because the paper defines sign with the values
-1 and +1 only. For frSF and frSF-p the state contains the fixed multiplier ``M * S_p`` and V
follows the current sign of W, so V keeps agreeing in sign with W as W changes sign during
training.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

RULE_NAMES = ("symmetric", "usf", "nusf", "brsf", "frsf", "brsf_p", "frsf_p", "rndf")

_LABELS = {
    "symmetric": "symmetric",
    "usf": "uSF",
    "nusf": "NuSF",
    "brsf": "brSF",
    "frsf": "frSF",
    "brsf_p": "brSF-p",
    "frsf_p": "frSF-p",
    "rndf": "RndF",
}
_PER_STEP_RULES = ("brsf", "brsf_p")
_STATEFUL_RULES = ("frsf", "frsf_p", "rndf")
_FLIP_RULES = ("brsf_p", "frsf_p")

DEFAULT_SIGMA = 0.05
SIGN_OF_ZERO_CHOICES = (1.0, -1.0, 0.0)


def sign(x: jax.Array, zero: float = 1.0) -> jax.Array:
    """Return +1 where ``x > 0``, -1 where ``x < 0`` and ``zero`` elsewhere, in x's dtype.

    With the default ``zero=1.0``, unlike ``jnp.sign``, the result is never 0, so every
    feedback entry has a sign. Both +0.0 and -0.0, and NaN, map to ``zero``.
    """
    return jnp.where(x > 0, 1, jnp.where(x < 0, -1, zero)).astype(x.dtype)


def fan_in(kernel_shape: tuple[int, ...]) -> int:
    """Return the fan-in of a dense ``(in, out)`` or convolution ``HWIO`` kernel shape."""
    return math.prod(kernel_shape[:-1])


# Magnitudes have 23 random bits, so that (k + 1/2) / 2**23 is exact in float32 and below 1.
_UNIFORM_BITS = 23
_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio, odd: i * _GOLDEN visits every uint32 once.


def _mix32(h: jax.Array) -> jax.Array:
    """Apply MurmurHash3's 32-bit finaliser, a bijection of uint32 that mixes all bits."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def uniform_magnitudes(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Return draws from U(0, 1) on the grid ``(k + 1/2) / 2**23``, k = 0 .. 2**23 - 1.

    Entry i is a counter-based hash of i and 64 bits drawn from ``key``:
    ``mix(mix(i * golden + s0) ^ s1)`` with MurmurHash3's finaliser ``mix``, keeping the top 23
    bits. It is a handful of integer operations per entry that XLA fuses with the product
    by ``sign(W)``, about a tenth of the cost of ``jax.random.uniform`` on CPU. That matters
    for brSF and brSF-p, which draw one magnitude per weight at every step. Being elementwise,
    it gives every run of a ``jax.vmap`` the values it gets alone. The tests check the mean,
    the variance, neighbour correlations and independence across keys.
    """
    s0, s1 = jax.random.bits(key, (2,), jnp.uint32)
    counter = lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    words = _mix32(_mix32(counter * jnp.uint32(_GOLDEN) + s0) ^ s1)
    levels = (words >> (32 - _UNIFORM_BITS)).astype(jnp.float32)
    return ((levels + 0.5) * 2.0**-_UNIFORM_BITS).astype(dtype)


def _magnitudes_and_flips(rule: "FeedbackRule", key: jax.Array, kernel: jax.Array) -> jax.Array:
    """Draw ``M`` (times ``S_p`` for the ``*_p`` rules) with the shape and dtype of kernel.

    ``M`` and ``S_p`` come from one uniform draw u: the sign is flipped where ``u < p``, and
    the magnitude is u rescaled to (0, 1) within its part, ``u / p`` or ``(u - p) / (1 - p)``,
    which is uniform and independent of the flip.
    """
    u = uniform_magnitudes(key, kernel.shape)
    if rule.name not in _FLIP_RULES:
        return u.astype(kernel.dtype)
    p = rule.flip_prob
    if p == 0.0:
        return u.astype(kernel.dtype)
    if p == 1.0:
        return (-u).astype(kernel.dtype)
    flipped = u < p
    m = jnp.where(flipped, u * (-1 / p), (u - p) * (1 / (1 - p)))
    return m.astype(kernel.dtype)


@dataclasses.dataclass(frozen=True)
class FeedbackRule:
    """A feedback rule; hashable, so it can be a static argument of jitted functions.

    Attributes:
      name: one of ``RULE_NAMES``.
      flip_prob: p, the probability that a feedback sign disagrees with the forward sign.
        Only ``brsf_p`` and ``frsf_p`` accept a non-zero value.
      sigma: standard deviation of the RndF feedback entries; the other rules ignore it.
      sign_of_zero: the value of sign(0) in the rules built from sign(W), one of
        ``SIGN_OF_ZERO_CHOICES``. The paper gives sign only the values -1 and +1, hence the
        default +1; 0 follows ``jnp.sign`` and sends no feedback through zero weights.
    """

    name: str
    flip_prob: float = 0.0
    sigma: float = DEFAULT_SIGMA
    sign_of_zero: float = 1.0

    def __post_init__(self):
        if self.name not in RULE_NAMES:
            raise ValueError(
                f"Unknown feedback rule {self.name!r}; valid choices: {', '.join(RULE_NAMES)}."
            )
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob!r}.")
        if self.flip_prob != 0.0 and self.name not in _FLIP_RULES:
            raise ValueError(
                f"flip_prob={self.flip_prob!r} is only valid for the rules "
                f"{', '.join(_FLIP_RULES)}, not {self.name!r}."
            )
        if not self.sigma > 0.0:
            raise ValueError(f"sigma must be > 0, got {self.sigma!r}.")
        if self.sign_of_zero not in SIGN_OF_ZERO_CHOICES:
            raise ValueError(
                f"Invalid sign_of_zero {self.sign_of_zero!r}; valid choices: "
                f"{', '.join(map(str, SIGN_OF_ZERO_CHOICES))}."
            )

    @property
    def redraws_per_step(self) -> bool:
        """Whether V is redrawn every step, so ``matrix`` needs a fresh key each step."""
        return self.name in _PER_STEP_RULES

    @property
    def has_state(self) -> bool:
        """Whether the rule keeps a state drawn once by ``init_state``."""
        return self.name in _STATEFUL_RULES

    @property
    def label(self) -> str:
        """The paper's name of the rule, e.g. ``uSF`` or ``brSF-p0.25``."""
        if self.name in _FLIP_RULES:
            return f"{_LABELS[self.name]}{self.flip_prob:g}"
        return _LABELS[self.name]

    def init_state(self, key: jax.Array, kernel: jax.Array) -> jax.Array | None:
        """Draw the fixed feedback state of a layer.

        Args:
          key: PRNG key.
          kernel: the forward kernel; only its shape and dtype are used.

        Returns:
          The multiplier ``M * S_p`` for frSF-p (``M`` for frSF) or the feedback matrix V
          itself for RndF, with the shape and dtype of ``kernel``. ``None`` for rules without
          state.
        """
        if self.name in ("frsf", "frsf_p"):
            return _magnitudes_and_flips(self, key, kernel)
        if self.name == "rndf":
            return self.sigma * jax.random.normal(key, kernel.shape, kernel.dtype)
        return None

    def matrix(
        self, kernel: jax.Array, state: jax.Array | None = None, key: jax.Array | None = None
    ) -> jax.Array:
        """Build the feedback matrix V for ``kernel``.

        Args:
          kernel: the forward kernel W, dense ``(in, out)`` or convolution ``HWIO``.
          state: the output of ``init_state`` for rules with state, else ignored.
          key: a PRNG key for rules that redraw every step, else ignored.

        Returns:
          V with the shape and dtype of ``kernel``.

        Raises:
          ValueError: if the rule needs a state or key and it is ``None``.
        """
        if self.has_state and state is None:
            raise ValueError(f"Feedback rule {self.label} needs its state, got None.")
        if self.redraws_per_step and key is None:
            raise ValueError(
                f"Feedback rule {self.label} redraws V every step and needs a PRNG key, got "
                "None. In a flax module, pass rngs={'feedback': key} to apply."
            )
        if self.name == "symmetric":
            return kernel
        if self.name == "rndf":
            return state.astype(kernel.dtype)
        signs = sign(kernel, self.sign_of_zero)
        if self.name == "usf":
            return signs
        if self.name == "nusf":
            return signs / fan_in(kernel.shape)
        if self.redraws_per_step:
            return _magnitudes_and_flips(self, key, kernel) * signs
        return state.astype(kernel.dtype) * signs


def get_rule(
    name: str,
    *,
    flip_prob: float = 0.0,
    sigma: float = DEFAULT_SIGMA,
    sign_of_zero: float = 1.0,
) -> FeedbackRule:
    """Return the feedback rule ``name`` (one of ``RULE_NAMES``).

    Args:
      name: rule name, e.g. ``"usf"`` or ``"brsf_p"``. The paper's spelling is accepted too
        (``"uSF"``, ``"brSF-p"``, ``"RndF"``): case is ignored and ``-`` reads as ``_``.
      flip_prob: p, the sign-flip probability of ``brsf_p`` and ``frsf_p``.
      sigma: standard deviation of RndF feedback entries.
      sign_of_zero: the value of sign(0), one of ``SIGN_OF_ZERO_CHOICES``.

    Raises:
      ValueError: for an unknown name, ``flip_prob`` outside [0, 1] or given to a rule
        without sign flips, ``sigma <= 0``, or an invalid ``sign_of_zero``.
    """
    if isinstance(name, str):
        name = name.strip().lower().replace("-", "_")
    return FeedbackRule(
        name=name,
        flip_prob=float(flip_prob),
        sigma=float(sigma),
        sign_of_zero=float(sign_of_zero),
    )
