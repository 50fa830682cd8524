"""Condition labels of Liao, Leibo & Poggio (AAAI 2016), parsed into their components.

A condition is one column of the paper's tables, such as ``uSF+BN+BM``: a feedback rule,
a batch normalization mode, an update rule (SGD or a Batch Manhattan setting), optionally a
clamped layer group and a batch size. ``parse`` turns a label into a ``Condition`` and
``Condition.label`` prints it back, so ``parse(label).label == label`` for every canonical
label, and ``parse(condition.label) == condition`` for every condition. Grammar::

    label    := base ["-" batch] [" Bottom" | " Top"]
    base     := "SGD" | token ("+" token)*
    token    := feedback | "BN" | "BNaffine" | "BNplain" | "BM" | "BM1" | "BM2" | "BM3"
    feedback := "uSF" | "NuSF" | "brSF" | "frSF" | "brSF-p" P | "frSF-p" P | "RndF"
    batch    := N | schedule | "best_" schedule
    schedule := N ("_" N "@" E)+

``P`` is the probability that a feedback sign disagrees with the forward sign (``0.25``),
``N`` a batch size and ``E`` the 0-based epoch from which the batch size after it applies:
``100_500@3`` means batch 100 for epochs 0-2, then 500. Tokens match case-insensitively and
in any order; labels print in the paper's order and spelling. ``SGD`` alone means symmetric
feedback, no BN and setting 0; omitting the feedback token means symmetric feedback.

The paper's rules encoded here:

* ``BM`` is Batch Manhattan setting 1, so ``BM`` and ``BM1`` name the same run. The two
  spellings compare equal, and only ``label`` keeps the difference.
* ``BN`` keeps the learnable scale and shift only with symmetric feedback (the paper's
  ``BN`` and ``BN+BM`` columns); with any other feedback (``uSF+BN``, ``RndF+BN``...) it
  only normalizes. ``BNaffine`` and ``BNplain`` request the other mode explicitly; they are
  not paper labels.
* ``uSF+BM`` with no batch suffix stands for the paper's report of the better of two runs:
  batch 100 throughout, and batch 100 for 3 epochs, then 500.
"""

import dataclasses
import re
from typing import Any

FEEDBACK_NAMES = ("symmetric", "usf", "nusf", "brsf", "frsf", "brsf_p", "frsf_p", "rndf")
BN_MODES = ("none", "plain", "affine")
SETTINGS = (0, 1, 2, 3)
CLAMPS = ("none", "bottom", "top")

# Batch size schedule of the paper's uSF+BM: (first epoch, batch size) pairs, 0-based.
USF_BM_BATCH_SCHEDULE = ((0, 100), (3, 500))

_FEEDBACK_TOKENS = {
    "usf": "uSF",
    "nusf": "NuSF",
    "brsf": "brSF",
    "frsf": "frSF",
    "brsf_p": "brSF-p",
    "frsf_p": "frSF-p",
    "rndf": "RndF",
}
_FLIP_RULES = ("brsf_p", "frsf_p")
_CLAMP_WORDS = {"bottom": "Bottom", "top": "Top"}
_VALID_TOKENS = (
    "SGD, uSF, NuSF, brSF, frSF, brSF-p<p>, frSF-p<p>, RndF, BN, BNaffine, BNplain, "
    "BM, BM1, BM2, BM3"
)
_FLIP_TOKEN = re.compile(r"(brsf|frsf)-p(\d+(?:\.\d*)?|\.\d+)", re.IGNORECASE)
_BATCH_SUFFIX = re.compile(r"(.+)-((?:best_)?\d+(?:_\d+@\d+)*)", re.IGNORECASE)


def paper_bn_mode(feedback: str) -> str:
    """Return the BN mode the paper's ``BN`` token means with ``feedback``.

    Symmetric feedback (the ``BN`` and ``BN+BM`` columns) keeps BN's learnable scale and
    shift (``"affine"``); every asymmetric rule normalizes without them (``"plain"``).
    """
    return "affine" if feedback == "symmetric" else "plain"


def _format_flip_prob(p: float) -> str:
    """Print p with two decimals as the paper does, or more digits where they are needed."""
    text = f"{p:.2f}"
    return text if float(text) == p else f"{p:.12g}"


def _format_schedule(schedule: tuple[tuple[int, int], ...]) -> str:
    first, *rest = schedule
    return "_".join([str(first[1])] + [f"{batch}@{epoch}" for epoch, batch in rest])


def _parse_schedule(text: str) -> tuple[tuple[int, int], ...]:
    first, *rest = text.split("_")
    schedule = [(0, int(first))]
    for part in rest:
        batch, epoch = part.split("@")
        schedule.append((int(epoch), int(batch)))
    return tuple(schedule)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclasses.dataclass(frozen=True)
class Condition:
    """One experimental condition of the paper: a column of its tables.

    Attributes:
      feedback: feedback rule, a registry key of ``asym_jax.feedback`` (``FEEDBACK_NAMES``).
      flip_prob: p, the probability that a feedback sign disagrees with the forward sign;
        non-zero only for ``brsf_p`` and ``frsf_p``.
      bn_mode: ``"none"``, ``"plain"`` (normalize, no learnable scale or shift) or
        ``"affine"`` (with them).
      setting: update rule, 0 for SGD and 1-3 for the Batch Manhattan settings.
      clamp: ``"none"``, ``"bottom"`` (the last layer stays at its random initial values and
        all earlier layers learn) or ``"top"`` (only the last layer learns).
      batch_size: batch size override, or ``None`` for the config's batch size.
      batch_schedule: ``None``, or ``((0, b0), (e1, b1), ...)``: batch size ``b0`` from
        epoch 0, ``b1`` from 0-based epoch ``e1`` on, and so on. Excludes ``batch_size``.
      best_of_plain: the reported number is the better of two runs, one with
        ``batch_schedule`` and one with the schedule's first batch size throughout (the
        paper's ``uSF+BM``: batch 100 throughout, or 100 then 500). ``variants`` returns
        the two runs.
      show_setting: print setting 1 as ``BM1`` instead of ``BM``. Only the label uses it:
        ``BM`` and ``BM1`` compare equal and hash alike.

    A ``uSF+BM`` condition (uSF, no BN, setting 1, no clamp) given neither ``batch_size`` nor
    ``batch_schedule`` becomes the paper's: ``batch_schedule=USF_BM_BATCH_SCHEDULE`` and
    ``best_of_plain=True``. Give it a ``batch_size`` to mean a single fixed-batch run.
    """

    feedback: str = "symmetric"
    flip_prob: float = 0.0
    bn_mode: str = "none"
    setting: int = 0
    clamp: str = "none"
    batch_size: int | None = None
    batch_schedule: tuple[tuple[int, int], ...] | None = None
    best_of_plain: bool = False
    show_setting: bool = dataclasses.field(default=False, compare=False)

    def __post_init__(self):
        self._check_components()
        self._check_batch()
        if self._is_usf_bm() and self.batch_size is None and self.batch_schedule is None:
            object.__setattr__(self, "batch_schedule", USF_BM_BATCH_SCHEDULE)
            object.__setattr__(self, "best_of_plain", True)

    def _check_components(self):
        if self.feedback not in FEEDBACK_NAMES:
            raise ValueError(
                f"Unknown feedback rule {self.feedback!r}; valid choices: "
                f"{', '.join(FEEDBACK_NAMES)}."
            )
        flip_prob = float(self.flip_prob)
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob!r}.")
        if flip_prob != 0.0 and self.feedback not in _FLIP_RULES:
            raise ValueError(
                f"flip_prob={self.flip_prob!r} is only valid for the feedback rules "
                f"{', '.join(_FLIP_RULES)}, not {self.feedback!r}."
            )
        object.__setattr__(self, "flip_prob", flip_prob)
        if self.bn_mode not in BN_MODES:
            raise ValueError(
                f"Unknown bn_mode {self.bn_mode!r}; valid choices: {', '.join(BN_MODES)}."
            )
        if (
            not isinstance(self.setting, int)
            or isinstance(self.setting, bool)
            or (self.setting not in SETTINGS)
        ):
            raise ValueError(f"Unknown setting {self.setting!r}; valid choices: 0, 1, 2, 3.")
        if self.clamp not in CLAMPS:
            raise ValueError(f"Unknown clamp {self.clamp!r}; valid choices: {', '.join(CLAMPS)}.")

    def _check_batch(self):
        if self.batch_size is not None and not _is_positive_int(self.batch_size):
            raise ValueError(f"batch_size must be a positive int or None, got {self.batch_size!r}.")
        if self.batch_schedule is not None:
            schedule = tuple(tuple(pair) for pair in self.batch_schedule)
            epochs = [pair[0] for pair in schedule]
            valid = (
                len(schedule) >= 2
                and all(len(pair) == 2 for pair in schedule)
                and all(_is_positive_int(pair[1]) for pair in schedule)
                and epochs[0] == 0
                and all(_is_positive_int(e) for e in epochs[1:])
                and epochs == sorted(set(epochs))
            )
            if not valid:
                raise ValueError(
                    f"Invalid batch_schedule {self.batch_schedule!r}: expected at least two "
                    "(first epoch, batch size) pairs with positive batch sizes, the first "
                    "epoch 0 and the epochs increasing, e.g. ((0, 100), (3, 500))."
                )
            object.__setattr__(self, "batch_schedule", schedule)
        if self.batch_size is not None and self.batch_schedule is not None:
            raise ValueError(
                f"Give batch_size ({self.batch_size}) or batch_schedule "
                f"({self.batch_schedule}), not both."
            )
        if self.best_of_plain and self.batch_schedule is None:
            raise ValueError("best_of_plain=True needs a batch_schedule to compare with.")

    def _is_usf_bm(self) -> bool:
        return (
            self.feedback == "usf"
            and self.bn_mode == "none"
            and self.setting == 1
            and self.clamp == "none"
        )

    @property
    def label(self) -> str:
        """The condition's label in the paper's spelling, e.g. ``brSF-p0.25+BN+BM``."""
        tokens = []
        if self.feedback != "symmetric":
            token = _FEEDBACK_TOKENS[self.feedback]
            if self.feedback in _FLIP_RULES:
                token += _format_flip_prob(self.flip_prob)
            tokens.append(token)
        if self.bn_mode != "none":
            if self.bn_mode == paper_bn_mode(self.feedback):
                tokens.append("BN")
            else:
                tokens.append("BN" + self.bn_mode)
        if self.setting == 1:
            tokens.append("BM1" if self.show_setting else "BM")
        elif self.setting > 1:
            tokens.append(f"BM{self.setting}")
        label = "+".join(tokens) or "SGD"

        if self.best_of_plain:
            if not (self._is_usf_bm() and self.batch_schedule == USF_BM_BATCH_SCHEDULE):
                label += "-best_" + _format_schedule(self.batch_schedule)
        elif self.batch_schedule is not None:
            label += "-" + _format_schedule(self.batch_schedule)
        elif self.batch_size is not None:
            label += f"-{self.batch_size}"

        if self.clamp != "none":
            label += " " + _CLAMP_WORDS[self.clamp]
        return label

    def variants(self) -> tuple["Condition", ...]:
        """Return the runs whose better result is this condition's reported number.

        Returns:
          For a ``best_of_plain`` condition the run with the schedule's first batch size
          throughout (``uSF+BM-100``) and the scheduled run (``uSF+BM-100_500@3``);
          otherwise ``(self,)``.
        """
        if not self.best_of_plain:
            return (self,)
        fixed = dataclasses.replace(
            self,
            batch_size=self.batch_schedule[0][1],
            batch_schedule=None,
            best_of_plain=False,
        )
        return fixed, dataclasses.replace(self, best_of_plain=False)

    def batch_size_at(self, epoch: int, default: int) -> int:
        """Return the batch size of 0-based ``epoch``, with ``default`` for no override."""
        if self.batch_schedule is not None:
            return [batch for start, batch in self.batch_schedule if start <= epoch][-1]
        return default if self.batch_size is None else self.batch_size


def _parse_token(token: str, label: str, components: dict[str, Any]) -> None:
    """Add the component named by one ``+``-separated token of ``label``."""
    lower = token.lower()
    if lower == "sgd":
        raise ValueError(
            f"'SGD' must stand alone, but condition label {label!r} combines it with other "
            "tokens; symmetric feedback is the default, so drop it (e.g. 'BN+BM')."
        )
    flip = _FLIP_TOKEN.fullmatch(token)
    if flip:
        kind, value = "feedback", (flip.group(1).lower() + "_p", float(flip.group(2)))
    elif lower in _FEEDBACK_TOKENS and lower not in _FLIP_RULES:
        kind, value = "feedback", (lower, 0.0)
    elif lower in ("bn", "bnaffine", "bnplain"):
        kind, value = "bn_mode", lower[2:] or None
    elif lower in ("bm", "bm1", "bm2", "bm3"):
        kind, value = "setting", (int(lower[2:] or 1), lower == "bm1")
    else:
        raise ValueError(
            f"Unknown token {token!r} in condition label {label!r}; valid tokens: "
            f"{_VALID_TOKENS}, joined by '+', optionally followed by -<batch size> and "
            "' Bottom' or ' Top'."
        )
    if kind in components:
        raise ValueError(f"Condition label {label!r} gives the {kind} twice (at {token!r}).")
    components[kind] = value


def parse(label: str) -> Condition:
    """Parse a condition label of the paper, e.g. ``uSF+BN+BM`` or ``SGD-30``.

    Args:
      label: a label in the grammar of this module's docstring.

    Returns:
      The ``Condition`` whose ``label`` prints ``label`` in canonical spelling.

    Raises:
      ValueError: for an empty label, an unknown token or clamp word, a component given
        twice, ``SGD`` combined with other tokens, or an invalid flip probability.
    """
    words = label.split()
    if not words or len(words) > 2:
        raise ValueError(
            f"Invalid condition label {label!r}: expected '<tokens>[-<batch>]' optionally "
            "followed by ' Bottom' or ' Top'."
        )
    base, clamp = words[0], "none"
    if len(words) == 2:
        clamp = words[1].lower()
        if clamp not in _CLAMP_WORDS:
            raise ValueError(
                f"Unknown clamp {words[1]!r} in condition label {label!r}; valid choices: "
                "Bottom, Top."
            )

    batch_fields: dict[str, Any] = {}
    suffix = _BATCH_SUFFIX.fullmatch(base)
    if suffix:
        base, batch = suffix.group(1), suffix.group(2).lower()
        if batch.startswith("best_"):
            batch_fields = {"batch_schedule": _parse_schedule(batch[5:]), "best_of_plain": True}
        elif "_" in batch:
            batch_fields = {"batch_schedule": _parse_schedule(batch)}
        else:
            batch_fields = {"batch_size": int(batch)}

    components: dict[str, Any] = {}
    if base.lower() != "sgd":
        for token in base.split("+"):
            _parse_token(token, label, components)
    feedback, flip_prob = components.get("feedback", ("symmetric", 0.0))
    setting, show_setting = components.get("setting", (0, False))
    bn_mode = "none"
    if "bn_mode" in components:
        bn_mode = components["bn_mode"] or paper_bn_mode(feedback)
    return Condition(
        feedback=feedback,
        flip_prob=flip_prob,
        bn_mode=bn_mode,
        setting=setting,
        clamp=clamp,
        show_setting=show_setting,
        **batch_fields,
    )


def rule(condition: Condition, sigma: float = 0.05):
    """Return the ``asym_jax.feedback.FeedbackRule`` of ``condition``.

    Args:
      condition: the condition.
      sigma: standard deviation of RndF feedback entries (the paper's 0.05); the other
        rules ignore it.
    """
    # Imported here so that labels can be parsed without loading JAX.
    from asym_jax import feedback

    return feedback.get_rule(condition.feedback, flip_prob=condition.flip_prob, sigma=sigma)
