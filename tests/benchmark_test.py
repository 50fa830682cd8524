"""Tests of the speed benchmark's pieces (its PyTorch reference: torch_reference_test.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from asym_jax import models
from experiments import benchmark


def test_training_flops_of_mnist_network():
    architecture = models.get_architecture("mnist", 10)
    # conv1 24x24x20 outputs of 5x5x1, conv2 8x8x50 of 5x5x20, FC 800x500 and 500x10; the
    # first layer has no input gradient.
    macs = [24 * 24 * 20 * 25, 8 * 8 * 50 * 500, 800 * 500, 500 * 10]
    expected = 2 * macs[0] * 2 + sum(2 * m * 3 for m in macs[1:])
    assert benchmark.training_flops(architecture) == expected


def test_synthetic_dataset_fits_network():
    dataset = benchmark.synthetic_dataset("cifar", 7)
    assert dataset.train_images.shape == (7, 32, 32, 3)
    assert dataset.train_images.dtype == np.uint8
    assert set(np.unique(dataset.train_labels)) <= set(range(10))


def test_epoch_and_step_loop_train_alike():
    dataset = benchmark.synthetic_dataset("mnist", 2 * benchmark.BATCH)
    epoch_call, compile_seconds = benchmark.jax_epoch_call("uSF+BN", dataset, 2, 2, "")
    loop_call = benchmark.jax_step_loop_call("uSF+BN", dataset, 2, 2, "")
    # Same initial state and batch order: the (steps, runs) losses agree up to the rounding
    # of two XLA programs (plain SGD, whose updates do not amplify it as signs do).
    np.testing.assert_allclose(loop_call(), epoch_call(), rtol=1e-5)
    assert compile_seconds > 0
    seconds = benchmark.time_variants({"epoch": epoch_call, "loop": loop_call}, repeats=1)
    assert all(s > 0 for s in seconds.values())


def test_summary_table_from_a_measured_item():
    result = benchmark.bench_architecture("mnist", ["epoch"], 1, 2, "", peak=100.0)
    report = {"architectures": {"mnist": result}}
    rows = benchmark.summary_markdown(report).splitlines()
    assert len(rows) == 4  # Header, rule, one network, targets.
    cells = [cell.strip() for cell in rows[2].strip("|").split("|")]
    assert cells[0] == "mnist"
    assert float(cells[1]) == pytest.approx(13.2, abs=0.05)
    for unmeasured in (cells[2], cells[3], cells[5], cells[6]):
        assert unmeasured == "-"
    assert float(cells[4]) == pytest.approx(result["epoch"]["ratio"], abs=0.005)
    assert rows[3].startswith("| target |")


@pytest.mark.parametrize(
    "argument,message",
    [
        ("--items=feedbak", "Unknown items ['feedbak']"),
        ("--conv_impl=fast", "Invalid --conv_impl=fast"),
        ("--output=/no/such/folder/b.json", "Cannot write --output"),
        ("--from_json=/no/such/file.json", "Cannot read --from_json"),
    ],
)
def test_invalid_flags_fail_before_measuring(argument, message):
    completed = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", "--architectures=mnist", argument],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode != 0
    assert message in completed.stderr
    assert "matmul peak" not in completed.stdout
