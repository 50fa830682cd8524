"""The paper's Table 6: SGD and Batch Manhattan at batch sizes 100, 30, 10 and 5.

  python -m experiments.main --config=experiments/configs/batch_size.py --workdir=runs/batch

Conditions SGD-<batch> and BM-<batch> on MNIST, CIFAR-10, CIFAR-100, SVHN and STL-10; the
marks compare with SGD-100. Smaller batches mean more steps per epoch, so this grid is the
slowest per epoch.

The paper reports (error %, MNIST row): SGD 0.69 / 0.66 / 0.52 / 0.67 and BM 1.00 / 1.74 /
2.72 / 2.66 for batch 100 / 30 / 10 / 5: Batch Manhattan degrades as the batch shrinks,
because the sign of a small batch's gradient is noisy.
"""

from experiments.configs import common


def get_config(arg: str | None = None):
    return common.paper_experiment("batch", "table6_batch_size", arg)
