"""Do two runs agree? Each metric identical, within its stated tolerance, or outside it.

Trained floats differ between CPUs in the third decimal (see
:mod:`workbench.reproducibility`), so "the same numbers" across machines means
*within a tolerance per metric*. This module states those tolerances and
compares two metrics documents (``metrics.json`` of a run, of a stage, or a
committed reference) leaf by leaf:

>>> result = compare_metrics(reference, actual)
>>> result.ok, result.outside()        # what `workbench reproduce/compare` and the tests report

Documents are flattened to dotted keys (``notebooks.03_fusion.ablation.fused.ndcg@10``);
the first :class:`Tolerance` whose pattern (``fnmatch`` over the dotted key)
matches decides the allowed absolute difference. Text, booleans and nulls
must be equal, unless their rule's tolerance is infinite (a setting chosen at
run time, such as the search system picked on validation); integers are held
to the same rule as floats (a count of queries won by a modality moves with the
trained models, a count of products does not, and the rules say which is which).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workbench.errors import EvaluationError

Scalar = float | int | str | bool | None


@dataclass(frozen=True)
class Tolerance:
    """The largest absolute difference allowed for metrics whose dotted key matches `pattern`."""

    pattern: str
    abs: float
    why: str

    def __post_init__(self) -> None:
        if not self.pattern:
            raise EvaluationError("Tolerance.pattern is empty: expected a glob over dotted metric keys")
        if not self.abs >= 0:  # inf is allowed: a setting that may change (said in `why`)
            raise EvaluationError(f"Tolerance {self.pattern!r}: abs={self.abs!r}, expected a value >= 0")


# First match wins: specific rules before general ones. The trained tolerances are about
# 2.5x the largest drift measured between the pinned kernels and generic ones
# (`../shared/tools/as-other-cpu`: ATen without vector code, oneDNN at SSE4.1) on the
# ci synthetic run: 0.019 on a mean, 0.031 on an interval end, 0.06 on stage-1 recall
# through the ANN index, 0.11 on a ScaNN recall at one partition of twenty, 0.14 on a
# p-value, one query won by another modality.
DEFAULT_TOLERANCES: tuple[Tolerance, ...] = (
    # Identity and data: never allowed to move.
    Tolerance("data.*", 0.0, "catalog checksums and counts"),
    Tolerance("run", 0.0, "run name"),
    Tolerance("config.*", 0.0, "run configuration"),
    Tolerance("*.config.*", 0.0, "stage configuration"),
    Tolerance("*.skipped", 0.0, "why a stage stopped"),
    Tolerance("*01_catalog.*", 0.0, "catalog profile: counts from the data alone"),
    Tolerance("*.n", 0.0, "number of queries or users evaluated"),
    Tolerance("*.n_*", 0.0, "sizes"),
    Tolerance("*.counts.*", 0.0, "sizes"),
    Tolerance("*.confidence", 0.0, "a setting"),
    # Untrained rows: same arithmetic on the same data, only summation order can differ.
    Tolerance("*.popularity.*", 1e-4, "no training: popularity counts"),
    Tolerance("*.oracle.*", 1e-4, "no training: the ground truth's exact scores"),
    Tolerance("*.order_blind_oracle.*", 1e-4, "no training: the ground truth's taste and popularity"),
    # Choices made against a target are settings, not measurements: near the target,
    # drift changes the choice, and its effect is held by the later stages' tolerances.
    Tolerance("*06_scann_index.chosen.*", math.inf, "a setting chosen against a recall target"),
    Tolerance("*03_fusion.chosen", math.inf, "the search system chosen on validation (near-ties may flip)"),
    Tolerance("*03_fusion.tuned.*", math.inf, "settings tuned on validation (near-ties may flip)"),
    Tolerance("*03_fusion.selection.chosen", math.inf, "the search system chosen on validation"),
    Tolerance("*03_fusion.selection.comparisons.*.name_?", math.inf, "which systems the chosen one was tested against"),
    Tolerance("*info.search_system", math.inf, "the search system chosen on validation"),
    # Where k-means draws partition borders moves with any drift in the embeddings.
    Tolerance("*06_scann_index.sweep.*", 0.25, "ScaNN recall when few partitions are searched"),
    Tolerance("*candidate_recall", 0.15, "stage-1 recall through the ANN index and the setting chosen in 06"),
    Tolerance("*ann_recall", 0.15, "share of the exact candidates the ANN index finds"),
    Tolerance("*.p_value", 0.3, "p-values of near-zero differences swing with any drift"),
    Tolerance("*wins*", 6.0, "queries won per modality move with trained floats"),
    Tolerance("*.intervals.*.low", 0.06, "bootstrap interval ends"),
    Tolerance("*.intervals.*.high", 0.06, "bootstrap interval ends"),
    Tolerance("*.low", 0.06, "interval ends"),
    Tolerance("*.high", 0.06, "interval ends"),
    Tolerance("*next_item.*", 0.02, "next-item metrics: means of a few hits over hundreds of users"),
    # Everything else trained: retrieval, ranking and probe metrics in [0, 1].
    Tolerance("*", 0.05, "trained models: float drift between CPUs moves these in the 2nd-3rd decimal"),
)


def flatten(doc: Any, prefix: str = "") -> dict[str, Scalar]:
    """Dotted keys to scalar leaves; list items are keyed by position (``rows.3.recall@10``)."""
    out: dict[str, Scalar] = {}
    if isinstance(doc, Mapping):
        for key, value in doc.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(doc, list | tuple):
        for i, value in enumerate(doc):
            out.update(flatten(value, f"{prefix}.{i}" if prefix else str(i)))
    elif doc is None or isinstance(doc, str | bool | int | float):
        out[prefix] = doc
    else:
        raise EvaluationError(
            f"metric {prefix!r} holds a {type(doc).__name__}: expected numbers, text, lists and objects"
        )
    return out


def tolerance_for(key: str, tolerances: Sequence[Tolerance] = DEFAULT_TOLERANCES) -> Tolerance:
    for rule in tolerances:
        if fnmatch.fnmatchcase(key, rule.pattern):
            return rule
    raise EvaluationError(f"no tolerance matches metric {key!r}: add a rule (e.g. Tolerance('*', ...))")


@dataclass(frozen=True)
class MetricRow:
    """One metric of two runs side by side."""

    key: str
    a: Scalar
    b: Scalar
    status: str  # identical | within | outside | differs | only_a | only_b
    tolerance: float | None = None
    rule: str | None = None

    @property
    def diff(self) -> float | None:
        if _is_number(self.a) and _is_number(self.b):
            return float(self.b) - float(self.a)  # type: ignore[arg-type]
        return None

    @property
    def failed(self) -> bool:
        return self.status not in ("identical", "within")

    def describe(self, name_a: str = "a", name_b: str = "b") -> str:
        """One line naming the metric, both values and the tolerance."""
        if self.status == "only_a":
            return f"{self.key}: only in {name_a} ({self.a!r})"
        if self.status == "only_b":
            return f"{self.key}: only in {name_b} ({self.b!r})"
        if self.status == "differs":
            return f"{self.key}: {name_a} {self.a!r} vs {name_b} {self.b!r} (must be equal)"
        diff = self.diff
        shown = f"{diff:+.6g}" if diff is not None else "?"
        return (f"{self.key}: {name_a} {self.a!r} vs {name_b} {self.b!r} (difference {shown}, "
                f"tolerance {self.tolerance:g}, rule {self.rule!r}): {self.status}")


@dataclass(frozen=True)
class MetricComparison:
    """Every metric of two documents, compared."""

    rows: tuple[MetricRow, ...]
    name_a: str = "a"
    name_b: str = "b"

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.rows)

    def outside(self) -> list[MetricRow]:
        return [r for r in self.rows if r.failed]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + 1
        return dict(sorted(out.items()))

    def table(self, only_changed: bool = False) -> str:
        """A plain-text table: metric, both values, difference, tolerance, verdict."""
        rows = [r for r in self.rows if not (only_changed and r.status == "identical")]
        header = ("metric", self.name_a, self.name_b, "difference", "tolerance", "verdict")
        body = [
            (
                r.key,
                _show(r.a),
                _show(r.b),
                "" if r.diff is None else f"{r.diff:+.4g}",
                "" if r.tolerance is None else f"{r.tolerance:g}",
                {"within": "within tolerance", "only_a": f"only in {self.name_a}",
                 "only_b": f"only in {self.name_b}"}.get(r.status, r.status),
            )
            for r in rows
        ]
        widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                 for line in (header, *body)]
        return "\n".join(lines)

    def summary(self) -> str:
        parts = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in self.counts().items())
        return f"{len(self.rows)} metrics: {parts}" if self.rows else "no metrics"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _show(v: Scalar) -> str:
    if v is None:
        return "null"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def compare_values(key: str, a: Scalar, b: Scalar, tolerances: Sequence[Tolerance]) -> MetricRow:
    if _is_number(a) and _is_number(b):
        rule = tolerance_for(key, tolerances)
        if a == b:
            return MetricRow(key, a, b, "identical", rule.abs, rule.pattern)
        diff = abs(float(b) - float(a))  # type: ignore[arg-type]
        status = "within" if diff <= rule.abs + 1e-12 else "outside"
        return MetricRow(key, a, b, status, rule.abs, rule.pattern)
    if a == b and type(a) is type(b):
        return MetricRow(key, a, b, "identical")
    rule = tolerance_for(key, tolerances)
    if math.isinf(rule.abs):  # a setting chosen at run time (a name, a count): allowed to change
        return MetricRow(key, a, b, "within", rule.abs, rule.pattern)
    return MetricRow(key, a, b, "differs")


def compare_metrics(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    tolerances: Sequence[Tolerance] = DEFAULT_TOLERANCES,
    *,
    ignore: Iterable[str] = (),
    names: tuple[str, str] = ("a", "b"),
) -> MetricComparison:
    """Compare two metrics documents leaf by leaf (keys matching an `ignore` glob are skipped)."""
    patterns = tuple(ignore)
    flat_a, flat_b = flatten(a), flatten(b)

    def kept(key: str) -> bool:
        return not any(fnmatch.fnmatchcase(key, p) for p in patterns)

    rows = []
    for key in sorted(set(flat_a) | set(flat_b)):
        if not kept(key):
            continue
        if key not in flat_b:
            rows.append(MetricRow(key, flat_a[key], None, "only_a"))
        elif key not in flat_a:
            rows.append(MetricRow(key, None, flat_b[key], "only_b"))
        else:
            rows.append(compare_values(key, flat_a[key], flat_b[key], tolerances))
    return MetricComparison(tuple(rows), *names)
