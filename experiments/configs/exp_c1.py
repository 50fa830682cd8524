"""Experiment C1 (the paper's Table 4, left): random feedback (RndF) against sign feedback.

  python -m experiments.main --config=experiments/configs/exp_c1.py --workdir=runs/exp_c1

Conditions SGD, RndF, NuSF, BN, RndF+BN, RndF+BM, RndF+BN+BM and uSF+BN+BM on the paper's 15
datasets. RndF is Lillicrap et al.'s feedback alignment: V ~ N(0, 0.05^2), drawn once.

The paper reports (error %, MNIST row): SGD 0.67, RndF 1.81, NuSF 0.60, BN 0.52, RndF+BN
0.83, RndF+BM 1.89, RndF+BN+BM 1.07, uSF+BN+BM 0.83; on the harder datasets random feedback
is far worse than sign-concordant feedback.
"""

from experiments.configs import common


def get_config(arg: str | None = None):
    return common.paper_experiment("C1", "table4_experiment_c1", arg)
