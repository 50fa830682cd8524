"""Tests for the feedback-rule registry: signs, magnitudes, statistics and redraws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asym_jax import feedback

# Dense (in, out) and convolution HWIO kernels; fan-ins 12 and 2 * 3 * 5 = 30.
KERNEL_SHAPES = [(12, 7), (2, 3, 5, 4)]
# 40,000 entries, so a sample fraction has a binomial standard deviation <= 0.0025.
LARGE_SHAPE = (200, 200)
NUM_STD = 5  # Statistical tolerances are 5 standard deviations: false alarms ~ 1 in 1.7 million.
FLIP_PROBS = [0.0, 0.25, 0.5, 0.75, 1.0]
EXPECTED_LABELS = {
    "symmetric": "symmetric",
    "usf": "uSF",
    "nusf": "NuSF",
    "brsf": "brSF",
    "frsf": "frSF",
    "brsf_p": "brSF-p0.25",
    "frsf_p": "frSF-p0.25",
    "rndf": "RndF",
}


def _rule(name, flip_prob=0.25):
    return feedback.get_rule(name, flip_prob=flip_prob if name.endswith("_p") else 0.0)


def _feedback_matrix(rule, kernel, seed=0):
    """Return V for ``kernel`` with the state and key drawn from ``seed``."""
    state_key, step_key = jax.random.split(jax.random.key(seed))
    state = rule.init_state(state_key, kernel)
    return rule.matrix(kernel, state, step_key if rule.redraws_per_step else None)


def _kernel(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def test_sign_of_zero_is_plus_one():
    x = jnp.array([-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0])
    np.testing.assert_array_equal(feedback.sign(x), [-1, -1, 1, 1, 1, 1])


@pytest.mark.parametrize("zero", feedback.SIGN_OF_ZERO_CHOICES)
def test_sign_of_zero_option(zero):
    x = jnp.array([-2.0, -0.0, 0.0, 3.0])
    np.testing.assert_array_equal(feedback.sign(x, zero), [-1, zero, zero, 1])


@pytest.mark.parametrize("zero", feedback.SIGN_OF_ZERO_CHOICES)
def test_rule_sign_of_zero(zero):
    kernel = jnp.array([[-0.5, 0.0], [0.0, 0.25]])
    rule = feedback.get_rule("usf", sign_of_zero=zero)
    np.testing.assert_array_equal(rule.matrix(kernel), [[-1, zero], [zero, 1]])


def test_sign_keeps_dtype():
    assert feedback.sign(jnp.zeros(3, jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("name", feedback.RULE_NAMES)
def test_labels_use_paper_names(name):
    assert _rule(name).label == EXPECTED_LABELS[name]


def test_label_includes_flip_prob():
    assert feedback.get_rule("brsf_p", flip_prob=1.0).label == "brSF-p1"
    assert feedback.get_rule("frsf_p", flip_prob=0.75).label == "frSF-p0.75"


@pytest.mark.parametrize("name", feedback.RULE_NAMES)
def test_rule_kinds(name):
    rule = _rule(name)
    assert rule.redraws_per_step == (name in ("brsf", "brsf_p"))
    assert rule.has_state == (name in ("frsf", "frsf_p", "rndf"))


def test_rules_hashable_and_equal():
    assert feedback.get_rule("usf") == feedback.get_rule("usf")
    assert hash(feedback.get_rule("brsf_p", flip_prob=0.5)) == hash(
        feedback.get_rule("brsf_p", flip_prob=0.5)
    )
    assert feedback.get_rule("brsf_p", flip_prob=0.5) != feedback.get_rule("brsf_p")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="sf"), "'sf'.*symmetric, usf, nusf, brsf, frsf, brsf_p, frsf_p, rndf"),
        (dict(name="uSF-x"), "'usf_x'.*valid choices"),
        (dict(name="brsf_p", flip_prob=-0.1), r"\[0, 1\].*-0\.1"),
        (dict(name="frsf_p", flip_prob=1.5), r"\[0, 1\].*1\.5"),
        (dict(name="brsf", flip_prob=0.5), "0.5.*brsf_p, frsf_p"),
        (dict(name="rndf", sigma=0.0), "sigma.*> 0.*0.0"),
        (dict(name="rndf", sigma=-0.05), "sigma.*> 0.*-0.05"),
        (dict(name="rndf", sigma=float("nan")), "sigma.*nan"),
        (dict(name="usf", sign_of_zero=0.5), "sign_of_zero 0.5.*1.0, -1.0, 0.0"),
    ],
)
def test_get_rule_rejects_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        feedback.get_rule(**kwargs)


@pytest.mark.parametrize("spelling, name", [("uSF", "usf"), ("brSF-p", "brsf_p"), ("RndF", "rndf")])
def test_get_rule_accepts_paper_spelling(spelling, name):
    assert feedback.get_rule(spelling).name == name


def test_constructor_validates_too():
    with pytest.raises(ValueError, match="valid choices"):
        feedback.FeedbackRule("unknown")


@pytest.mark.parametrize("name", feedback.RULE_NAMES)
@pytest.mark.parametrize(
    "shape, dtype", [(KERNEL_SHAPES[0], jnp.float32), (KERNEL_SHAPES[1], jnp.bfloat16)]
)
def test_matrix_shape_and_dtype(name, shape, dtype):
    kernel = _kernel(shape).astype(dtype)
    v = _feedback_matrix(_rule(name), kernel)
    assert v.shape == kernel.shape
    assert v.dtype == kernel.dtype


@pytest.mark.parametrize("name", feedback.RULE_NAMES)
def test_state_only_for_fixed_rules(name):
    rule = _rule(name)
    kernel = _kernel((4, 3))
    state = rule.init_state(jax.random.key(0), kernel)
    if rule.has_state:
        assert state.shape == kernel.shape
    else:
        assert state is None


def test_symmetric_is_kernel():
    kernel = _kernel((5, 4))
    np.testing.assert_array_equal(_feedback_matrix(_rule("symmetric"), kernel), kernel)


@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_usf_is_sign_of_kernel(shape):
    kernel = _kernel(shape).at[(0,) * len(shape)].set(0.0)
    v = _feedback_matrix(_rule("usf"), kernel)
    np.testing.assert_array_equal(v, jnp.where(kernel >= 0, 1.0, -1.0))


@pytest.mark.parametrize("shape, expected_fan_in", list(zip(KERNEL_SHAPES, [12, 30], strict=True)))
def test_nusf_magnitude_is_inverse_fan_in(shape, expected_fan_in):
    kernel = _kernel(shape)
    v = _feedback_matrix(_rule("nusf"), kernel)
    assert feedback.fan_in(shape) == expected_fan_in
    np.testing.assert_array_equal(jnp.abs(v), np.float32(1.0) / np.float32(expected_fan_in))
    np.testing.assert_array_equal(jnp.sign(v), feedback.sign(kernel))


@pytest.mark.parametrize("name", ["brsf", "frsf"])
def test_same_sign_rules_agree_with_kernel(name):
    kernel = _kernel(LARGE_SHAPE)
    v = _feedback_matrix(_rule(name), kernel)
    assert float(jnp.mean(feedback.sign(v) != feedback.sign(kernel))) == 0.0


@pytest.mark.parametrize("name", ["brsf", "frsf", "brsf_p", "frsf_p"])
def test_magnitudes_uniform_in_unit_interval(name):
    v = _feedback_matrix(_rule(name), _kernel(LARGE_SHAPE))
    magnitudes = jnp.abs(v)
    n = magnitudes.size
    assert float(jnp.min(magnitudes)) >= 0.0
    assert float(jnp.max(magnitudes)) <= 1.0
    # U[0, 1] has mean 1/2 and standard deviation 1/sqrt(12).
    assert abs(float(jnp.mean(magnitudes)) - 0.5) < NUM_STD * np.sqrt(1 / 12 / n)


@pytest.mark.parametrize("name", ["brsf_p", "frsf_p"])
@pytest.mark.parametrize("flip_prob", FLIP_PROBS)
def test_flip_fraction_matches_p(name, flip_prob):
    kernel = _kernel(LARGE_SHAPE)
    v = _feedback_matrix(_rule(name, flip_prob), kernel)
    disagree = float(jnp.mean(feedback.sign(v) != feedback.sign(kernel)))
    # The disagreeing fraction is binomial: std sqrt(p (1 - p) / n), exactly 0 at p = 0 or 1.
    tolerance = NUM_STD * np.sqrt(flip_prob * (1 - flip_prob) / kernel.size)
    assert abs(disagree - flip_prob) <= tolerance


@pytest.mark.parametrize("sigma", [0.05, 0.2])
def test_rndf_is_gaussian_with_sigma(sigma):
    rule = feedback.get_rule("rndf", sigma=sigma)
    kernel = _kernel(LARGE_SHAPE)
    v = _feedback_matrix(rule, kernel)
    n = v.size
    # For Gaussian samples the sample std has a relative std of about 1/sqrt(2 n).
    assert abs(float(jnp.std(v)) / sigma - 1) < NUM_STD / np.sqrt(2 * n)
    assert abs(float(jnp.mean(v))) < NUM_STD * sigma / np.sqrt(n)


def test_rndf_ignores_kernel():
    rule = _rule("rndf")
    state = rule.init_state(jax.random.key(0), _kernel((6, 5)))
    v1 = rule.matrix(_kernel((6, 5), seed=1), state)
    v2 = rule.matrix(_kernel((6, 5), seed=2), state)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(v1, state)


@pytest.mark.parametrize("name", ["brsf", "brsf_p"])
def test_per_step_rules_change_with_key(name):
    rule = _rule(name)
    kernel = _kernel((30, 20))
    v1 = rule.matrix(kernel, None, jax.random.key(1))
    v2 = rule.matrix(kernel, None, jax.random.key(2))
    v1_again = rule.matrix(kernel, None, jax.random.key(1))
    assert float(jnp.mean(v1 == v2)) < 0.01
    np.testing.assert_array_equal(v1, v1_again)


@pytest.mark.parametrize("name", ["frsf", "frsf_p", "rndf"])
def test_fixed_rules_ignore_key(name):
    rule = _rule(name)
    kernel = _kernel((30, 20))
    state = rule.init_state(jax.random.key(0), kernel)
    v1 = rule.matrix(kernel, state, jax.random.key(1))
    v2 = rule.matrix(kernel, state, jax.random.key(2))
    np.testing.assert_array_equal(v1, v2)


@pytest.mark.parametrize("name", ["frsf", "frsf_p"])
def test_fixed_sign_rules_follow_kernel_sign(name):
    rule = _rule(name)
    kernel = _kernel((30, 20))
    state = rule.init_state(jax.random.key(0), kernel)
    np.testing.assert_array_equal(rule.matrix(-kernel, state), -rule.matrix(kernel, state))


@pytest.mark.parametrize("name", ["frsf", "frsf_p", "rndf"])
def test_fixed_state_differs_between_keys(name):
    rule = _rule(name)
    kernel = _kernel((30, 20))
    state1 = rule.init_state(jax.random.key(1), kernel)
    state2 = rule.init_state(jax.random.key(2), kernel)
    assert float(jnp.mean(state1 == state2)) < 0.01


def test_matrix_requires_key_for_per_step_rules():
    with pytest.raises(ValueError, match="brSF.*PRNG key.*None"):
        _rule("brsf").matrix(_kernel((3, 2)), None, None)


def test_matrix_requires_state_for_fixed_rules():
    with pytest.raises(ValueError, match="RndF.*state.*None"):
        _rule("rndf").matrix(_kernel((3, 2)), None, None)


@pytest.mark.parametrize("name", feedback.RULE_NAMES)
def test_matrix_under_jit_and_vmap(name):
    rule = _rule(name)
    kernels = _kernel((3, 8, 6))
    keys = jax.random.split(jax.random.key(0), 3)
    states = jax.vmap(rule.init_state)(keys, kernels) if rule.has_state else None
    step_keys = jax.random.split(jax.random.key(1), 3) if rule.redraws_per_step else None
    batched = jax.jit(jax.vmap(rule.matrix))(kernels, states, step_keys)
    for i in range(3):
        state = None if states is None else states[i]
        key = None if step_keys is None else step_keys[i]
        np.testing.assert_array_equal(batched[i], rule.matrix(kernels[i], state, key))


def test_uniform_magnitudes_on_their_grid_and_odd_sizes():
    u = feedback.uniform_magnitudes(jax.random.key(0), (3, 7, 5))
    assert u.shape == (3, 7, 5)
    assert u.dtype == jnp.float32
    levels = np.asarray(u, np.float64) * 2**23 - 0.5
    np.testing.assert_array_equal(levels, np.round(levels))
    assert levels.min() >= 0
    assert levels.max() <= 2**23 - 1
    assert len(np.unique(np.asarray(u))) == u.size  # 105 draws from 2**23 levels.
    # The largest level stays below 1 in float32.
    assert float(np.float32((2**23 - 0.5) * 2.0**-23)) < 1.0


def test_uniform_magnitudes_statistics():
    n = 1_000_000
    u = np.asarray(feedback.uniform_magnitudes(jax.random.key(0), (n,)), np.float64)
    assert abs(u.mean() - 0.5) < NUM_STD * np.sqrt(1 / 12 / n)
    # The variance 1/12 of U(0, 1); the sample variance has std sqrt(1/180 / n).
    assert abs(u.var() - 1 / 12) < NUM_STD * np.sqrt(1 / 180 / n)
    # Neighbours in memory (rows of a kernel) and across keys are uncorrelated: the sample
    # correlation of independent pairs has std 1/sqrt(n).
    other = np.asarray(feedback.uniform_magnitudes(jax.random.key(1), (n,)), np.float64)
    for a, b in ((u[:-1], u[1:]), (u[:-2], u[2:]), (u, other)):
        assert abs(np.corrcoef(a, b)[0, 1]) < NUM_STD / np.sqrt(n)
    # Ten equal bins hold n/10 each, within binomial tolerances.
    counts = np.bincount((u * 10).astype(int), minlength=10)
    assert np.all(np.abs(counts - n / 10) < NUM_STD * np.sqrt(n * 0.1 * 0.9))


def test_uniform_magnitudes_under_vmap_equal_single_draws():
    keys = jax.random.split(jax.random.key(0), 6).reshape(2, 3)

    def draw(key):
        return feedback.uniform_magnitudes(key, (4, 5))

    singles = np.stack([[draw(k) for k in row] for row in keys])
    np.testing.assert_array_equal(jax.jit(jax.vmap(jax.vmap(draw)))(keys), singles)
    np.testing.assert_array_equal(jax.lax.map(jax.vmap(draw), keys), singles)
    # A shared key under vmap stays one draw.
    shared = jax.vmap(lambda _: draw(keys[0, 0]))(jnp.arange(2))
    np.testing.assert_array_equal(shared, np.stack([singles[0, 0]] * 2))


@pytest.mark.parametrize("name", ["brsf_p", "frsf_p"])
def test_flipped_and_kept_magnitudes_are_both_uniform(name):
    kernel = jnp.ones(LARGE_SHAPE)
    v = np.asarray(_feedback_matrix(_rule(name, 0.25), kernel))
    for part in (np.abs(v[v < 0]), v[v > 0]):
        assert abs(part.mean() - 0.5) < NUM_STD * np.sqrt(1 / 12 / part.size)
        assert part.min() >= 0.0
        assert part.max() <= 1.0
