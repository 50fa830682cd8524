r"""Write and print an experiment's table in the paper's layout, with plots.

  python -m experiments.report --workdir=runs/quick

Reads every cell result in `<workdir>/results/` and writes `<workdir>/report/`: the table as
Markdown, CSV and text beside the paper's numbers, a learning-curve PNG per cell, and for
Experiment B the error against flip probability. `experiments.main` calls it at the end of a
grid; run it alone to see the table of a grid that is still running or was split over hosts.
"""

import os
import sys

from absl import app, flags

from asym_jax import grid, tables


def _paper_table(paper_table: str) -> tuple[str, str]:
    if paper_table not in tables.EXPERIMENT_TABLES:
        raise ValueError(
            f"Unknown paper_table {paper_table!r}; valid choices: "
            f"{', '.join(tables.EXPERIMENT_TABLES)}."
        )
    return tables.EXPERIMENT_TABLES[paper_table]


def _columns(results, paper: str) -> list[str]:
    """The conditions present in `results`, in the paper table's column order first."""
    present = []
    for result in results:
        if result["condition"] not in present:
            present.append(result["condition"])
    ordered = [label for label in tables.paper_table(paper).columns if label in present]
    return ordered + [label for label in present if label not in ordered]


def _curves(result) -> dict:
    runs = [
        dict(run, status=status["status"])
        for run, status in zip(result["history"]["runs"], result["run_status"], strict=True)
    ]
    return {"epochs": result["history"]["epochs_done"], "runs": runs}


def write_report(results: list[dict], workdir: str, *, paper_table: str = "A") -> str:
    """Write the table files and plots under `<workdir>/report/`; return the table as text."""
    if not results:
        return f"No finished cells in {os.path.join(workdir, grid.RESULTS_DIR)} yet."
    paper, paper_title = _paper_table(paper_table)
    directory = os.path.join(workdir, "report")
    table = tables.build_table(
        results,
        columns=_columns(results, paper),
        paper=paper,
        title=f"Best test error (%), with the paper's {paper_title} in brackets",
    )
    for extension in ("md", "csv", "txt"):
        tables.write_table(table, os.path.join(directory, f"table.{extension}"))

    for result in results:
        if "history" in result:
            name = grid.cell_id(result["dataset"], result["condition"])
            tables.plot_learning_curves(
                _curves(result),
                os.path.join(directory, "curves", name + ".png"),
                title=f"{result['condition']} on {result['dataset']}",
            )
    if paper_table == "B":
        tables.plot_flip_probability(results, os.path.join(directory, "flip_probability.png"))
    return table.text()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    workdir = flags.FLAGS.workdir
    results = grid.load_results(workdir)
    paper_tables = {result.get("paper_table", "A") for result in results} or {"A"}
    if len(paper_tables) > 1:
        print(f"error: results of several experiments in one workdir: {sorted(paper_tables)}")
        sys.exit(2)
    print(write_report(results, workdir, paper_table=paper_tables.pop()))


if __name__ == "__main__":
    # Defined here, not at import, because experiments.main imports this module and defines
    # its own --workdir.
    flags.DEFINE_string("workdir", None, "Directory given to experiments.main.")
    flags.mark_flag_as_required("workdir")
    app.run(main)
