"""Tests for the dataset registry, split protocols, cache and normalisation."""

import dataclasses
import io
import json
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from asym_jax import data, data_cache, data_sources

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
    assert manifest["arrays"]["train_images"] == ["uint8", [4000, 28, 28, 1]]
    assert manifest["key"]["seed"] == 5


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete"])
def test_cache_damage_rebuilds(tmp_path, damage):
    first = data.load_dataset("mnist5k", cache_dir=tmp_path, seed=2)
    npz = next(tmp_path.glob("*.npz"))
    raw = npz.read_bytes()
    if damage == "truncate":
        npz.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip_byte":
        # A byte inside the train_images pixels, the archive's first member.
        npz.write_bytes(raw[:2000] + bytes([raw[2000] ^ 1]) + raw[2001:])
    else:
        npz.unlink()
    rebuilt = data.load_dataset("mnist5k", cache_dir=tmp_path, seed=2)
    np.testing.assert_array_equal(first.train_images, rebuilt.train_images)
    manifest = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert manifest["sha256"] == data_cache.file_sha256(npz)


def test_cache_env_default(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "env_cache"))
    assert data.default_cache_dir() == tmp_path / "env_cache"
    data.load_dataset("mnist5k", seed=0)
    assert len(list((tmp_path / "env_cache").glob("mnist5k-*.npz"))) == 1


# TensorFlow Datasets sources. tfds.testing.mock_data with MockPolicy.USE_CODE serves random
# examples through `as_data_source` without TensorFlow. A tiny builder prepared here as
# array_record covers the real reader and the pooled protocols with text labels. Its images are
# PNG-encoded first, because tfds needs TensorFlow only to encode raw image arrays.

TFDS_NAMES = sorted({spec.location for spec in data.DATASETS.values() if spec.source == "tfds"})


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# People p0..p4 with 2, 3, 4, 5 and 6 images; "p0" can never give 2 train + 1 test.
TINY_FACE_COUNTS = {"p0": 2, "p1": 3, "p2": 4, "p3": 5, "p4": 6}


class TinyFaces(tfds.core.GeneratorBasedBuilder):
    """A face-identification set shaped like tfds's lfw: images with person-name labels."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.Text()}
        )
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        index = 0
        for person, count in TINY_FACE_COUNTS.items():
            for i in range(count):
                # Each image is one flat colour that encodes (person, image), 20x30 pixels.
                colour = np.array([int(person[1]) * 40, i * 30, 200], np.uint8)
                yield index, {"image": _png(np.tile(colour, (20, 30, 1))), "label": person}
                index += 1


@pytest.fixture(scope="module")
def tiny_faces_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    TinyFaces(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir


def _tiny_faces_spec(sampled_classes=3):
    return dataclasses.replace(
        data.DATASETS["lfw_id"],
        location="tiny_faces",
        num_classes=sampled_classes,
        sampled_classes=sampled_classes,
        train_per_class=2,
        test_per_class=1,
    )


def test_tfds_pooled_faces(tiny_faces_dir, tmp_path):
    ds = data.load_dataset(_tiny_faces_spec(), data_dir=tiny_faces_dir, cache_dir=tmp_path)
    assert ds.train_images.shape == (6, 119, 119, 3)
    assert ds.test_images.shape == (3, 119, 119, 3)
    assert ds.train_images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [2, 2, 2])
    np.testing.assert_array_equal(np.bincount(ds.test_labels), [1, 1, 1])
    assert "p0" not in ds.class_names  # 2 images: not eligible for 2 + 1
    assert len(set(ds.class_names)) == 3
    # Flat colours survive the resize, and the red channel identifies the person.
    for images, labels in ((ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)):
        for image, label in zip(images, labels, strict=True):
            assert (image == image[0, 0]).all()
            assert image[0, 0, 0] == int(ds.class_names[label][1]) * 40


def test_tfds_pooled_faces_seeded(tiny_faces_dir, tmp_path):
    spec = _tiny_faces_spec()
    first = data.load_dataset(spec, data_dir=tiny_faces_dir, cache_dir=tmp_path / "a", seed=4)
    again = data.load_dataset(spec, data_dir=tiny_faces_dir, cache_dir=tmp_path / "b", seed=4)
    np.testing.assert_array_equal(first.train_images, again.train_images)
    assert first.class_names == again.class_names
    draws = {
        data.load_dataset(
            spec, data_dir=tiny_faces_dir, cache_dir=tmp_path / "c", seed=s
        ).train_images.tobytes()
        for s in range(4)
    }
    assert len(draws) > 1


def test_tfds_too_few_eligible(tiny_faces_dir, tmp_path):
    with pytest.raises(ValueError, match="needs 5 classes with at least 3 examples"):
        data.load_dataset(_tiny_faces_spec(5), data_dir=tiny_faces_dir, cache_dir=tmp_path)


@pytest.mark.parametrize(
    "name, shape, num_classes",
    [("mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10), ("stl10", (119, 119, 3), 10)],
)
def test_tfds_standard_splits_mocked(name, shape, num_classes, tmp_path):
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = data.load_dataset(name, data_dir=tmp_path / "tfds", cache_dir=tmp_path)
    assert ds.train_images.shape == (12, *shape)
    assert ds.test_images.shape == (12, *shape)
    assert ds.train_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int32
    assert ds.train_labels.min() >= 0
    assert ds.train_labels.max() < num_classes
    assert len(ds.class_names) == num_classes


def test_tfds_flowers102_merges_train_validation(tmp_path):
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = data.load_dataset("flowers102", data_dir=tmp_path / "tfds", cache_dir=tmp_path)
    assert ds.train_images.shape == (10, 119, 119, 3)  # "train" + "validation"
    assert ds.test_images.shape == (5, 119, 119, 3)
    assert ds.num_classes == 102


@pytest.mark.parametrize("tfds_name", TFDS_NAMES)
def test_tfds_unprepared_fails_fast(tfds_name, tmp_path):
    spec = next(s for s in data.DATASETS.values() if s.location == tfds_name)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        data.load_dataset(spec.name, data_dir=tmp_path / "empty", cache_dir=tmp_path)
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    assert repr(tfds_name) in message
    assert "download_and_prepare" in message
    assert "asym_jax[tf]" in message
    assert str(tmp_path / "empty") in message


# Image folders, written here with Pillow.


def _write_image(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_tree(root, counts, grayscale_class=None):
    """Write `root/<class>/<i>.png`; pixel values encode (class, i), sizes vary."""
    for c, (name, count) in enumerate(counts.items()):
        for i in range(count):
            shape = (30 + 7 * i, 45 - 3 * i)
            if name == grayscale_class:
                array = np.full(shape, 10 + 20 * i, np.uint8)
            else:
                array = np.zeros((*shape, 3), np.uint8)
                array[..., 0] = 50 * c
                array[..., 1] = 10 * i
                array[..., 2] = 255
            _write_image(root / name / f"{i:03d}.png", array)


def _folder_spec(num_classes=3, train=4, test=2, **extra):
    return dataclasses.replace(
        data.DATASETS["flowers17"],
        num_classes=num_classes,
        train_per_class=train,
        test_per_class=test,
        **extra,
    )


def test_folder_counts_and_resize(tmp_path):
    _write_tree(tmp_path / "flowers17", {"a": 6, "b": 7, "gray": 6}, grayscale_class="gray")
    ds = data.load_dataset(_folder_spec(), data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert ds.class_names == ("a", "b", "gray")
    assert ds.train_images.shape == (12, 119, 119, 3)
    assert ds.test_images.shape == (6, 119, 119, 3)
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [4, 4, 4])
    np.testing.assert_array_equal(np.bincount(ds.test_labels), [2, 2, 2])
    gray = ds.train_images[ds.train_labels == 2]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    colour = ds.train_images[ds.train_labels == 1]
    assert (colour[..., 0] == 50).all()
    assert (colour[..., 2] == 255).all()
    # Every image of class "b" is used at most once across both splits.
    used = np.concatenate([colour[:, 0, 0, 1], ds.test_images[ds.test_labels == 1][:, 0, 0, 1]])
    assert len(set(used.tolist())) == 6


def test_folder_seeded_determinism(tmp_path):
    _write_tree(tmp_path / "flowers17", {"a": 8, "b": 8, "c": 8})
    spec = _folder_spec()
    load = lambda seed, cache: data.load_dataset(
        spec, data_dir=tmp_path, cache_dir=tmp_path / cache, seed=seed
    )
    first, again, other = load(1, "x"), load(1, "y"), load(2, "z")
    np.testing.assert_array_equal(first.train_images, again.train_images)
    np.testing.assert_array_equal(first.test_labels, again.test_labels)
    assert not np.array_equal(first.train_images, other.train_images)


def test_folder_center_crop(tmp_path):
    # A wide image: red outer bands, blue centre square.
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :10, 0] = 255
    array[:, 30:, 0] = 255
    array[:, 10:30, 2] = 255
    for i in range(3):
        _write_image(tmp_path / "flowers17" / "only" / f"{i}.png", array)
    spec = _folder_spec(num_classes=1, train=2, test=1)
    kwargs = dict(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    cropped = data.load_dataset(spec, resize_mode="center_crop", **kwargs).train_images
    squashed = data.load_dataset(spec, resize_mode="squash", **kwargs).train_images
    assert (cropped[..., 0] == 0).all()
    assert (cropped[..., 2] == 255).all()
    assert (squashed[:, :, 0, 0] == 255).all()


def test_folder_too_small_class(tmp_path):
    _write_tree(tmp_path / "flowers17", {"a": 6, "tiny": 4, "c": 6})
    with pytest.raises(ValueError, match=r"class 'tiny' has 4 examples.*4 train \+ 2 test = 6"):
        data.load_dataset(_folder_spec(), data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_folder_short_test_allowed(tmp_path):
    _write_tree(tmp_path / "flowers17", {"a": 6, "short": 5, "c": 6})
    spec = _folder_spec(short_test_ok=True)
    ds = data.load_dataset(spec, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert ds.class_names == ("a", "c", "short")
    np.testing.assert_array_equal(np.bincount(ds.test_labels), [2, 2, 1])
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [4, 4, 4])


def test_folder_corrupt_image(tmp_path):
    _write_tree(tmp_path / "flowers17", {"a": 6, "b": 6, "c": 6})
    bad = tmp_path / "flowers17" / "b" / "002.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="Failed to decode image .*002.png"):
        data.load_dataset(_folder_spec(), data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_folder_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load_dataset("flowers17", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert str(tmp_path / "flowers17") in str(info.value)
    assert "<root>/<class name>/<image file>" in str(info.value)


def test_folder_flat_directory(tmp_path):
    for i in range(3):
        _write_image(tmp_path / "flowers17" / f"image_{i:04d}.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="image_0000.jpg") as info:
        data.load_dataset("flowers17", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert "<root>/<class name>/<image file>" in str(info.value)


def test_folder_wrong_class_count(tmp_path):
    _write_tree(tmp_path / "flowers17", {"a": 6, "b": 6})
    with pytest.raises(ValueError, match="2 classes with examples, expected 3"):
        data.load_dataset(_folder_spec(), data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_folder_faces_skip_ineligible(tmp_path):
    counts = {"anna": 5, "bob": 2, "cleo": 3, "dev": 9}
    _write_tree(tmp_path / "sufr_w", counts)
    spec = dataclasses.replace(
        data.DATASETS["sufr_w_id"],
        num_classes=3,
        sampled_classes=3,
        train_per_class=2,
        test_per_class=1,
    )
    ds = data.load_dataset(spec, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert ds.class_names == ("anna", "cleo", "dev")


def test_folder_sampled_class_too_small(tmp_path):
    # Caltech256-101 draws classes without looking at their size, so a small one is an error.
    _write_tree(tmp_path / "caltech256", {"001.a": 3, "002.b": 1})
    spec = dataclasses.replace(
        data.DATASETS["caltech256_101"],
        num_classes=2,
        sampled_classes=2,
        train_per_class=2,
        test_per_class=1,
    )
    with pytest.raises(ValueError, match="class '002.b' has 1 examples"):
        data.load_dataset(spec, data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_folder_env_data_dir(tmp_path, monkeypatch):
    _write_tree(tmp_path / "flowers17", {"a": 6, "b": 6, "c": 6})
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    ds = data.load_dataset(_folder_spec(), cache_dir=tmp_path / "cache")
    assert ds.class_names == ("a", "b", "c")


# TIMIT-80 features from an .npz file.


def _timit_spec():
    return dataclasses.replace(
        data.DATASETS["timit80"], num_classes=3, train_per_class=4, test_per_class=2
    )


def test_npz_features(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.array([7, 11, 30]), 8)
    features = rng.normal(size=(24, 1845)).astype(np.float64) + labels[:, None]
    np.savez(tmp_path / "timit80.npz", features=features, labels=labels)
    ds = data.load_dataset(_timit_spec(), data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert ds.architecture == "timit"
    assert ds.train_images.shape == (12, 1845)
    assert ds.train_images.dtype == np.float32
    assert ds.class_names == ("7", "11", "30")
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [4, 4, 4])
    # Rows keep their class: the offset added above is the row's source label.
    source = np.array([7, 11, 30])[ds.train_labels]
    np.testing.assert_allclose(ds.train_images.mean(axis=1), source, atol=0.2)
    assert ds.offset.shape == (1845,)
    x = np.asarray(ds.preprocess(ds.train_images))
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-4)


def test_npz_malformed(tmp_path):
    np.savez(tmp_path / "timit80.npz", features=np.zeros((6, 100), np.float32), labels=np.zeros(6))
    with pytest.raises(ValueError, match=r"'features'.*\(6, 100\).*\(N, 1845\)"):
        data.load_dataset(_timit_spec(), data_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="timit80.npz"):
        data.load_dataset("timit80", data_dir=tmp_path / "none", cache_dir=tmp_path / "cache")


def test_npz_unit_rejected(tmp_path):
    with pytest.raises(ValueError, match="unit"):
        data.load_dataset("timit80", data_dir=tmp_path, normalization="unit")
