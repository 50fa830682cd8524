"""Tests for result tables and plots."""

import csv
import io
import itertools
import math
import os

import numpy as np
import pytest

from asym_jax import conditions, tables


def _result(dataset, condition, error, **fields):
    record = {
        "dataset": dataset,
        "paper_row": {"mnist5k": "MNIST", "cifar10": "CIFAR"}.get(dataset),
        "condition": condition,
        "best_error": error,
        "status": "ok",
        "edge_lr": False,
        "selection": "test",
    }
    record.update(fields)
    return record


# Errors as fractions; the SGD baseline of mnist5k is 10.00%.
RESULTS = [
    _result("mnist5k", "SGD", 0.10),
    _result("mnist5k", "BN", 0.07),  # exactly 3 points better: marked
    _result("mnist5k", "BM", 0.0701),  # 2.99 points better: not marked
    _result("mnist5k", "uSF", 0.8865, status="collapsed", edge_lr=True),
    _result("mnist5k", "NuSF", 0.1299),  # 2.99 points worse: not marked
    _result(
        "mnist5k",
        "uSF+BN",
        [0.010, 0.012, 0.011],
        status=["ok", "diverged", "ok"],
        edge_lr=[False, True, False],
    ),
    _result("cifar10", "SGD", 0.25),
    _result("cifar10", "BN", 0.28),  # exactly 3 points worse: marked
]


def _table(results=RESULTS, **kwargs):
    kwargs.setdefault("paper", "table2_experiment_a")
    return tables.build_table(results, **kwargs)


def test_packaged_paper_tables_load():
    sizes = {name: len(tables.paper_table(name).rows) for name in tables.PAPER_TABLES}
    assert sizes == {
        "table2_experiment_a": 15,
        "table3_experiment_b": 15,
        "table4_experiment_c1": 15,
        "table4_experiment_c2": 15,
        "table5_manhattan_settings": 6,
        "table6_batch_size": 5,
    }
    table = tables.paper_table("table3_experiment_b")
    assert len(table.columns) == 11
    assert all(len(row) == 11 for row in table.errors)


def test_paper_tables_agree_where_they_overlap():
    overlaps = 0
    for first, second in itertools.combinations(tables.PAPER_TABLES, 2):
        a, b = tables.paper_table(first), tables.paper_table(second)
        for row, column in itertools.product(a.rows, a.columns):
            other = b.value(row, column)
            if other is not None:
                overlaps += 1
                assert a.value(row, column) == other, (first, second, row, column)
    # SGD alone is shared by four tables on up to 15 rows.
    assert overlaps > 100


def test_paper_value_lookup():
    assert tables.paper_value("MNIST", "uSF") == 88.65
    assert tables.paper_value("TIMIT80", "RndF+BN+BM Top") == 39.76
    assert tables.paper_value("CIFAR", "BM", "table5_manhattan_settings") == 23.98
    assert tables.paper_value("CIFAR", conditions.parse("BM1")) == 23.98
    assert tables.paper_value("SVHN", "SGD-30") == 8.45
    assert tables.paper_value("MNIST", "uSF+BN+BM3", "table2_experiment_a") is None
    assert tables.paper_value("TIMIT80", "BM2") is None
    assert tables.paper_value("ImageNet", "SGD") is None


def test_unknown_paper_table_raises():
    with pytest.raises(ValueError, match="Unknown paper table 'table9'"):
        tables.paper_table("table9")


def test_cells_marked_against_sgd():
    table = _table()
    cells = table.cells
    assert cells[("mnist5k", "BN")].mark == tables.BETTER_MARK
    assert cells[("mnist5k", "BM")].mark == ""
    assert cells[("mnist5k", "uSF")].mark == tables.WORSE_MARK
    assert cells[("mnist5k", "NuSF")].mark == ""
    assert cells[("mnist5k", "SGD")].mark == ""
    assert cells[("cifar10", "BN")].mark == tables.WORSE_MARK


def test_paper_numbers_beside_cells():
    cells = _table().cells
    assert cells[("mnist5k", "SGD")].text() == "10.00 [0.67]"
    assert cells[("mnist5k", "BN")].text() == "7.00+ [0.52]"
    # Table 2 of the paper: CIFAR BN 16.75 is 5.98 points better than SGD 22.73.
    assert cells[("cifar10", "BN")].text() == "28.00- [16.75+]"
    assert cells[("cifar10", "uSF")].text() == "n/a [90.00-]"
    assert cells[("mnist5k", "uSF+BN+BM")].text() == "n/a [0.83]"


def test_collapsed_cell_and_edge_mark():
    cell = _table().cells[("mnist5k", "uSF")]
    assert cell.status == "collapsed"
    assert cell.edge_lr
    assert cell.text() == "88.65-* (collapsed) [88.65-]"


def test_seeds_give_mean_and_std():
    cell = _table().cells[("mnist5k", "uSF+BN")]
    assert cell.errors == pytest.approx((1.0, 1.2, 1.1), abs=1e-12)
    assert cell.mean == pytest.approx(1.1, abs=1e-12)
    assert cell.std == pytest.approx(0.1, abs=1e-12)  # sample std, ddof=1
    assert cell.status == "diverged 1/3"
    assert cell.text() == "1.10±0.10+* (diverged 1/3) [0.55]"


def test_seed_records_combine():
    records = [_result("mnist5k", "SGD", e, seed=s) for s, e in enumerate((0.01, 0.03))]
    cell = tables.build_table(records).cells[("mnist5k", "SGD")]
    assert cell.mean == pytest.approx(2.0, abs=1e-12)
    assert cell.std == pytest.approx(math.sqrt(2.0), abs=1e-12)


def test_duplicate_records_without_seeds_raise():
    records = [_result("mnist5k", "SGD", 0.01), _result("mnist5k", "SGD", 0.02)]
    with pytest.raises(ValueError, match="without distinct 'seed' values"):
        tables.build_table(records)


def test_nan_error_shows_as_diverged():
    records = [_result("mnist5k", "SGD", 0.01), _result("mnist5k", "uSF", None, status="diverged")]
    cell = tables.build_table(records).cells[("mnist5k", "uSF")]
    assert math.isnan(cell.mean)
    assert cell.mark == ""
    assert cell.text() == "nan (diverged) [88.65-]"


def test_usf_bm_takes_better_variant():
    records = [
        _result("mnist5k", "SGD", 0.01),
        _result("mnist5k", "uSF+BM-100", [0.05, 0.02], seed=0),
        _result("mnist5k", "uSF+BM-100_500@3", [0.04, 0.03], edge_lr=[False, True]),
    ]
    cell = _table(records).cells[("mnist5k", "uSF+BM")]
    assert cell.errors == pytest.approx((4.0, 2.0), abs=1e-12)
    assert not cell.edge_lr


def test_results_match_columns_by_components():
    records = [_result("mnist5k", "SGD", 0.01), _result("mnist5k", "uSF+BN+BM", 0.02)]
    table = tables.build_table(records, paper="table5_manhattan_settings")
    assert table.cells[("mnist5k", "uSF+BN+BM1")].errors == pytest.approx((2.0,), abs=1e-12)


def test_batch_size_table_marks_against_sgd_100():
    records = [_result("mnist5k", "SGD-100", 0.01), _result("mnist5k", "BM-5", 0.05)]
    table = tables.build_table(records, paper="table6_batch_size")
    assert table.baseline == "SGD-100"
    assert table.cells[("mnist5k", "BM-5")].mark == tables.WORSE_MARK


def test_caption_names_selection_protocol():
    caption = _table().caption
    assert "lowest test error over all epochs and runs, as the paper" in caption
    assert "at least 3 points better / worse than SGD" in caption
    assert "Up to 3 seeds: mean±sample standard deviation" in caption
    validation = [dict(r, selection="validation") for r in RESULTS]
    caption = _table(validation).caption
    assert "learning rate and epoch chosen on a held-out validation split" in caption
    single = [r for r in RESULTS if r["condition"] != "uSF+BN"]
    assert "mean±sample standard deviation" not in _table(single).caption


@pytest.mark.parametrize(
    "selections, message",
    [(["test", "validation"], "one selection protocol"), (["best"], "one selection protocol")],
)
def test_bad_selection_raises(selections, message):
    records = [_result("mnist5k", f"BM{i + 1}", 0.1, selection=s) for i, s in enumerate(selections)]
    with pytest.raises(ValueError, match=message):
        tables.build_table(records)


def test_default_columns_and_rows_follow_results():
    table = tables.build_table(RESULTS)
    assert table.columns == ("SGD", "BN", "BM", "uSF", "NuSF", "uSF+BN")
    assert table.rows == (("mnist5k", "MNIST"), ("cifar10", "CIFAR"))
    table = tables.build_table(RESULTS, columns=["BN"], datasets=["cifar10"])
    assert table.grid() == [["dataset", "BN"], ["cifar10 (CIFAR)", "28.00- [16.75+]"]]


def test_markdown_layout():
    text = _table(title="Experiment A").markdown()
    lines = text.splitlines()
    assert lines[0] == "### Experiment A"
    assert lines[2].startswith("| dataset | SGD | BM | BN | BN+BM | uSF |")
    assert lines[3] == "|:---|" + "|".join(["---:"] * 11) + "|"
    assert lines[4].startswith("| mnist5k (MNIST) | 10.00 [0.67] |")
    assert r"88.65-\* (collapsed) [88.65-]" in lines[4]
    assert "lowest test error" in lines[-1] or "lowest test error" in lines[-2]


def test_text_layout_is_aligned():
    lines = _table(title="Experiment A").text().splitlines()
    assert lines[0] == "Experiment A"
    header, first, second = lines[1:4]
    # Right-aligned columns end at the same position in every line.
    assert header.index("frSF+BN+BM") + len("frSF+BN+BM") == len(first) == len(second)


def test_csv_layouts():
    table = _table()
    rows = list(csv.reader(io.StringIO(table.csv())))
    assert rows[0][:3] == ["dataset", "SGD", "BM"]
    assert rows[1][0] == "mnist5k (MNIST)"
    assert rows[1][rows[0].index("uSF+BN")] == "1.10±0.10+* (diverged 1/3) [0.55]"
    long = list(csv.DictReader(io.StringIO(table.csv("long"))))
    assert len(long) == 2 * 11
    cell = next(r for r in long if r["dataset"] == "mnist5k" and r["condition"] == "uSF+BN")
    assert float(cell["error_mean"]) == pytest.approx(1.1, abs=1e-4)
    assert float(cell["error_std"]) == pytest.approx(0.1, abs=1e-4)
    assert cell["num_seeds"] == "3"
    assert cell["errors"] == "1.0000;1.2000;1.1000"
    assert float(cell["paper_error"]) == 0.55
    assert cell["selection"] == "test"
    with pytest.raises(ValueError, match="Unknown CSV layout 'wide'"):
        table.csv("wide")


def test_write_table_formats(tmp_path):
    table = _table(title="Experiment A")
    for name, expected in (
        ("a.md", table.markdown()),
        ("a.csv", table.csv()),
        ("a.txt", table.text()),
        ("sub/dir/long.csv", table.csv("long")),
    ):
        path = tmp_path / name
        assert tables.write_table(table, path, layout="long" if "long" in name else "paper")
        assert path.read_text(encoding="utf-8") == expected
    (tmp_path / "a.md").write_text("old")
    tables.write_table(table, tmp_path / "a.md")
    assert (tmp_path / "a.md").read_text(encoding="utf-8") == table.markdown()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    with pytest.raises(ValueError, match="Unknown table format '.html'"):
        tables.write_table(table, tmp_path / "a.html")


def _assert_png_has_content(path):
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 10_000
    pixels = matplotlib.image.imread(path)[..., :3]
    assert pixels.shape[0] > 200
    assert pixels.shape[1] > 400
    # Not blank: a good share of pixels is not white and the image is not one colour.
    assert np.mean(pixels.min(axis=-1) < 0.9) > 0.01
    assert pixels.std() > 0.05


def test_plot_flip_probability(tmp_path):
    rng = np.random.default_rng(0)
    records = [_result("mnist5k", "SGD", 0.01)]
    for family, p in itertools.product(("brSF", "frSF"), (0.0, 0.25, 0.5, 0.75, 1.0)):
        label = family + (f"-p{p:.2f}" if p else "") + "+BN+BM"
        for dataset in ("mnist5k", "cifar10"):
            errors = list(0.01 + p * rng.uniform(0.2, 0.4, size=2))
            records.append(_result(dataset, label, errors))
    path = tables.plot_flip_probability(
        records, tmp_path / "flip.png", paper_rows={"mnist5k": "MNIST"}
    )
    _assert_png_has_content(path)


def test_plot_flip_probability_needs_results(tmp_path):
    with pytest.raises(ValueError, match="No brSF-p or frSF-p results"):
        tables.plot_flip_probability(RESULTS, tmp_path / "flip.png")
    assert not (tmp_path / "flip.png").exists()


def test_plot_learning_curves(tmp_path):
    epochs = list(range(1, 11))
    runs = [
        {
            "lr_multiplier": m,
            "test_error": list(np.linspace(0.5, 0.05 / m, 10)),
            "train_loss": list(np.linspace(200.0, 20.0 * m, 10)),
            "status": "ok",
        }
        for m in (10, 1, 0.1, 0.01)
    ]
    runs.append(
        {
            "lr_multiplier": 100,
            "test_error": [0.9, 0.9] + [math.nan] * 8,
            "train_loss": [300.0, 1e6] + [math.nan] * 8,
            "status": "diverged",
        }
    )
    curves = {"epochs": epochs, "runs": runs}
    path = tables.plot_learning_curves(curves, tmp_path / "curves.png", title="mnist5k / uSF")
    _assert_png_has_content(path)


def test_paper_number_from_other_table():
    records = [_result("mnist5k", "SGD", 0.01), _result("mnist5k", "uSF+BN+BM3", 0.02)]
    table = tables.build_table(records, paper="table2_experiment_a")
    assert table.columns[0] == "SGD"
    assert "uSF+BN+BM3" not in table.columns
    table = tables.build_table(records, columns=["uSF+BN+BM3"], paper="table2_experiment_a")
    # Table 2 lacks this condition, so the number comes from the Batch Manhattan table.
    assert table.cells[("mnist5k", "uSF+BN+BM3")].paper_error == 0.61


def test_best_error_per_seed_gives_seeds():
    record = _result("mnist5k", "SGD", 0.02, best_error_per_seed=[0.01, 0.03])
    cell = tables.build_table([record]).cells[("mnist5k", "SGD")]
    assert cell.errors == pytest.approx((1.0, 3.0), abs=1e-12)
    assert cell.std == pytest.approx(math.sqrt(2.0), abs=1e-12)


def test_learning_curves_without_epoch_list(tmp_path):
    runs = [
        {"lr_multiplier": 1, "seed": seed, "test_error": [0.5, 0.3, 0.2], "train_loss": [3, 2, 1]}
        for seed in (0, 1)
    ]
    path = tables.plot_learning_curves({"epochs": 3, "runs": runs}, tmp_path / "c.png")
    _assert_png_has_content(path)
