"""Per-epoch checkpoints of a sweep, so an interrupted cell resumes instead of starting over.

Each cell keeps its checkpoints in `<cell dir>/checkpoints/<epoch>/` through orbax: the
stacked train state of all runs and the metric history so far (JSON). Orbax writes a step
into a temporary directory and renames it when complete, so a process killed during a save
leaves the previous epoch's checkpoint as the latest readable one.
"""

import contextlib
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


@contextlib.contextmanager
def _quiet_orbax():
    """Hide orbax's INFO lines (a dozen per save) while keeping its warnings and errors."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(min(verbosity, logging.WARNING))  # absl: lower is quieter.
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read."""


class CellCheckpointer:
    """Saves and restores one cell's train state and metric history, keyed by epoch."""

    def __init__(self, directory: str, *, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        with _quiet_orbax():
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_epoch(self) -> int | None:
        """Return the last saved epoch (1-based), or None when there is no checkpoint."""
        return self._manager.latest_step()

    def save(self, epoch: int, state: Any, history: dict[str, Any]) -> None:
        """Save the state after `epoch` and block until it is on disk."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history)
        )
        with _quiet_orbax():
            self._manager.save(epoch, args=args)
            self._manager.wait_until_finished()

    def restore(self, epoch: int, like_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restore the state and history saved after `epoch`.

        Args:
          epoch: a saved epoch, usually `latest_epoch()`.
          like_state: a state with the expected structure, shapes, dtypes and shardings.

        Raises:
          CheckpointError: the checkpoint cannot be read or does not match `like_state`
            (written by another configuration or damaged). It is left on disk untouched,
            and this checkpointer is closed.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore()
        )
        try:
            with _quiet_orbax():
                restored = self._manager.restore(epoch, args=args)
        except Exception as error:  # orbax raises many types for unreadable data.
            self.close()
            path = os.path.join(self.directory, str(epoch))
            # Orbax's messages can run to a hundred lines of TensorStore detail: keep the first.
            detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            raise CheckpointError(
                f"Cannot read the checkpoint {path} ({type(error).__name__}: {detail}). "
                "It may come from a different configuration or be damaged. Move it away "
                "or delete the cell's directory to restart that cell from scratch."
            ) from error
        return restored["state"], restored["history"]

    def close(self) -> None:
        with _quiet_orbax():
            self._manager.close()
