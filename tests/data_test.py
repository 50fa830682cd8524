"""Tests for the dataset registry, split protocols, cache and normalisation."""

import json

import jax
import numpy as np
import pytest

from asym_jax import data, data_sources

PAPER_ROWS = (
    "MNIST", "CIFAR", "CIFAR100", "SVHN", "STL10", "Cal101", "Cal256-101", "iCub", "Flowers17",
    "Flowers102", "PubFig83-ID", "SUFR-W-ID", "LFW-ID", "Scene67", "TIMIT80",
)  # fmt: skip


@pytest.fixture(scope="module")
def mnist5k(tmp_path_factory):
    return data.load_dataset("mnist5k", cache_dir=tmp_path_factory.mktemp("cache"), seed=0)


def test_registry_covers_paper_rows():
    labels = {spec.label for spec in data.DATASETS.values()}
    assert labels == set(PAPER_ROWS)
    assert len(data.DATASETS) == len(PAPER_ROWS) + 1  # plus the offline mnist5k
    assert data.DATASETS["mnist5k"].label == "MNIST"


@pytest.mark.parametrize("name", data.DATASET_NAMES)
def test_registry_entry_consistent(name):
    spec = data.get_spec(name)
    assert spec.name == name
    assert spec.architecture in data.ARCHITECTURE_INPUT_SHAPES
    assert spec.source in data.SOURCES
    if spec.sampled_classes is not None:
        assert spec.sampled_classes == spec.num_classes
    if spec.source != "tfds":
        assert spec.per_class


def test_unknown_name_lists_all():
    with pytest.raises(ValueError, match="nope") as info:
        data.load_dataset("nope")
    for name in data.DATASET_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "kwargs, bad",
    [({"normalization": "zscore"}, "zscore"), ({"resize_mode": "pad"}, "pad")],
)
def test_invalid_option_rejected(kwargs, bad, tmp_path):
    with pytest.raises(ValueError, match=bad):
        data.load_dataset("mnist5k", cache_dir=tmp_path, **kwargs)


def test_mnist5k_shapes_and_balance(mnist5k):
    assert mnist5k.train_images.shape == (4000, 28, 28, 1)
    assert mnist5k.test_images.shape == (1000, 28, 28, 1)
    assert mnist5k.train_images.dtype == np.uint8
    assert mnist5k.train_labels.dtype == np.int32
    assert mnist5k.architecture == "mnist"
    assert mnist5k.num_classes == 10
    np.testing.assert_array_equal(np.bincount(mnist5k.train_labels), [400] * 10)
    np.testing.assert_array_equal(np.bincount(mnist5k.test_labels), [100] * 10)


def test_mnist5k_pixels_are_real_digits(mnist5k):
    images = mnist5k.train_images.astype(np.float64)
    # MNIST's mean intensity is about 33 of 255, and ~80% of its pixels are background.
    assert 25.0 < images.mean() < 42.0
    assert 0.70 < (images == 0).mean() < 0.90
    assert images.max() == 255
    # Stroke centres saturate: a sizeable share of the lit pixels is near white.
    assert (images >= 250).sum() > 0.2 * (images > 0).sum()
    # The border row is almost always background.
    assert mnist5k.train_images[:, 0, :, :].mean() < 1.0


def test_mnist5k_class_means_differ(mnist5k):
    # A "1" has far less ink than a "0"; a shuffled label column would erase this gap.
    ink = [mnist5k.train_images[mnist5k.train_labels == c].mean() for c in range(10)]
    assert ink[1] < 0.7 * ink[0]


def test_mnist5k_train_test_disjoint(mnist5k):
    train = {row.tobytes() for row in mnist5k.train_images}
    test = {row.tobytes() for row in mnist5k.test_images}
    assert len(train & test) < 5  # MNIST has a handful of exact duplicate digits at most.


def test_mnist5k_seed_changes_split(tmp_path, mnist5k):
    same = data.load_dataset("mnist5k", cache_dir=tmp_path / "a", seed=0)
    other = data.load_dataset("mnist5k", cache_dir=tmp_path / "b", seed=1)
    np.testing.assert_array_equal(same.train_images, mnist5k.train_images)
    np.testing.assert_array_equal(same.train_labels, mnist5k.train_labels)
    assert not np.array_equal(other.train_labels, mnist5k.train_labels)
    np.testing.assert_array_equal(np.bincount(other.train_labels), [400] * 10)


def test_standardize_zero_mean_unit_std(mnist5k):
    x = np.asarray(jax.jit(mnist5k.preprocess)(mnist5k.train_images))
    assert x.dtype == np.float32
    assert abs(x.mean()) < 1e-4
    assert abs(x.std() - 1.0) < 1e-4


def test_mean_image_and_unit(tmp_path, mnist5k):
    mean_image = data.load_dataset("mnist5k", cache_dir=tmp_path, normalization="mean_image")
    x = np.asarray(mean_image.preprocess(mean_image.train_images))
    assert mean_image.offset.shape == (28, 28, 1)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-3)  # summed over 4,000 images
    assert x.max() > 200.0  # still in pixel units
    unit = data.load_dataset("mnist5k", cache_dir=tmp_path, normalization="unit")
    y = np.asarray(unit.preprocess(unit.train_images[:10]))
    np.testing.assert_allclose(y, unit.train_images[:10] / 255.0, rtol=1e-6)


def test_input_statistics_match_numpy():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (37, 5, 4, 3), dtype=np.uint8)
    stats = data.input_statistics(images, chunk=8)
    as_float = images.astype(np.float64)
    np.testing.assert_allclose(stats["mean_image"], as_float.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["channel_mean"], as_float.mean((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(stats["channel_std"], as_float.std((0, 1, 2)), rtol=1e-5)


def test_split_validation_stratified(mnist5k):
    train, (images, labels) = data.split_validation(mnist5k, 0.1, seed=3)
    np.testing.assert_array_equal(np.bincount(labels), [40] * 10)
    np.testing.assert_array_equal(np.bincount(train.train_labels), [360] * 10)
    assert images.dtype == np.uint8
    held = {row.tobytes() for row in images}
    kept = {row.tobytes() for row in train.train_images}
    assert len(held & kept) < 5
    assert train.test_images is mnist5k.test_images
    expected = data.input_statistics(train.train_images)["channel_mean"]
    np.testing.assert_allclose(train.offset, expected, rtol=1e-6)
    again, (images_again, _) = data.split_validation(mnist5k, 0.1, seed=3)
    np.testing.assert_array_equal(images, images_again)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_split_validation_bad_fraction(mnist5k, fraction):
    with pytest.raises(ValueError, match="fraction"):
        data.split_validation(mnist5k, fraction)


def _fail(*args, **kwargs):
    raise AssertionError("the source was read although a valid cache exists")


def test_cache_second_load_skips_source(tmp_path, monkeypatch):
    first = data.load_dataset("mnist5k", cache_dir=tmp_path, seed=5)
    monkeypatch.setattr(data_sources, "read_package_pool", _fail)
    second = data.load_dataset("mnist5k", cache_dir=tmp_path, seed=5)
    np.testing.assert_array_equal(first.train_images, second.train_images)
    np.testing.assert_array_equal(first.test_labels, second.test_labels)
    assert first.class_names == second.class_names
    manifest = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert manifest["num_train"] == 4000
    assert manifest["key"]["seed"] == 5


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete"])
def test_cache_damage_rebuilds(tmp_path, damage):
    first = data.load_dataset("mnist5k", cache_dir=tmp_path, seed=2)
    npz = next(tmp_path.glob("*.npz"))
    raw = npz.read_bytes()
    if damage == "truncate":
        npz.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip_byte":
        npz.write_bytes(raw[:-100] + bytes([raw[-100] ^ 1]) + raw[-99:])
    else:
        npz.unlink()
    rebuilt = data.load_dataset("mnist5k", cache_dir=tmp_path, seed=2)
    np.testing.assert_array_equal(first.train_images, rebuilt.train_images)
    manifest = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert manifest["sha256"] == data._file_sha256(npz)


def test_cache_env_default(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "env_cache"))
    assert data.default_cache_dir() == tmp_path / "env_cache"
    data.load_dataset("mnist5k", seed=0)
    assert len(list((tmp_path / "env_cache").glob("mnist5k-*.npz"))) == 1
