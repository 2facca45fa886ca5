"""Hyperparameters chosen on validation: `tune_ranker` searches a ranker's space with optuna.

The validation split is carved from the *training* rows only (`validation_split`:
the same protocol as the outer split, applied to its train part), so the test
rows never take part in a choice. Each trial builds the ranker from its spec
(`workbench.rankers.registry`), fits it on the validation split's train rows and
scores full-ranking nDCG@k (the user's training items excluded) on its held-out
rows. The sampler is optuna's TPE seeded with `seed` and run one trial at a
time, so the same data and seed give the same trials; the first trial is the
ranker's defaults (clipped to the space), so the choice is never worse than
them on validation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from workbench.catalog.splits import Split, leave_last_out, stratified_split
from workbench.errors import ConfigError, EvaluationError
from workbench.evaluate.rankers import evaluate_ranker
from workbench.rankers.base import Ranker
from workbench.rankers.registry import Choice, FloatRange, IntRange, Param, make_ranker, ranker_spec

logger = logging.getLogger(__name__)

VALIDATION_KINDS = ("leave_last", "stratified")


def validation_split(train: pl.DataFrame, kind: str = "leave_last", seed: int = 0,
                     ratio: float = 0.75) -> Split:
    """A validation split of `train` alone, by the protocol of the outer split.

    `leave_last`: each user's latest training row is held out (sequential protocols);
    `stratified`: `ratio` of each user's training rows stay, by Recommenders'
    stratified split seeded with `seed`. An empty held-out part is an `EvaluationError`.
    """
    if kind == "leave_last":
        out = leave_last_out(train)
    elif kind == "stratified":
        out = stratified_split(train, ratio, seed=seed)
    else:
        raise ConfigError(f"validation split {kind!r}: expected one of {', '.join(VALIDATION_KINDS)}")
    if out.test.height == 0:
        raise EvaluationError(f"{kind} validation split of {train.height} training rows held out nothing "
                              "(no user has enough rows); there is nothing to choose hyperparameters on")
    return out


@dataclass
class TuneResult:
    """The search's outcome: the chosen parameters and every trial (validation only)."""

    model: str
    params: dict[str, Any]  # the chosen trial's parameters plus the fixed ones
    value: float  # its validation metric
    metric: str
    budget: int
    seed: int
    trials: list[dict[str, Any]] = field(default_factory=list)  # number, value, params
    n_validation_users: int = 0
    note: str = ""  # why nothing was searched, when the ranker could not be fitted on validation

    def make(self, seed: int | None = None, device: str = "auto", progress: bool = False) -> Ranker:
        """A fresh ranker with the chosen parameters (fit it on the full training rows)."""
        return make_ranker(self.model, seed=self.seed if seed is None else seed, device=device,
                           progress=progress, **self.params)

    def table(self) -> pl.DataFrame:
        """One row per trial: number, validation metric, then the searched parameters."""
        rows = [{"trial": t["number"], self.metric: t["value"], **t["params"]} for t in self.trials]
        return pl.DataFrame(rows)


def _suggest(trial: Any, name: str, param: Param) -> Any:
    if isinstance(param, FloatRange):
        return trial.suggest_float(name, param.low, param.high, log=param.log)
    if isinstance(param, IntRange):
        return trial.suggest_int(name, param.low, param.high, log=param.log)
    if isinstance(param, Choice):
        return trial.suggest_categorical(name, list(param.values))
    raise ConfigError(f"search space {name!r}: {param!r} is not a FloatRange, IntRange or Choice")


def _clip_default(value: Any, param: Param) -> Any:
    """`value` moved into `param`'s range (None when it cannot be a point of the space)."""
    if isinstance(param, Choice):
        return value if value in param.values else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    out = min(max(value, param.low), param.high)
    return int(round(out)) if isinstance(param, IntRange) else float(out)


def _defaults_of(model: str, space: Mapping[str, Param]) -> dict[str, Any]:
    spec = ranker_spec(model)
    ranker = make_ranker(model, **spec.defaults)
    values = {}
    config = getattr(ranker, "config", None)
    for name, param in space.items():
        source = getattr(config, name, None) if config is not None else None
        if source is None and config is not None and hasattr(config, "train"):
            source = getattr(config.train, name, None)
        clipped = _clip_default(source, param) if source is not None else None
        if clipped is not None:
            values[name] = clipped
    return values


def tune_ranker(
    model: str,
    train: pl.DataFrame,
    items: Sequence[str] | np.ndarray,
    budget: int,
    seed: int = 0,
    *,
    item_embeddings: np.ndarray | None = None,
    validation: str = "leave_last",
    space: Mapping[str, Param] | None = None,
    fixed: Mapping[str, Any] | None = None,
    k: int = 10,
    device: str = "auto",
) -> TuneResult:
    """Choose `model`'s hyperparameters on a validation split carved from `train` (see the module doc).

    `budget` trials (>= 1) of optuna's seeded TPE sampler over `space` (default:
    the spec's, less the `fixed` ones); `fixed` parameters are passed to every trial
    and kept in the result; an explicit `space` that also holds one is a ConfigError. Returns the best trial's parameters (ties: the earlier trial).
    """
    import optuna

    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise ConfigError(f"tune_ranker: budget={budget!r}; expected at least 1 trial (the search needs "
                          "something to choose from)")
    spec = ranker_spec(model)
    fixed = dict(fixed or {})
    # a fixed parameter leaves the spec's own space; a space given explicitly must not hold one
    space = {n: p for n, p in spec.space.items() if n not in fixed} if space is None else dict(space)
    overlap = sorted(set(space) & set(fixed))
    if overlap:
        raise ConfigError(f"tune_ranker: {', '.join(overlap)} both searched and fixed; expected one or the other")
    val = validation_split(train, validation, seed=seed)
    users = np.sort(val.test["user_id"].unique().to_numpy().astype(str))
    metric = f"ndcg@{k}"


    unfit: list[str] = []

    def objective(trial: Any) -> float:
        params = {name: _suggest(trial, name, p) for name, p in space.items()}
        t0 = time.perf_counter()
        ranker = make_ranker(model, seed=seed, device=device, **fixed, **params)
        try:
            ranker.fit(val.train, items, item_embeddings=item_embeddings)
        except (ConfigError, EvaluationError) as exc:
            # the validation split's training rows are too thin for this ranker (e.g. no user
            # with two interactions left for a sequence model): a failed trial, said below
            unfit.append(str(exc))
            return float("nan")
        value = evaluate_ranker(ranker, val.test, k=k, ks=(k,), users=users)[metric]
        logger.info("tune %s trial %d: %s=%.4f %s (%.1f s)", model, trial.number, metric, value, params,
                    time.perf_counter() - t0)
        return value if math.isfinite(value) else 0.0

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported by our own note
    # Seeded TPE, one trial at a time: the trials depend on the seed and the data only.
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(max(2, budget // 3), 10))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if space:
        study.enqueue_trial(_defaults_of(model, space), skip_if_exists=False)
    study.optimize(objective, n_trials=budget if space else 1, n_jobs=1, show_progress_bar=False)
    done = [(t, t.value) for t in study.trials if t.value is not None and math.isfinite(t.value)]
    if not done:
        note = (f"not tuned: the ranker could not be fitted on the validation split's training rows "
                f"({unfit[0] if unfit else 'no trial completed'}); its defaults are kept")
        logger.warning("tune %s: %s", model, note)
        return TuneResult(model=model, params=dict(fixed), value=float("nan"), metric=metric, budget=int(budget),
                          seed=seed, trials=[], n_validation_users=len(users), note=note)
    best, best_value = max(done, key=lambda trial_value: (trial_value[1], -trial_value[0].number))
    trials = [{"number": t.number, "value": float(value), "params": dict(t.params)} for t, value in done]
    return TuneResult(model=model, params={**fixed, **best.params}, value=float(best_value), metric=metric,
                      budget=int(budget), seed=seed, trials=trials, n_validation_users=len(users))
