"""Result tables in the layout of Liao, Leibo & Poggio (AAAI 2016), and plots of results.

A table has one row per dataset and one column per condition. Each cell is the best error
in percent with two decimals, as in the paper, followed by

* ``+`` if it is at least 3 points better than the baseline (``SGD``) of the same row and
  ``-`` if it is at least 3 points worse (the paper colours these cells blue and yellow),
* ``*`` if its best learning rate lies at an edge of the learning-rate grid,
* the run status in parentheses when it is not ``ok``, e.g. ``88.65- (collapsed)``,
* the paper's number in brackets, marked against the paper's baseline the same way.

With several seeds a cell shows ``mean±std`` of the per-seed best errors (sample standard
deviation). The paper's tables are packaged as CSV files (``PAPER_TABLES``); they agree
wherever a condition appears in more than one table.

Inputs are plain dicts, one per {dataset, condition} cell::

    {"dataset": "mnist5k", "paper_row": "MNIST", "condition": "uSF+BN",
     "best_error": 0.0123,            # a fraction, or a list with one per seed
     "best_error_per_seed": [...],    # optional; used when best_error is one number
     "status": "ok",                  # or "diverged", "collapsed"...; or one per seed
     "edge_lr": False,                # or one per seed
     "selection": "test",             # or "validation"
     "seed": 0}                       # optional; cells with distinct seeds are combined

Plots need matplotlib, imported only when a plot function is called.
"""

import collections
import csv
import dataclasses
import functools
import importlib.resources
import io
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from asym_jax import conditions

PAPER_TABLES = (
    "table2_experiment_a",
    "table3_experiment_b",
    "table4_experiment_c1",
    "table4_experiment_c2",
    "table5_manhattan_settings",
    "table6_batch_size",
)
# The paper table that each experiment (`config.paper_table`) reproduces, and its title.
EXPERIMENT_TABLES = {
    "A": ("table2_experiment_a", "Table 2 (Experiment A)"),
    "B": ("table3_experiment_b", "Table 3 (Experiment B)"),
    "C1": ("table4_experiment_c1", "Table 4 (Experiment C1)"),
    "C2": ("table4_experiment_c2", "Table 4 (Experiment C2)"),
    "manhattan": ("table5_manhattan_settings", "Table 5 (Batch Manhattan settings)"),
    "batch": ("table6_batch_size", "Table 6 (batch sizes)"),
}
# Baseline of the +/- marks: SGD in every paper table except the batch-size table.
PAPER_BASELINES = {"table6_batch_size": "SGD-100"}
SELECTION_PROTOCOLS = {
    "test": "lowest test error over all epochs and runs, as the paper",
    "validation": "learning rate and epoch chosen on a held-out validation split",
}
BETTER_MARK = "+"
WORSE_MARK = "-"
EDGE_MARK = "*"
MARK_THRESHOLD = 3.0
OK_STATUS = "ok"

# Cell text of a condition with no result for a dataset.
_MISSING = "n/a"
_LONG_CSV_FIELDS = (
    "dataset",
    "paper_row",
    "condition",
    "error_mean",
    "error_std",
    "num_seeds",
    "errors",
    "status",
    "edge_lr",
    "mark",
    "paper_error",
    "paper_mark",
    "selection",
)


@dataclasses.dataclass(frozen=True)
class PaperTable:
    """One result table of the paper.

    Attributes:
      name: file stem, one of ``PAPER_TABLES``.
      columns: condition labels as the paper prints them.
      rows: dataset names as the paper prints them (``MNIST``, ``Cal101``...).
      errors: error rates in percent, ``errors[i][j]`` for ``rows[i]`` and ``columns[j]``.
    """

    name: str
    columns: tuple[str, ...]
    rows: tuple[str, ...]
    errors: tuple[tuple[float, ...], ...]

    def value(self, row: str, condition: "str | conditions.Condition") -> float | None:
        """Return the paper's error (%) of ``condition`` on ``row``, or None if absent.

        Conditions match by their components, so ``BM`` finds the ``BM1`` column.
        """
        if row not in self.rows:
            return None
        target = _as_condition(condition)
        for j, column in enumerate(self.columns):
            if conditions.parse(column) == target:
                return self.errors[self.rows.index(row)][j]
        return None


@functools.cache
def paper_table(name: str) -> PaperTable:
    """Load the packaged paper table ``name`` (one of ``PAPER_TABLES``).

    Raises:
      ValueError: for an unknown name.
    """
    if name not in PAPER_TABLES:
        raise ValueError(f"Unknown paper table {name!r}; valid choices: {', '.join(PAPER_TABLES)}.")
    resource = importlib.resources.files("asym_jax") / "paper_tables" / f"{name}.csv"
    header, *lines = list(csv.reader(io.StringIO(resource.read_text(encoding="utf-8"))))
    return PaperTable(
        name=name,
        columns=tuple(header[1:]),
        rows=tuple(line[0] for line in lines),
        errors=tuple(tuple(float(x) for x in line[1:]) for line in lines),
    )


def paper_value(
    row: str, condition: "str | conditions.Condition", table: str | None = None
) -> float | None:
    """Return the paper's error (%) of ``condition`` on dataset row ``row``.

    Args:
      row: the paper's dataset name, e.g. ``"MNIST"``.
      condition: a label or ``Condition``.
      table: a name from ``PAPER_TABLES`` to search, or None to search them all in order.
        The paper's tables agree wherever they overlap, so the order does not matter.

    Returns:
      The error in percent, or None if the paper has no such cell.
    """
    for name in PAPER_TABLES if table is None else (table,):
        value = paper_table(name).value(row, condition)
        if value is not None:
            return value
    return None


def _as_condition(condition: "str | conditions.Condition") -> conditions.Condition:
    if isinstance(condition, conditions.Condition):
        return condition
    return conditions.parse(condition)


def _per_seed(value: Any, count: int, name: str, where: str) -> tuple:
    """Broadcast a scalar field of a result to one entry per seed."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f"{name} of {where} has {len(value)} entries but best_error has {count}."
            )
        return tuple(value)
    return (value,) * count


@dataclasses.dataclass(frozen=True)
class _SeedResults:
    """Per-seed best errors (%), statuses and edge flags of one cell."""

    errors: tuple[float, ...]
    statuses: tuple[str, ...]
    edges: tuple[bool, ...]


def _seed_results(record: Mapping[str, Any]) -> _SeedResults:
    where = f"{record['dataset']!r} / {record['condition']!r}"
    raw = record["best_error"]
    if not isinstance(raw, (list, tuple)) and record.get("best_error_per_seed"):
        raw = record["best_error_per_seed"]
    raw = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    errors = tuple(math.nan if x is None else 100.0 * float(x) for x in raw)
    statuses = _per_seed(record.get("status", OK_STATUS), len(errors), "status", where)
    edges = _per_seed(record.get("edge_lr", False), len(errors), "edge_lr", where)
    return _SeedResults(errors, tuple(str(s) for s in statuses), tuple(bool(e) for e in edges))


def _combine_seeds(records: list[Mapping[str, Any]]) -> _SeedResults:
    """Concatenate the records of one cell, which must come from distinct seeds."""
    seeds = [record.get("seed") for record in records]
    if len(records) > 1 and (None in seeds or len(set(seeds)) != len(seeds)):
        first = records[0]
        raise ValueError(
            f"{len(records)} results for dataset {first['dataset']!r} and condition "
            f"{first['condition']!r} without distinct 'seed' values: {seeds}. Give each "
            "seed's result a distinct 'seed', or keep only one result per cell."
        )
    parts = [_seed_results(record) for record in records]
    return _SeedResults(
        errors=sum((p.errors for p in parts), ()),
        statuses=sum((p.statuses for p in parts), ()),
        edges=sum((p.edges for p in parts), ()),
    )


def _better_of(runs: list[_SeedResults]) -> _SeedResults:
    """Pick, seed by seed, the run with the lower best error (NaN loses)."""
    if len({len(run.errors) for run in runs}) != 1:
        raise ValueError(
            "Cannot pick the better batch-size variant seed by seed: the variants have "
            f"{[len(r.errors) for r in runs]} seeds. Run every variant with the same seeds."
        )
    picked = []
    for i in range(len(runs[0].errors)):
        keyed = [
            (math.inf if math.isnan(r.errors[i]) else r.errors[i], n) for n, r in enumerate(runs)
        ]
        picked.append(runs[min(keyed)[1]])
    return _SeedResults(
        errors=tuple(r.errors[i] for i, r in enumerate(picked)),
        statuses=tuple(r.statuses[i] for i, r in enumerate(picked)),
        edges=tuple(r.edges[i] for i, r in enumerate(picked)),
    )


@dataclasses.dataclass(frozen=True)
class Cell:
    """One table cell: a condition's results on one dataset, and the paper's number.

    Attributes:
      errors: best error (%) of each seed; NaN where a seed has no finite error.
      statuses: status of each seed (``"ok"``, ``"diverged"``, ``"collapsed"``...).
      edge_lr: whether any seed's best learning rate is at an edge of the grid.
      mark: ``BETTER_MARK``, ``WORSE_MARK`` or ``""`` against this row's baseline.
      paper_error: the paper's error (%), or None where the paper has no such cell.
      paper_mark: the paper's number marked against the paper's baseline.
    """

    errors: tuple[float, ...] = ()
    statuses: tuple[str, ...] = ()
    edge_lr: bool = False
    mark: str = ""
    paper_error: float | None = None
    paper_mark: str = ""

    @property
    def mean(self) -> float:
        """Mean best error (%) over the seeds with a finite error; NaN if none."""
        finite = [e for e in self.errors if math.isfinite(e)]
        return float(np.mean(finite)) if finite else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (%) over the seeds with a finite error; NaN below 2."""
        finite = [e for e in self.errors if math.isfinite(e)]
        return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan

    @property
    def status(self) -> str:
        """``"ok"``, or the statuses other than ok with their counts, e.g. ``diverged 1/3``."""
        counts = collections.Counter(s for s in self.statuses if s != OK_STATUS)
        if not counts:
            return OK_STATUS
        if len(self.statuses) == 1:
            return self.statuses[0]
        return ", ".join(f"{s} {n}/{len(self.statuses)}" for s, n in counts.items())

    def text(self) -> str:
        """Format the cell, e.g. ``19.29±0.12+* (diverged 1/3) [19.48-]``."""
        if not self.errors:
            text = _MISSING
        else:
            text = "nan" if math.isnan(self.mean) else f"{self.mean:.2f}"
            if len(self.errors) > 1 and not math.isnan(self.std):
                text += f"±{self.std:.2f}"
            text += self.mark + (EDGE_MARK if self.edge_lr else "")
            if self.status != OK_STATUS:
                text += f" ({self.status})"
        if self.paper_error is not None:
            text += f" [{self.paper_error:.2f}{self.paper_mark}]"
        return text


def _mark(value: float | None, baseline: float | None, threshold: float) -> str:
    """Mark ``value`` against ``baseline``, comparing the printed two-decimal values.

    Rounding first makes a printed difference of exactly 3.00 points earn a mark.
    """
    if value is None or baseline is None or not (math.isfinite(value) and math.isfinite(baseline)):
        return ""
    difference = round(value, 2) - round(baseline, 2)
    if difference <= -threshold + 1e-9:
        return BETTER_MARK
    if difference >= threshold - 1e-9:
        return WORSE_MARK
    return ""


@dataclasses.dataclass(frozen=True)
class ResultTable:
    """Results in the paper's layout, built by ``build_table``.

    Attributes:
      title: heading printed above the table.
      rows: ``(dataset, paper_row)`` pairs; ``paper_row`` is None without a paper row.
      columns: condition labels.
      cells: ``cells[(dataset, column)]``.
      selection: key of ``SELECTION_PROTOCOLS``.
      baseline: condition label the marks compare with.
      threshold: points of error difference that earn a mark.
      num_seeds: maximum number of seeds in any cell.
    """

    title: str
    rows: tuple[tuple[str, str | None], ...]
    columns: tuple[str, ...]
    cells: Mapping[tuple[str, str], Cell]
    selection: str
    baseline: str
    threshold: float = MARK_THRESHOLD
    num_seeds: int = 1

    @property
    def caption(self) -> str:
        """Text under the table: selection protocol, marks and formats."""
        parts = [
            f"Best error (%), selected by {SELECTION_PROTOCOLS[self.selection]}.",
            f"{BETTER_MARK} / {WORSE_MARK}: at least {self.threshold:g} points better / worse "
            f"than {self.baseline} on the same row.",
            f"{EDGE_MARK}: best learning rate at an edge of the learning-rate grid.",
            "Brackets: the paper's number (Liao, Leibo & Poggio, AAAI 2016), marked against "
            "the paper's baseline.",
            "Parentheses: the status of runs that did not end ok, with the share of seeds "
            "when there are several.",
        ]
        if self.num_seeds > 1:
            parts.append(
                f"Up to {self.num_seeds} seeds: mean±sample standard deviation of each seed's "
                "best error."
            )
        return " ".join(parts)

    def _row_name(self, dataset: str, paper_row: str | None) -> str:
        if paper_row is None or paper_row == dataset:
            return dataset
        return f"{dataset} ({paper_row})"

    def grid(self) -> list[list[str]]:
        """Return the header and the rows of cell texts, dataset name first."""
        grid = [["dataset", *self.columns]]
        for dataset, paper_row in self.rows:
            texts = [self.cells[(dataset, column)].text() for column in self.columns]
            grid.append([self._row_name(dataset, paper_row), *texts])
        return grid

    def markdown(self) -> str:
        """Render the table, title and caption as Markdown."""
        # Escaped so that two edge marks in one line do not turn into emphasis.
        header, *body = [[text.replace("*", r"\*") for text in row] for row in self.grid()]
        lines = [f"### {self.title}", ""] if self.title else []
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in body)
        lines += ["", self.caption.replace("*", r"\*"), ""]
        return "\n".join(lines)

    def text(self) -> str:
        """Render the table as aligned plain text for a terminal."""
        grid = self.grid()
        widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
        lines = [self.title] if self.title else []
        for row in grid:
            cells = [row[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
        lines += ["", self.caption, ""]
        return "\n".join(lines)

    def csv(self, layout: str = "paper") -> str:
        """Render the table as CSV.

        Args:
          layout: ``"paper"`` (one row per dataset, the cell texts of ``text``) or
            ``"long"`` (one row per cell with numeric fields: ``_LONG_CSV_FIELDS``).

        Raises:
          ValueError: for an unknown layout.
        """
        buffer = io.StringIO()
        if layout == "paper":
            csv.writer(buffer, lineterminator="\n").writerows(self.grid())
        elif layout == "long":
            writer = csv.DictWriter(buffer, _LONG_CSV_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.records())
        else:
            raise ValueError(f"Unknown CSV layout {layout!r}; valid choices: paper, long.")
        return buffer.getvalue()

    def records(self) -> list[dict[str, Any]]:
        """Return one dict per cell with the fields of the long CSV layout."""
        records = []
        for dataset, paper_row in self.rows:
            for column in self.columns:
                cell = self.cells[(dataset, column)]
                records.append(
                    {
                        "dataset": dataset,
                        "paper_row": paper_row or "",
                        "condition": column,
                        "error_mean": _number(cell.mean),
                        "error_std": _number(cell.std),
                        "num_seeds": len(cell.errors),
                        "errors": ";".join(_number(e) for e in cell.errors),
                        "status": cell.status if cell.errors else "",
                        "edge_lr": cell.edge_lr,
                        "mark": cell.mark,
                        "paper_error": _number(cell.paper_error),
                        "paper_mark": cell.paper_mark,
                        "selection": self.selection,
                    }
                )
        return records


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def _group_results(
    results: Iterable[Mapping[str, Any]],
) -> tuple[dict, dict[str, str | None], list[str], list[str], set[str]]:
    """Group results by (dataset, Condition); collect paper rows, orders and selections."""
    groups: dict[tuple[str, conditions.Condition], list] = collections.defaultdict(list)
    paper_rows: dict[str, str | None] = {}
    datasets, labels, selections = [], [], set()
    for record in results:
        dataset, label = record["dataset"], record["condition"]
        row = record.get("paper_row")
        if paper_rows.setdefault(dataset, row) != row:
            raise ValueError(
                f"Dataset {dataset!r} has two paper rows: {paper_rows[dataset]!r} and {row!r}."
            )
        groups[(dataset, conditions.parse(label))].append(record)
        selections.add(record.get("selection"))
        if dataset not in datasets:
            datasets.append(dataset)
        if label not in labels:
            labels.append(label)
    return groups, paper_rows, datasets, labels, selections


def _cell_results(groups: dict, dataset: str, condition: conditions.Condition):
    """Return a cell's per-seed results, combining the runs of a best-of-two condition."""
    if (dataset, condition) in groups:
        return _combine_seeds(groups[(dataset, condition)])
    variants = condition.variants()
    if len(variants) > 1 and all((dataset, v) in groups for v in variants):
        return _better_of([_combine_seeds(groups[(dataset, v)]) for v in variants])
    return None


def _paper_number(row: str | None, condition: conditions.Condition, paper: str | None):
    """Look ``condition`` up in table ``paper`` first, then in every paper table."""
    if row is None:
        return None
    value = paper_value(row, condition, paper)
    return paper_value(row, condition) if value is None else value


def _row_cells(
    groups: dict,
    dataset: str,
    row: str | None,
    columns: Sequence[str],
    baseline: str,
    paper: str | None,
    threshold: float,
) -> dict[str, Cell]:
    """Build the cells of one dataset, marked against our and the paper's baseline."""
    baseline_condition = conditions.parse(baseline)
    base = _cell_results(groups, dataset, baseline_condition)
    base_mean = Cell(errors=base.errors).mean if base else None
    paper_base = _paper_number(row, baseline_condition, paper)

    cells = {}
    for column in columns:
        condition = conditions.parse(column)
        paper_error = _paper_number(row, condition, paper)
        cell = Cell(paper_error=paper_error, paper_mark=_mark(paper_error, paper_base, threshold))
        found = _cell_results(groups, dataset, condition)
        if found:
            cell = dataclasses.replace(
                cell, errors=found.errors, statuses=found.statuses, edge_lr=any(found.edges)
            )
            cell = dataclasses.replace(cell, mark=_mark(cell.mean, base_mean, threshold))
        cells[column] = cell
    return cells


def build_table(
    results: Iterable[Mapping[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    paper: str | None = None,
    baseline: str | None = None,
    threshold: float = MARK_THRESHOLD,
    title: str = "",
) -> ResultTable:
    """Arrange cell results in the paper's layout.

    Args:
      results: one dict per {dataset, condition} cell (see the module docstring). Records of
        the same cell with distinct ``seed`` values are combined as seeds. A ``uSF+BM``
        column without its own record takes, seed by seed, the better of its two variants
        (``Condition.variants``) when both are present.
      columns: condition labels in column order; default: the columns of ``paper`` if
        given, else the conditions in order of first appearance. Results match columns by
        their components (``BM`` fills a ``BM1`` column).
      datasets: dataset names in row order; default: order of first appearance.
      paper: a name from ``PAPER_TABLES`` whose numbers to show beside ours. A condition
        missing from it, or ``paper=None``, is looked up in every paper table (they agree
        wherever they overlap).
      baseline: the condition that the marks compare with; default ``SGD`` (``SGD-100``
        for the batch-size table).
      threshold: error difference in points at which a cell is marked.
      title: heading of the rendered table.

    Raises:
      ValueError: if the results mix selection protocols or name an unknown one, a dataset
        has two paper rows, or a cell has several records without distinct seeds.
    """
    groups, paper_rows, found_datasets, found_labels, selections = _group_results(results)
    if len(selections) != 1 or next(iter(selections)) not in SELECTION_PROTOCOLS:
        raise ValueError(
            f"Results must share one selection protocol from {sorted(SELECTION_PROTOCOLS)}; "
            f"got {sorted(map(str, selections))}."
        )
    if columns is None:
        columns = paper_table(paper).columns if paper else found_labels
    if baseline is None:
        baseline = PAPER_BASELINES.get(paper, "SGD")

    cells = {}
    for dataset in datasets or found_datasets:
        row_cells = _row_cells(
            groups, dataset, paper_rows.get(dataset), columns, baseline, paper, threshold
        )
        cells.update(((dataset, column), cell) for column, cell in row_cells.items())
    return ResultTable(
        title=title,
        rows=tuple((d, paper_rows.get(d)) for d in datasets or found_datasets),
        columns=tuple(columns),
        cells=cells,
        selection=next(iter(selections)),
        baseline=baseline,
        threshold=threshold,
        num_seeds=max([len(cell.errors) for cell in cells.values()] + [1]),
    )


def _write_atomically(path: str | os.PathLike, write) -> str:
    """Write a file through ``write(file)`` into a temporary file, then rename it to path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        # mkstemp creates the file readable by its owner only; give it the usual mode.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_table(table: ResultTable, path: str | os.PathLike, *, layout: str = "paper") -> str:
    """Write ``table`` atomically as Markdown (``.md``), CSV (``.csv``) or text (``.txt``).

    Args:
      table: the table.
      path: output file; its extension chooses the format. Missing folders are created.
      layout: CSV layout, ``"paper"`` or ``"long"`` (see ``ResultTable.csv``).

    Returns:
      The path written.

    Raises:
      ValueError: for another extension.
    """
    extension = os.path.splitext(os.fspath(path))[1].lower()
    renderers = {".md": table.markdown, ".csv": lambda: table.csv(layout), ".txt": table.text}
    if extension not in renderers:
        raise ValueError(f"Unknown table format {extension!r} of {path}; valid: .md, .csv, .txt.")
    content = renderers[extension]().encode("utf-8")
    return _write_atomically(path, lambda f: f.write(content))


def _new_figure(num_axes: int, title: str):
    """Create an Agg-backed figure with ``num_axes`` side-by-side axes, without pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6 * num_axes, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, num_axes, squeeze=False)[0]
    if title:
        figure.suptitle(title)
    return figure, axes


def _save_png(figure, path: str | os.PathLike) -> str:
    return _write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=100))


def _flip_series(
    results: Iterable[Mapping[str, Any]], suffix: str
) -> dict[str, dict[str, dict[float, Cell]]]:
    """Collect ``{part: {dataset: {p: Cell}}}`` for the brSF-p and frSF-p conditions."""
    reference = conditions.parse("brSF" + suffix)
    series = {"brsf": collections.defaultdict(dict), "frsf": collections.defaultdict(dict)}
    groups, *_ = _group_results(results)
    for (dataset, condition), records in groups.items():
        part = condition.feedback.removesuffix("_p")
        if part not in series:
            continue
        plain = dataclasses.replace(condition, feedback="brsf", flip_prob=0.0)
        if plain == reference:
            found = _combine_seeds(records)
            series[part][dataset][condition.flip_prob] = Cell(errors=found.errors)
    return series


def plot_flip_probability(
    results: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    suffix: str = "+BN+BM",
    paper_rows: Mapping[str, str] | None = None,
    title: str = "Error against the probability p that a feedback sign disagrees",
) -> str:
    """Plot Experiment B: error against flip probability, one line per dataset.

    The left panel shows brSF-p (M and S_p redrawn every batch), the right one frSF-p
    (drawn once). The point p = 0 is plain brSF / frSF. Seeds give error bars (sample std).

    Args:
      results: cell results as for ``build_table``; cells of other conditions are ignored.
      path: PNG file to write (atomically).
      suffix: the rest of the condition label after the feedback rule.
      paper_rows: dataset -> the paper's row name; the paper's numbers (Table 3) are then
        drawn as dashed lines of the same colour.
      title: figure title.

    Returns:
      The path written.

    Raises:
      ValueError: if no result is a brSF/frSF condition with ``suffix``.
    """
    results = list(results)
    series = _flip_series(results, suffix)
    if not any(series.values()):
        raise ValueError(f"No brSF-p or frSF-p results with suffix {suffix!r} to plot.")
    figure, axes = _new_figure(2, title)
    names = {"brsf": "brSF-p (redrawn every batch)", "frsf": "frSF-p (fixed)"}
    for ax, (part, by_dataset) in zip(axes, series.items(), strict=True):
        for dataset, cells in sorted(by_dataset.items()):
            ps = sorted(cells)
            means = [cells[p].mean for p in ps]
            stds = [0.0 if math.isnan(cells[p].std) else cells[p].std for p in ps]
            line = ax.errorbar(ps, means, yerr=stds, marker="o", capsize=3, label=dataset)
            row = (paper_rows or {}).get(dataset)
            if row:
                paper_ps, paper_errors = _paper_flip_curve(row, part, suffix)
                ax.plot(
                    paper_ps,
                    paper_errors,
                    "--",
                    color=line[0].get_color(),
                    alpha=0.6,
                    label=f"{row}, paper",
                )
        ax.set(
            title=names[part], xlabel="p (probability of a disagreeing sign)", ylabel="error (%)"
        )
        ax.grid(alpha=0.3)
        if by_dataset:
            ax.legend(fontsize="small")
    return _save_png(figure, path)


def _paper_flip_curve(row: str, part: str, suffix: str) -> tuple[list[float], list[float]]:
    ps, errors = [], []
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        label = f"{'brSF' if part == 'brsf' else 'frSF'}" + (f"-p{p:.2f}" if p else "") + suffix
        value = paper_value(row, label)
        if value is not None:
            ps.append(p)
            errors.append(value)
    return ps, errors


def plot_learning_curves(
    curves: Mapping[str, Any], path: str | os.PathLike, *, title: str = ""
) -> str:
    """Plot the runs of one cell: test error and training loss against epoch.

    Args:
      curves: ``{"epochs": [...], "runs": [{"lr_multiplier": 100, "test_error": [...],
        "train_loss": [...], "status": "ok", "seed": 0}, ...]}``. ``test_error`` is a
        fraction per epoch, plotted in percent. Without an ``epochs`` list, the epochs are
        1, 2, ... ``status`` and ``seed`` are optional. A run whose status is not ``ok``
        is dashed, named with its status and marked with an ``x`` at its last finite
        point. Runs are named by learning-rate multiplier, and by seed when they differ.
      path: PNG file to write (atomically).
      title: figure title, e.g. ``"mnist5k / uSF+BN"``.

    Returns:
      The path written.
    """
    epochs = curves.get("epochs")
    several_seeds = len({run.get("seed") for run in curves["runs"]}) > 1
    figure, (error_ax, loss_ax) = _new_figure(2, title)
    positive_losses = True
    for run in curves["runs"]:
        status = run.get("status", OK_STATUS)
        label = f"x{run['lr_multiplier']:g}"
        if several_seeds:
            label += f" seed {run.get('seed')}"
        if status != OK_STATUS:
            label += f" ({status})"
        style = "-" if status == OK_STATUS else "--"
        for ax, values in (
            (error_ax, 100.0 * np.asarray(run["test_error"], dtype=float)),
            (loss_ax, np.asarray(run["train_loss"], dtype=float)),
        ):
            x = np.arange(1, len(values) + 1)
            if isinstance(epochs, (list, tuple, np.ndarray)):
                x = np.asarray(epochs, dtype=float)[: len(values)]
            (line,) = ax.plot(x, values, style, label=label)
            finite = np.flatnonzero(np.isfinite(values))
            if status != OK_STATUS and finite.size:
                last = finite[-1]
                ax.plot(x[last], values[last], "x", color=line.get_color(), markersize=10)
        loss = np.asarray(run["train_loss"], dtype=float)
        positive_losses &= bool(np.all(loss[np.isfinite(loss)] > 0))

    error_ax.set(xlabel="epoch", ylabel="test error (%)", title="test error")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    if positive_losses:
        loss_ax.set_yscale("log")
    for ax in (error_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.legend(title="learning-rate multiplier", fontsize="small")
    return _save_png(figure, path)
