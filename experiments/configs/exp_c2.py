"""Experiment C2 (the paper's Table 4, right): clamped-layer controls.

  python -m experiments.main --config=experiments/configs/exp_c2.py --workdir=runs/exp_c2

"Bottom": the last layer keeps its random initial weights and every earlier layer learns;
"Top": every layer but the last keeps its random initial weights and only the last learns.
For SGD, RndF, RndF+BN+BM and uSF+BN+BM on the paper's 15 datasets.

The paper reports (error %, MNIST row): SGD Bottom 0.65 / Top 3.85, RndF Bottom 85.50 / Top
3.81, RndF+BN+BM Bottom 86.74 / Top 3.81, uSF+BN+BM Bottom 0.66 / Top 3.85: random feedback
cannot train the layers below a fixed random top layer, sign feedback can.
"""

from experiments.configs import common


def get_config(arg: str | None = None):
    return common.paper_experiment("C2", "table4_experiment_c2", arg)
