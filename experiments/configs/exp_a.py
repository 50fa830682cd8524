"""Experiment A (the paper's Table 2): how much of backpropagation's symmetry is needed.

  python -m experiments.main --config=experiments/configs/exp_a.py --workdir=runs/exp_a

Eleven conditions (SGD, BM, BN, BN+BM, uSF, NuSF, uSF+BM, uSF+BN, uSF+BN+BM, brSF+BN+BM,
frSF+BN+BM) on the paper's 15 datasets, each with the 5-rate sweep over 65 epochs. One
dataset: `--config=experiments/configs/exp_a.py:dataset=mnist`; a few conditions:
`...:dataset=cifar10,conditions=SGD;uSF+BN+BM`.

The paper reports (error %, MNIST row): SGD 0.67, BM 0.99, BN 0.52, BN+BM 0.73, uSF 88.65,
NuSF 0.60, uSF+BM 0.95, uSF+BN 0.55, uSF+BN+BM 0.83, brSF+BN+BM 0.80, frSF+BN+BM 0.91: with
Batch Normalization and Batch Manhattan, sign-concordant feedback is about as good as SGD,
and uSF alone fails on every image dataset.
"""

from experiments.configs import common


def get_config(arg: str | None = None):
    return common.paper_experiment("A", "table2_experiment_a", arg)
