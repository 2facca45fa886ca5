"""The summary that opens the run report: what the person who decides needs, in a few lines.

Every sentence is built from the numbers the notebooks wrote; nothing here is a
number of its own. The sources:

* ``03_fusion/metrics.json``: ``chosen``, ``selection`` (the validation choice,
  the test table with 95% intervals, the paired tests against the best single
  modality and BM25) and the plain ``<metric>`` table when no selection exists;
* ``05_rankers/metrics.json``: ``catalog.<ranker>.ndcg@10`` (with the
  ``oracle``, the ground truth's own next-item probabilities, where the catalog
  is synthetic) and ``baselines``;
* the run's own ``results`` (notebook 07): each task's paired ``comparison`` of
  the retrieval order against the re-ranked one, and the ANN recall of the
  exact candidates;
* ``06_scann_index/metrics.json``: the chosen index setting, its recall and
  queries per second against exact search;
* ``01_catalog/metrics.json`` and every ``{"skipped": reason}`` a stage wrote:
  what the catalog lacked.

A stage that is absent (no folder) or skipped says so in its line instead of
disappearing; a key that is missing drops that clause, never the whole report.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ORACLE_MEANING", "summary_html", "summary_lines"]

ORACLE_MEANING = (
    "the ground truth's own next-item probabilities: what a perfect ranker would score"
)
STAGE_NAMES = {
    "01_catalog": "catalog profile",
    "02_encoders": "encoders",
    "03_fusion": "search system and fusion",
    "04_embedding_space": "embedding atlas",
    "05_rankers": "rankers",
    "06_scann_index": "ANN index",
    "07_evaluation_report": "two-stage evaluation",
}
RANKER_NAMES = {
    "bpr": "BPR",
    "ease": "EASE",
    "itemknn": "item-kNN",
    "popularity": "popularity",
    "sequential": "sequential",
}
TASK_NAMES = {"queries": "search queries", "next_item": "next item"}


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return None if math.isnan(v) or math.isinf(v) else float(v)


def _f(v: Any, digits: int = 3, sign: bool = False) -> str:
    x = _num(v)
    if x is None:
        return "–"
    x = round(x, digits) + 0.0  # no "-0.000"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _mapping(v: Any) -> Mapping[str, Any]:
    """``v`` when it is a mapping, else an empty one: a key the metrics lack drops a clause, not the report."""
    return v if isinstance(v, Mapping) else {}


def _count(v: Any) -> str:
    x = _num(v)
    return f"{int(x):,}" if x is not None else "?"


def _skipped(metrics: Any) -> str | None:
    if isinstance(metrics, Mapping) and "skipped" in metrics:
        return str(metrics["skipped"])
    return None


def _absent_or_skipped(label: str, stem: str, metrics: Any) -> str | None:
    """The line for a stage without numbers, or None when it has some."""
    if (why := _skipped(metrics)) is not None:
        return f"{label}: not evaluated: notebook {stem[:2]} ({STAGE_NAMES[stem]}) stopped: {why}."
    if not isinstance(metrics, Mapping) or not metrics:
        return f"{label}: no numbers: notebook {stem[:2]} ({STAGE_NAMES[stem]}) did not run in this report's folder."
    return None


def _verdict(cmp: Mapping[str, Any]) -> str | None:
    """better / worse / no clear difference for a paired result ``b - a`` (b: the system judged)."""
    diff, low, high, p = (_num(cmp.get(k)) for k in ("diff", "low", "high", "p_value"))
    if diff is None or low is None or high is None or p is None:
        return None
    conf = _num(cmp.get("confidence")) or 0.95
    significant = p < 1 - conf
    if significant and low > 0:
        return "better"
    if significant and high < 0:
        return "worse"
    return "no clear difference"


def _p(v: Any) -> str:
    p = _num(v)
    if p is None:
        return "p=–"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _ci(cmp: Mapping[str, Any]) -> str:
    conf = _num(cmp.get("confidence")) or 0.95
    return (f"{conf * 100:g}% CI {_f(cmp.get('low'), sign=True)} to {_f(cmp.get('high'), sign=True)}, "
            f"{_p(cmp.get('p_value'))}")


def _tail(cmp: Mapping[str, Any]) -> str:
    return f"{_f(cmp.get('diff'), sign=True)}, {_ci(cmp)}"


# --------------------------------------------------------------------------- search (03)


def _interval(row: Mapping[str, Any] | None, metric: str, point: Mapping[str, Any], name: str) -> str | None:
    if isinstance(row, Mapping) and _num(row.get(metric)) is not None:
        low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
        if _num(low) is not None and _num(high) is not None:
            return f"{_f(row[metric])} [{_f(low)}, {_f(high)}]"
        return _f(row[metric])
    if _num(point.get(name)) is not None:
        return f"{_f(point[name])} (no interval recorded)"
    return None


def _search_lines(m03: Any) -> list[str]:
    if (line := _absent_or_skipped("Search", "03_fusion", m03)) is not None:
        return [line]
    sel = _mapping(m03.get("selection"))
    metric = str(sel.get("metric") or "ndcg@10")
    chosen = m03.get("chosen") or sel.get("chosen")
    test = _mapping(sel.get("test"))
    point = _mapping(m03.get(metric))
    comps = _mapping(sel.get("comparisons"))
    if chosen is None:
        return [f"Search: notebook 03 recorded no chosen system (keys: {', '.join(sorted(m03)) or 'none'})."]
    chosen = str(chosen)

    def kind(name: str) -> str | None:
        for table in (test, sel.get("validation") or {}):
            row = table.get(name) if isinstance(table, Mapping) else None
            if isinstance(row, Mapping) and row.get("kind"):
                return str(row["kind"])
        if name == "bm25":
            return "lexical"
        return "single" if name in (m03.get("modalities") or []) else None

    names = list(dict.fromkeys([*test, *point]))
    singles = [n for n in names if kind(n) == "single"]
    best_single: str | None
    if kind(chosen) == "single":
        best_single = chosen
    elif isinstance(comps.get("vs best single modality"), Mapping):
        best_single = str(comps["vs best single modality"].get("name_a"))
    else:
        scored = [(n, v) for n in singles
                  if (v := _num((test.get(n) or {}).get(metric)) or _num(point.get(n))) is not None]
        best_single = max(scored, key=lambda nv: nv[1])[0] if scored else None
    lexical = [n for n in names if kind(n) == "lexical"]
    bm25 = "bm25" if "bm25" in names else (lexical[0] if lexical else None)

    n_test = next((r.get("n") for r in test.values() if isinstance(r, Mapping) and r.get("n")), None)
    n_test = n_test or m03.get("n_test_queries")
    where = f"on {_count(n_test)} test queries" if n_test is not None else "on the test queries"
    has_ci = any(isinstance(r, Mapping) and f"{metric}_low" in r for r in test.values())
    head = f"Search ({metric} {where}{', 95% intervals' if has_ci else ''}): "
    parts = [f"chosen {chosen} {_interval(test.get(chosen), metric, point, chosen) or '(no test score)'}"]
    if best_single is not None and best_single != chosen:
        score = _interval(test.get(best_single), metric, point, best_single)
        parts.append(f"best single modality {best_single} {score or '(no test score)'}")
    elif best_single is None:
        parts.append("no single-modality system was compared")
    if bm25 is not None and bm25 != chosen:
        parts.append(f"BM25 {_interval(test.get(bm25), metric, point, bm25) or '(no test score)'}")
    elif bm25 is None:
        parts.append("no BM25 baseline was run")
    lines = [head + "; ".join(parts) + "."]

    # The verdict: the paired tests notebook 03 ran on the test queries.
    said = []
    if kind(chosen) == "single":
        said.append(f"one modality alone, {chosen}, is the best search system on this catalog: no fusion helped")
    described = {
        "vs best single modality": "the next best single modality" if kind(chosen) == "single"
        else "the best single modality",
        "vs BM25": "BM25",
    }
    for label, desc in described.items():
        cmp = comps.get(label)
        if not isinstance(cmp, Mapping) or (verdict := _verdict(cmp)) is None:
            continue
        other = str(cmp.get("name_a"))
        who = desc if other.lower() == desc.lower() else f"{desc}, {other}"
        comma = "" if who == desc else ","
        if verdict == "better":
            said.append(f"{chosen} beats {who}{comma} by {_f(cmp.get('diff'))} ({_ci(cmp)})")
        elif verdict == "worse":
            said.append(f"{chosen} trails {who}{comma} by {_f(-(_num(cmp.get('diff')) or 0))} ({_ci(cmp)})")
        else:
            said.append(f"{chosen} is not clearly different from {who} ({_tail(cmp)})")
    if not comps and kind(chosen) != "single":
        said.append("no paired test was recorded, so compare the intervals above")
    how = str(sel.get("reason")) if sel.get("reason") else None
    if sel.get("fallback"):
        said.append(f"the choice is the documented default, not a measurement: {how}")
    elif how:
        said.append(f"chosen on validation: {how}")
    lines.append("Verdict: " + "; ".join(said) + ".")
    return lines


# --------------------------------------------------------------------------- rankers (05)


def _ranker_lines(m05: Any) -> list[str]:
    if (line := _absent_or_skipped("Rankers", "05_rankers", m05)) is not None:
        return [line]
    cat = _mapping(m05.get("catalog"))
    base = _mapping(m05.get("baselines"))
    rows = {**{k: v for k, v in base.items() if isinstance(v, Mapping)},
            **{k: v for k, v in cat.items() if isinstance(v, Mapping)}}
    keys = sorted({k for v in rows.values() for k in v if str(k).startswith("ndcg@")})
    if not keys:
        return ["Rankers: notebook 05 recorded no nDCG on this catalog."]
    metric = "ndcg@10" if "ndcg@10" in keys else keys[0]
    score = {n: x for n, v in rows.items() if (x := _num(v.get(metric))) is not None}
    pop = score.get("popularity")
    oracle = score.get("oracle")
    learned = sorted(((n, v) for n, v in score.items() if n not in ("popularity", "oracle")),
                     key=lambda nv: (-nv[1], nv[0]))
    listed = ", ".join(f"{RANKER_NAMES.get(n, n)} {_f(v)}" for n, v in learned) or "none trained"
    head = f"Rankers (next item, {metric} on each user's held-out last interaction): {listed}"
    head += f" against popularity {_f(pop)}." if pop is not None else " (no popularity baseline recorded)."
    lines = [head]
    if learned:
        best, best_v = learned[0]
        name = RANKER_NAMES.get(best, best)
        if pop is None:
            verdict = f"{name} is the best ranker (no popularity baseline to compare with)"
        elif best_v > pop:
            times = f"{best_v / pop:.1f}× popularity's {metric}" if pop > 0 else f"popularity scores {_f(pop)}"
            verdict = f"{name} is the best ranker, {times} ({_f(best_v - pop, sign=True)})"
        else:
            verdict = f"no ranker beats popularity on this catalog ({metric} {_f(pop)})"
        lines.append(f"Verdict: {verdict}.")
    if oracle is not None:
        share = ""
        if learned and oracle > 0:
            share = f"; {RANKER_NAMES.get(learned[0][0], learned[0][0])} reaches {learned[0][1] / oracle:.0%} of it"
        lines.append(f"Oracle {_f(oracle)}: {ORACLE_MEANING}{share}.")
    blind = _num(_mapping(m05.get("order_blind_oracle")).get(metric))
    if blind is not None:
        lines.append(f"Ignoring the order of a user's items, even the ground truth scores {_f(blind)}: "
                     "the ceiling of BPR, EASE and item-kNN.")
    return lines


# --------------------------------------------------------------------------- re-ranking (07)


def _rerank_lines(results: Mapping[str, Any], m01: Any) -> list[str]:
    tasks = [t for t in ("queries", "next_item") if isinstance(results.get(t), Mapping)]
    tasks += sorted(t for t, v in results.items()
                    if t not in tasks and isinstance(v, Mapping) and "comparison" in v)
    if not tasks:
        return ["Re-ranking: not evaluated in this run (notebook 07 wrote no two-stage results)."]
    lines = []
    for task in tasks:
        name = TASK_NAMES.get(task, task)
        cmp = results[task].get("comparison")
        if not isinstance(cmp, Mapping) or (verdict := _verdict(cmp)) is None:
            lines.append(f"Re-ranking, {name}: no paired comparison recorded.")
            continue
        metric = cmp.get("metric", "ndcg")
        n = f", {_count(cmp.get('n'))} queries" if cmp.get("n") is not None else ""
        every = f"every one of the {_count(cmp['n'])} queries" if cmp.get("n") is not None else "every query"
        same = all(_num(cmp.get(k)) == 0 for k in ("diff", "low", "high"))
        scores = f"{metric} {_f(cmp.get('mean_a'))} retrieval only, {_f(cmp.get('mean_b'))} re-ranked"
        if same:
            lines.append(f"Re-ranking, {name}: no effect: {scores}, the same on {every}.")
            continue
        word = {"better": "helps", "worse": "hurts", "no clear difference": "no clear difference"}[verdict]
        lines.append(f"Re-ranking, {name}: {word}: {scores} ({_tail(cmp)}{n}).")
    missing = [t for t in ("queries", "next_item") if t not in tasks]
    counts = _mapping(m01.get("counts")) if isinstance(m01, Mapping) else {}
    for task in missing:
        table = "interactions" if task == "next_item" else "qrels"
        why = f"the catalog has no {table}" if counts.get(table) == 0 else "not in this run's results"
        lines.append(f"Re-ranking, {TASK_NAMES[task]}: not evaluated ({why}).")
    return lines


# --------------------------------------------------------------------------- index (06)


def _index_lines(m06: Any, results: Mapping[str, Any]) -> list[str]:
    if (line := _absent_or_skipped("Index", "06_scann_index", m06)) is not None:
        return [line]
    chosen = _mapping(m06.get("chosen"))
    k = m06.get("k")
    rkey = f"recall@{k}" if k is not None and f"recall@{k}" in chosen else next(
        (key for key in chosen if str(key).startswith("recall@")), None)
    if rkey is None:
        return ["Index: notebook 06 recorded no chosen setting with its recall."]
    setting = []
    if chosen.get("leaves_to_search") is not None and chosen.get("num_leaves") is not None:
        setting.append(f"{_count(chosen['leaves_to_search'])} of {_count(chosen['num_leaves'])} leaves searched")
    if chosen.get("reorder") is not None:
        setting.append(f"reorder {_count(chosen['reorder'])}")
    text = "Index: ScaNN" + (f" ({', '.join(setting)})" if setting else "")
    text += f": {rkey} {_f(chosen[rkey])}"
    if m06.get("n_queries") is not None:
        text += f" on {_count(m06['n_queries'])} queries"
    text += f" (its share of the exact top {rkey.split('@')[1]}"
    target = _num(m06.get("recall_target"))
    if target is not None:
        met = chosen.get("meets_target")
        met = (_num(chosen[rkey]) or 0) >= target if met is None else bool(met)
        text += f"; target {_f(target, 2)}: {'met' if met else 'not met'}"
    text += ")"
    qps, exact = _num(m06.get("chosen_qps")), _num(m06.get("exact_qps"))
    if m06.get("n_items") is not None:
        text += f" over {_count(m06['n_items'])} items"
    if qps is not None:
        text += f"; {qps:,.0f} queries/s"
        if exact:
            text += f" against {exact:,.0f} for exact search ({qps / exact:.1f}×)"
        text += " on the machine that ran notebook 06"
    lines = [text + "."]
    inside = []
    info = _mapping(results.get("info"))
    for task in ("queries", "next_item"):
        res = results.get(task)
        if not isinstance(res, Mapping) or (task == "next_item" and info.get("next_item_stage1")):
            continue  # next item retrieves from its own index (the ranker's item vectors)
        ex = (res.get("metrics") or {}).get("exact_retrieval") or {}
        ann = _num(ex.get("ann_recall"))
        cand = (res.get("config") or {}).get("candidates")
        if ann is not None:
            top = f"the exact top {_count(cand)}" if cand is not None else "the exact candidates"
            inside.append(f"{_f(ann)} of {top} for {TASK_NAMES.get(task, task)}")
    if inside:
        lines.append("In the two-stage system (notebook 07) stage 1 keeps " + "; ".join(inside) + ".")
    return lines


# --------------------------------------------------------------------------- catalog (01, skips)


def _catalog_lines(notebooks: Mapping[str, Any]) -> list[str]:
    m01 = notebooks.get("01_catalog")
    lines = []
    lacks = []
    if _skipped(m01) is None and isinstance(m01, Mapping) and m01:
        counts = _mapping(m01.get("counts"))
        cover = _mapping(m01.get("modality_coverage"))
        bits = [f"{_count(counts.get('products'))} products"]
        if counts.get("interactions"):
            users = f"{_count(m01['users'])} users with " if m01.get("users") else ""
            bits.append(f"{users}{_count(counts['interactions'])} interactions")
        if counts.get("queries"):
            judged = f" with {_count(counts['qrels'])} relevance judgements" if counts.get("qrels") else ""
            bits.append(f"{_count(counts['queries'])} search queries{judged}")
        order = {m: i for i, m in enumerate(("text", "image", "audio"))}
        present = {m: cover[m] for m in sorted(cover, key=lambda m: (order.get(m, 9), m))
                   if (_num(cover[m]) or 0) > 0}
        if present:
            bits.append("modalities " + ", ".join(f"{m} {_num(v):.0%}" for m, v in present.items()))
        lines.append("Catalog: " + "; ".join(bits) + ".")
        for m, v in cover.items():
            if _num(v) == 0:
                lacks.append(f"{m} (no product has it: left out of the encoders, fusion and the atlas)")
        if counts.get("interactions") == 0:
            lacks.append("interactions (no rankers and no next-item task)")
        if counts.get("queries") == 0 or counts.get("qrels") == 0:
            lacks.append("search queries with relevance judgements (no search evaluation)")
    else:
        lines.append(_absent_or_skipped("Catalog", "01_catalog", m01) or "Catalog: no profile.")
    skipped = [(stem, why) for stem in sorted(notebooks)
               if stem != "01_catalog" and (why := _skipped(notebooks[stem])) is not None]
    if lacks:
        lines.append("What the catalog lacked: " + "; ".join(lacks) + ".")
    elif isinstance(m01, Mapping) and _skipped(m01) is None and m01:
        lines.append("What the catalog lacked: nothing the series uses (every modality, interactions, "
                     "search queries).")
    if skipped:
        lines.append("Stages skipped: " + "; ".join(
            f"{stem[:2]} {STAGE_NAMES.get(stem, stem)} ({why})" for stem, why in skipped) + ".")
    return lines


# --------------------------------------------------------------------------- entry points


def summary_lines(
    notebooks: Mapping[str, Any], results: Mapping[str, Any] | None = None
) -> list[tuple[str, list[str]]]:
    """``[(topic, [sentence, ...]), ...]``: search, rankers, re-ranking, index, catalog.

    ``notebooks``: each earlier notebook's metrics (``{stem: metrics or None}``;
    a stem that is missing is a stage that did not run). ``results``: the run's
    two-stage results (``{"queries": {...}, "next_item": {...}}``).
    """
    results = results if isinstance(results, Mapping) else {}
    return [
        ("Search system", _search_lines(notebooks.get("03_fusion"))),
        ("Rankers", _ranker_lines(notebooks.get("05_rankers"))),
        ("Re-ranking", _rerank_lines(results, notebooks.get("01_catalog"))),
        ("Index", _index_lines(notebooks.get("06_scann_index"), results)),
        ("Catalog", _catalog_lines(notebooks)),
    ]


def summary_html(topics: Sequence[tuple[str, Sequence[str]]]) -> str:
    """The summary as a short definition list (one row per topic)."""
    rows = "".join(
        f"<dt>{html.escape(topic)}</dt>"
        + "".join(f"<dd>{html.escape(line)}</dd>" for line in lines)
        for topic, lines in topics
    )
    return (
        "<p class='muted'>Each line is read from the notebooks' metrics.json files; "
        "the sections below hold every number.</p>"
        f"<dl class='summary-list'>{rows}</dl>"
    )
