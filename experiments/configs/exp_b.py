"""Experiment B (the paper's Table 3): feedback signs that disagree with probability p.

  python -m experiments.main --config=experiments/configs/exp_b.py --workdir=runs/exp_b

Part 1 redraws magnitudes and sign flips every batch (brSF-p<p>+BN+BM), part 2 draws them
once (frSF-p<p>+BN+BM), for p = 1.00, 0.75, 0.50, 0.25 and 0 (plain brSF / frSF), beside SGD,
on the paper's 15 datasets. One part: `--config=experiments/configs/exp_b.py:part=1`. The
report adds a plot of error against p.

The paper reports (error %, MNIST row): brSF-p 7.87 / 8.34 / 7.54 / 1.01 / 0.80 and frSF-p
4.25 / 3.56 / 1.37 / 0.84 / 0.91 for p = 1.00 ... 0: performance degrades as more signs
disagree, and fixed feedback degrades less than feedback redrawn every batch.
"""

from experiments.configs import common


def get_config(arg: str | None = None):
    arguments = common.parse_arguments(arg)
    part = arguments.pop("part", "both")
    if part not in ("1", "2", "both"):
        raise ValueError(f"Invalid part {part!r} for Experiment B; valid choices: 1, 2, both.")
    rest = ",".join(f"{key}={value}" for key, value in arguments.items())
    config = common.paper_experiment("B", "table3_experiment_b", rest)
    if part != "both" and "conditions" not in arguments:
        prefix = "brSF" if part == "1" else "frSF"
        config.conditions = tuple(
            label for label in config.conditions if label == "SGD" or label.startswith(prefix)
        )
    return config
