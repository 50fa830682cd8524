r"""Run an experiment's grid of {dataset x condition} cells and print its table.

  python -m experiments.main --config=experiments/configs/quick.py --workdir=runs/quick

Cells whose result is already in `<workdir>/results/` are skipped and an interrupted cell
resumes from its last checkpoint, so re-running the same command continues the work.
"""

import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from asym_jax import checkpoint, grid
from experiments import report

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
flags.mark_flags_as_required(["config", "workdir"])


def _progress_callback():
    """Return an epoch callback drawing a progress bar when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    import tqdm

    bars = {}

    def on_epoch(event):
        key = id(event["history"])
        if key not in bars:
            bars[key] = tqdm.tqdm(total=event["epochs"], initial=event["epoch"] - 1, unit="epoch")
        bars[key].update(1)
        if event["epoch"] == event["epochs"]:
            bars.pop(key).close()

    return on_epoch


def _exit(message: str, code: int) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config.distributed:
        jax.distributed.initialize()
    try:
        results = grid.run_grid(config, _WORKDIR.value, on_epoch=_progress_callback())
    except FileNotFoundError as error:
        _exit(f"error: {error} Set the data location with --config.data_dir=DIR.", 2)
    except (ValueError, checkpoint.CheckpointError) as error:
        _exit(f"error: {error}", 2)
    except KeyboardInterrupt:
        _exit("Interrupted. Finished epochs are checkpointed: re-run the command to resume.", 130)
    print(report.write_report(results, _WORKDIR.value, paper_table=config.paper_table))
    expected = len(config.datasets) * len(config.conditions)
    if len(results) < expected:
        print(
            f"{len(results)} of {expected} cells are finished; the table shows those "
            "(other shards may still be running)."
        )


if __name__ == "__main__":
    app.run(main)
