"""The paper's Table 5: the three Batch Manhattan settings, with and without uSF+BN.

  python -m experiments.main --config=experiments/configs/manhattan.py --workdir=runs/bm

Conditions SGD, BM1, BM2, BM3, uSF+BN, uSF+BN+BM1, uSF+BN+BM2, uSF+BN+BM3 on MNIST, CIFAR-10,
CIFAR-100, SVHN, STL-10 and Caltech101. Setting 1 adds momentum to the signed gradient,
setting 2 takes the sign after the momentum (which carries the signed update) and setting 3
takes the sign of an unsigned momentum accumulator.

The paper reports (error %, MNIST row): SGD 0.67, BM1 0.99, BM2 1.30, BM3 1.09, uSF+BN 0.55,
uSF+BN+BM1 0.83, uSF+BN+BM2 0.72, uSF+BN+BM3 0.61: no setting is consistently best.
"""

from experiments.configs import common


def get_config(arg: str | None = None):
    return common.paper_experiment("manhattan", "table5_manhattan_settings", arg)
