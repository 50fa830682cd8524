"""Shared fixtures: small in-memory datasets and a fast training config."""

import numpy as np
import pytest

from asym_jax import data
from experiments.configs import common


def make_dataset(
    num_train: int = 200,
    num_test: int = 100,
    *,
    seed: int = 0,
    constant_label: int | None = None,
) -> data.Dataset:
    """Return a random 28x28x1 ten-class dataset for the MNIST network.

    Labels follow a learnable rule (the brightest of ten image bands) unless `constant_label`
    makes every training label the same class.
    """
    rng = np.random.default_rng(seed)

    def split(count):
        images = rng.integers(0, 256, (count, 28, 28, 1), dtype=np.uint8)
        bands = images[:, :, :20, 0].reshape(count, 28, 10, 2).mean(axis=(1, 3))
        return images, np.argmax(bands, axis=1).astype(np.int32)

    train_images, train_labels = split(num_train)
    test_images, test_labels = split(num_test)
    if constant_label is not None:
        train_labels = np.full_like(train_labels, constant_label)
    return data.Dataset(
        name="synthetic",
        label="MNIST",
        architecture="mnist",
        num_classes=10,
        class_names=tuple(str(c) for c in range(10)),
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        # Uniform pixels in 0-255 have mean 127.5 and standard deviation 73.9.
        normalization="standardize",
        offset=np.full((1,), 127.5, np.float32),
        scale=np.full((1,), 1 / 73.9, np.float32),
        seed=seed,
    )


@pytest.fixture
def small_config():
    """The paper's protocol shrunk to 2 epochs of 4 batches of 50, with 3 learning rates."""
    config = common.base_config()
    config.epochs = 2
    config.batch_size = 50
    config.lr_multipliers = (10.0, 1.0, 0.1)
    config.init = "he"
    config.eval_batch_size = 50
    return config
