"""Which weight initialisation reproduces the paper's MNIST observations?

The paper gives no initialisation. Run the same four conditions under both candidates:

  python -m experiments.main --config=experiments/configs/init_study.py:init=he \\
      --workdir=runs/init_he
  python -m experiments.main --config=experiments/configs/init_study.py:init=normal_0.01 \\
      --workdir=runs/init_normal

The paper's MNIST row to match: SGD trains (0.67%), uSF alone collapses (88.65%), NuSF trains
about as well as SGD (0.60%) and uSF+BN+BM is close to SGD (0.83%). `0.01 * randn` weights
(MatConvNet's examples, the paper's likely software) start slowly with ReLU, so this runs 10
epochs on `mnist5k`.
"""

from experiments.configs import common


def get_config(arg: str | None = None):
    arguments = common.parse_arguments(arg)
    init = arguments.pop("init", "normal_0.01")
    config = common.base_config()
    config.experiment = "init_study"
    config.paper_table = "A"
    config.datasets = ("mnist5k",)
    config.conditions = ("SGD", "uSF", "NuSF", "uSF+BN+BM")
    config.init = init
    config.epochs = 10
    config.lr_boundaries = (8, 9)
    common.apply_arguments(config, ",".join(f"{k}={v}" for k, v in arguments.items()))
    return config
