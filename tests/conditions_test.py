"""Tests for the condition label parser."""

import csv
import dataclasses
import importlib.resources
import io
import itertools

import pytest

from asym_jax import conditions


def _paper_labels():
    labels = []
    folder = importlib.resources.files("asym_jax") / "paper_tables"
    for resource in sorted(folder.iterdir(), key=lambda r: r.name):
        if resource.name.endswith(".csv"):
            header = next(csv.reader(io.StringIO(resource.read_text(encoding="utf-8"))))
            labels += [label for label in header[1:] if label not in labels]
    return labels


PAPER_LABELS = _paper_labels()


def test_paper_tables_have_all_labels():
    # 11 + 10 + 7 + 8 + 7 + 8 distinct new labels across the six tables.
    assert len(PAPER_LABELS) == 45
    assert "brSF-p0.25+BN+BM" in PAPER_LABELS
    assert "RndF+BN+BM Top" in PAPER_LABELS
    assert "BM-5" in PAPER_LABELS


@pytest.mark.parametrize("label", PAPER_LABELS)
def test_paper_label_round_trips(label):
    condition = conditions.parse(label)
    assert condition.label == label
    assert conditions.parse(condition.label) == condition


@pytest.mark.parametrize(
    "label, expected",
    [
        ("SGD", dict(feedback="symmetric", bn_mode="none", setting=0)),
        ("BM", dict(feedback="symmetric", bn_mode="none", setting=1)),
        ("BM3", dict(feedback="symmetric", setting=3)),
        ("BN", dict(feedback="symmetric", bn_mode="affine", setting=0)),
        ("BN+BM", dict(feedback="symmetric", bn_mode="affine", setting=1)),
        ("uSF", dict(feedback="usf", bn_mode="none", setting=0)),
        ("NuSF", dict(feedback="nusf", bn_mode="none", setting=0)),
        ("uSF+BN", dict(feedback="usf", bn_mode="plain", setting=0)),
        ("uSF+BN+BM2", dict(feedback="usf", bn_mode="plain", setting=2)),
        ("brSF+BN+BM", dict(feedback="brsf", flip_prob=0.0, bn_mode="plain", setting=1)),
        ("frSF+BN+BM", dict(feedback="frsf", bn_mode="plain", setting=1)),
        ("brSF-p1.00+BN+BM", dict(feedback="brsf_p", flip_prob=1.0, bn_mode="plain")),
        ("frSF-p0.25+BN+BM", dict(feedback="frsf_p", flip_prob=0.25, setting=1)),
        ("RndF", dict(feedback="rndf", bn_mode="none", setting=0)),
        ("RndF+BN+BM", dict(feedback="rndf", bn_mode="plain", setting=1)),
        ("SGD Bottom", dict(feedback="symmetric", clamp="bottom")),
        ("uSF+BN+BM Top", dict(feedback="usf", clamp="top", setting=1)),
        ("SGD-30", dict(feedback="symmetric", setting=0, batch_size=30)),
        ("BM-5", dict(setting=1, batch_size=5, batch_schedule=None)),
        ("SGD", dict(clamp="none", batch_size=None, batch_schedule=None, best_of_plain=False)),
    ],
)
def test_parse_components(label, expected):
    condition = conditions.parse(label)
    for field, value in expected.items():
        assert getattr(condition, field) == value, field


def test_bn_affine_only_with_symmetric_feedback():
    with_bn = [label for label in PAPER_LABELS if "BN" in label]
    assert len(with_bn) > 20
    for label in with_bn:
        condition = conditions.parse(label)
        expected = "affine" if condition.feedback == "symmetric" else "plain"
        assert condition.bn_mode == expected, label
    assert conditions.parse("BN").bn_mode == "affine"
    assert conditions.parse("BN+BM").bn_mode == "affine"
    assert conditions.parse("RndF+BN").bn_mode == "plain"


def test_explicit_bn_mode_tokens():
    condition = conditions.parse("uSF+BNaffine")
    assert condition.bn_mode == "affine"
    assert condition.label == "uSF+BNaffine"
    assert conditions.parse("BNplain+BM").label == "BNplain+BM"
    # An explicit BN mode equal to what "BN" means for uSF prints as plain "BN".
    assert conditions.parse("uSF+BNplain").label == "uSF+BN"


def test_bm_and_bm1_are_one_run():
    bm, bm1 = conditions.parse("BM"), conditions.parse("BM1")
    assert bm == bm1
    assert hash(bm) == hash(bm1)
    assert bm.label == "BM"
    assert bm1.label == "BM1"
    assert conditions.parse("uSF+BN+BM1") == conditions.parse("uSF+BN+BM")


def test_usf_bm_reports_best_of_schedule():
    condition = conditions.parse("uSF+BM")
    assert condition.batch_schedule == ((0, 100), (3, 500))
    assert condition.best_of_plain
    assert condition.batch_size is None
    fixed, scheduled = condition.variants()
    assert fixed.label == "uSF+BM-100"
    assert fixed.batch_size == 100
    assert not fixed.best_of_plain
    assert scheduled.label == "uSF+BM-100_500@3"
    assert scheduled.batch_schedule == ((0, 100), (3, 500))
    assert not scheduled.best_of_plain
    assert conditions.parse("uSF+BN+BM").variants() == (conditions.parse("uSF+BN+BM"),)


def test_usf_bm_schedule_only_for_plain_usf_bm():
    for label in ("uSF+BN+BM", "uSF+BM Bottom", "uSF+BM2", "RndF+BM", "BM"):
        condition = conditions.parse(label)
        assert condition.batch_schedule is None, label
        assert not condition.best_of_plain, label


def test_batch_size_at():
    scheduled = conditions.parse("uSF+BM-100_500@3")
    assert [scheduled.batch_size_at(e, 64) for e in range(5)] == [100, 100, 100, 500, 500]
    assert conditions.parse("SGD-30").batch_size_at(7, 100) == 30
    assert conditions.parse("SGD").batch_size_at(7, 100) == 100


@pytest.mark.parametrize(
    "label, expected",
    [
        ("usf+bn+bm", "uSF+BN+BM"),
        ("BM+BN+uSF", "uSF+BN+BM"),
        ("brSF-p0.5+BN+BM", "brSF-p0.50+BN+BM"),
        ("frSF-p1+BN+BM", "frSF-p1.00+BN+BM"),
        ("frSF-p0.125", "frSF-p0.125"),
        ("  SGD   top ", "SGD Top"),
        ("RndF+BM-best_100_500@3", "RndF+BM-best_100_500@3"),
        ("uSF+BM-best_100_500@3", "uSF+BM"),
        ("uSF+BM-64_256@2_1024@10", "uSF+BM-64_256@2_1024@10"),
    ],
)
def test_canonical_spelling(label, expected):
    assert conditions.parse(label).label == expected


@pytest.mark.parametrize(
    "label, message",
    [
        ("uSF+XYZ", "Unknown token 'XYZ'"),
        ("Adam", "Unknown token 'Adam'"),
        ("BM4", "Unknown token 'BM4'"),
        ("uSF+", "Unknown token ''"),
        ("uSF Middle", "Unknown clamp 'Middle'"),
        ("SGD+BN", "'SGD' must stand alone"),
        ("uSF+NuSF", "gives the feedback twice"),
        ("BN+BN", "gives the bn_mode twice"),
        ("BM+BM2", "gives the setting twice"),
        ("", "Invalid condition label"),
        ("uSF BN Top", "Invalid condition label"),
        ("brSF-p1.5", "flip_prob must be in"),
        ("SGD-0", "batch_size must be a positive int"),
        ("uSF+BM-100_500@0", "Invalid batch_schedule"),
    ],
)
def test_invalid_label_raises(label, message):
    with pytest.raises(ValueError, match=message):
        conditions.parse(label)


def test_unknown_token_lists_valid_tokens():
    with pytest.raises(ValueError) as error:
        conditions.parse("uSF+Momentum")
    for token in ("uSF", "NuSF", "brSF-p<p>", "RndF", "BN", "BM3", "Bottom"):
        assert token in str(error.value)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(feedback="sgd"), "Unknown feedback rule 'sgd'"),
        (dict(feedback="usf", flip_prob=0.5), "only valid for the feedback rules"),
        (dict(bn_mode="batch"), "Unknown bn_mode 'batch'"),
        (dict(setting=4), "Unknown setting 4"),
        (dict(setting=True), "Unknown setting True"),
        (dict(setting=1.0), "Unknown setting 1.0"),
        (dict(clamp="middle"), "Unknown clamp 'middle'"),
        (dict(batch_size=-1), "batch_size must be a positive int"),
        (dict(batch_schedule=((0, 100),)), "Invalid batch_schedule"),
        (dict(batch_schedule=((1, 100), (3, 500))), "Invalid batch_schedule"),
        (dict(batch_schedule=((0, 100), (3, 500)), batch_size=100), "not both"),
        (dict(best_of_plain=True), "needs a batch_schedule"),
    ],
)
def test_invalid_condition_raises(fields, message):
    with pytest.raises(ValueError, match=message):
        conditions.Condition(**fields)


def test_schedule_lists_become_tuples():
    condition = conditions.Condition(setting=1, batch_schedule=[[0, 50], [2, 200]])
    assert condition.batch_schedule == ((0, 50), (2, 200))
    assert condition.label == "BM-50_200@2"
    assert hash(condition) == hash(conditions.parse("BM-50_200@2"))


def _all_conditions():
    feedbacks = [(name, 0.0) for name in conditions.FEEDBACK_NAMES if not name.endswith("_p")]
    feedbacks += [("brsf_p", 0.75), ("frsf_p", 0.0), ("frsf_p", 1.0)]
    schedule = ((0, 10), (5, 40))
    batches = [
        dict(),
        dict(batch_size=30),
        dict(batch_schedule=schedule),
        dict(batch_schedule=schedule, best_of_plain=True),
    ]
    for (feedback, p), bn_mode, setting, clamp, batch in itertools.product(
        feedbacks, conditions.BN_MODES, conditions.SETTINGS, conditions.CLAMPS, batches
    ):
        yield conditions.Condition(
            feedback=feedback, flip_prob=p, bn_mode=bn_mode, setting=setting, clamp=clamp, **batch
        )


def test_every_condition_round_trips():
    seen = set()
    for condition in _all_conditions():
        label = condition.label
        parsed = conditions.parse(label)
        assert parsed == condition, label
        assert parsed.label == label
        assert dataclasses.astuple(parsed) == dataclasses.astuple(condition), label
        seen.add(label)
    # 9 feedbacks x 3 BN modes x 4 settings x 3 clamps x 4 batch options, all distinct.
    assert len(seen) == 9 * 3 * 4 * 3 * 4


def test_rule_matches_feedback_registry():
    feedback = pytest.importorskip("asym_jax.feedback")
    assert conditions.FEEDBACK_NAMES == feedback.RULE_NAMES
    flip = conditions.rule(conditions.parse("frSF-p0.25+BN+BM"))
    assert flip == feedback.get_rule("frsf_p", flip_prob=0.25)
    random = conditions.rule(conditions.parse("RndF+BN"), sigma=0.1)
    assert random.name == "rndf"
    assert random.sigma == 0.1
    assert conditions.rule(conditions.parse("BN+BM")).name == "symmetric"
