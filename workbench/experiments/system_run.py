"""Evaluate the whole system from the files notebooks 01-06 wrote (what notebook 07 runs).

Reads ``<catalog>`` and ``<work>/{embeddings,index,encoders,rankers}``:

* the ANN index (``<work>/index``, checked against the fused embeddings) and an
  exact index over the same vectors (the baseline for the ANN loss);
* the query encoder (``<work>/encoders``) for the test split of the catalog's
  search queries (``split_queries``: the split the encoders were aligned with,
  so no test query was trained on);
* the ranker notebook 05 saved in ``<work>/rankers/<name>``
  (``workbench.rankers.load_ranker``), checked against this run's catalog,
  leave-last-out split and item universe (the index's items): one trained on
  other data is refused, never silently replaced. Only when no such folder
  exists is the named ranker fitted here on the same split; ``ranker_source``
  says which happened and ``info["ranker_fingerprint"]`` what it was trained on;
* per-modality embeddings (``text``/``image``/``audio`` columns of
  ``items.parquet``) for the modality breakdown.

Then runs :func:`~workbench.evaluate.system.evaluate_two_stage` on both tasks
(search queries, next item), times single queries, and returns everything as
a :class:`SystemRun` (numbers for metrics.json, timings apart, figures).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from workbench.catalog import read_catalog
from workbench.catalog.profiling import has_rows
from workbench.catalog.schema import MODALITIES
from workbench.catalog.splits import Split, leave_last_out, split_queries
from workbench.encoders import load_encoder
from workbench.encoders.data import product_texts
from workbench.errors import ConfigError, EvaluationError
from workbench.evaluate.search import HybridRetriever, LexicalRetriever, stage_one
from workbench.evaluate.system import (
    SystemConfig,
    TwoStageResult,
    evaluate_two_stage,
    measure_latency,
    modality_breakdown,
    next_item_task,
    query_task,
)
from workbench.index import (
    IndexConfig,
    build_index,
    choose_setting,
    config_for_setting,
    inner_product_items,
    inner_product_queries,
    load_index,
    read_item_embeddings,
    sweep,
)
from workbench.lexical import BM25Config, BM25Index
from workbench.rankers import MODELS, Ranker, TrainingFingerprint, load_ranker, make_ranker
from workbench.report import (
    data_fingerprint,
    figures_from_results,
    interval_table,
    modality_figure,
    render_value,
)

logger = logging.getLogger(__name__)

TOWER_INDEX_RECALL = 0.95  # share of the exact top-candidates the two-tower ANN index must keep
TOWER_TUNING_USERS = 500  # training users whose vectors tune that index (no test user, no label)


def _notebook_system() -> SystemConfig:
    return SystemConfig(ks=(5, 10))


@dataclass(frozen=True)
class SystemRunConfig:
    """What notebook 07 evaluates: the two-stage evaluation (`system`) and what this run adds.

    The sizes come from the profile's parameters cell; each part validates itself.
    """

    system: SystemConfig = field(default_factory=_notebook_system)
    latency_queries: int = 200
    query_test_fraction: float = 0.2
    query_split_seed: int = 0
    ranker: str = "sequential"  # <work>/rankers/<ranker>; else fitted here if one of MODELS
    ranker_epochs: int | None = None  # only when no saved ranker exists and one is fitted here
    last_n: int = 5
    max_users: int | None = None  # evaluate the first n test users (sorted ids); None: all
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.latency_queries < 0:
            raise ConfigError(f"SystemRunConfig.latency_queries={self.latency_queries}: expected >= 0")
        if not 0.0 < self.query_test_fraction < 1.0:
            raise ConfigError(f"SystemRunConfig.query_test_fraction={self.query_test_fraction}: "
                              "expected a share in (0, 1)")
        if self.last_n < 1:
            raise ConfigError(f"SystemRunConfig.last_n={self.last_n}: expected >= 1 item")
        if self.max_users is not None and self.max_users < 1:
            raise ConfigError(f"SystemRunConfig.max_users={self.max_users}: expected >= 1 or None (all)")
        if self.ranker_epochs is not None and self.ranker_epochs < 0:
            raise ConfigError(f"SystemRunConfig.ranker_epochs={self.ranker_epochs}: expected >= 0 or None")


@dataclass
class SystemRun:
    """Results of the whole-system evaluation."""

    config: SystemRunConfig
    tasks: dict[str, TwoStageResult]
    latency: dict[str, dict[str, dict[str, float]]]
    modality_frame: pl.DataFrame | None
    modality_summary: dict[str, Any]
    ranker_source: str  # which ranker re-ranked: loaded from where, or fitted here and why
    info: dict[str, Any] = field(default_factory=dict)
    ranker_fingerprint: dict[str, Any] | None = None  # what that ranker was trained on
    notes: dict[str, str] = field(default_factory=dict)  # sentences for the report, not metrics

    @property
    def results(self) -> dict[str, Any]:
        """Every number that goes into metrics.json (no timings)."""
        out: dict[str, Any] = {name: res.to_dict() for name, res in sorted(self.tasks.items())}
        if self.modality_summary:
            out["modalities"] = self.modality_summary
        out["info"] = {**self.info, "ranker_source": self.ranker_source,
                       "ranker_fingerprint": self.ranker_fingerprint}
        return out

    def per_query(self) -> pl.DataFrame:
        """Every task's per-query metrics, one row per (task, query): for paired tests between runs."""
        frames = [res.per_query.with_columns(pl.lit(name).alias("task")) for name, res in sorted(self.tasks.items())]
        return pl.concat(frames, how="diagonal").select("task", pl.exclude("task"))

    def headline(self, digits: int = 3) -> pl.DataFrame:
        """Rounded table task x stage x metric (mean and interval): the notebook's contract."""
        rows = []
        for task, res in sorted(self.tasks.items()):
            for stage in ("retrieval", "reranked"):
                for metric, ci in sorted(res.intervals[stage].items()):
                    if "@" not in metric and metric != "candidate_recall":
                        continue
                    rows.append(
                        {
                            "task": task,
                            "stage": stage,
                            "metric": metric,
                            "mean": round(ci["mean"], digits),
                            "low": round(ci["low"], digits),
                            "high": round(ci["high"], digits),
                            "n": ci["n"],
                        }
                    )
        return pl.DataFrame(rows)

    def report_sections(self) -> list[tuple[str, str]]:
        """HTML blocks for the report: intervals, comparisons, explanations, modality wins."""
        import html


        sections = [("System under evaluation", self._system_html())]
        for name, res in sorted(self.tasks.items()):
            stages = {s: res.intervals[s] for s in ("retrieval", "reranked")}
            extra = ""
            if "exact_retrieval" in res.metrics:
                ann = res.metrics["exact_retrieval"].get("ann_recall")
                exact_rec = res.metrics["exact_retrieval"]["candidate_recall"]
                extra = (
                    f"<p>Stage 1 keeps {res.metrics['retrieval']['candidate_recall']:.3f} of the "
                    f"relevant items in its {res.config.candidates} candidates (exact search: "
                    f"{exact_rec:.3f}); the ANN index finds {ann:.3f} of the exact top "
                    f"{res.config.candidates}.</p>"
                )
            if "vs_full_ranking" in res.metrics:
                share, full = res.metrics["vs_full_ranking"], res.metrics["full_ranking"]
                head = f"ndcg@{res.config.k}"
                extra += (
                    f"<p>Against the ranker alone scoring every item: stage 1 keeps "
                    f"{share.get('candidate_recall', float('nan')):.2f} of its recall@{res.config.candidates} "
                    f"({full[f'recall@{res.config.candidates}']:.3f}); the final list reaches "
                    f"{share.get(head, float('nan')):.2f} of its {head} ({full[head]:.3f}).</p>"
                )
            sections.append(
                (
                    f"{name}: metrics with 95% bootstrap intervals",
                    f"<p class='summary'>{html.escape(res.comparison['summary'])}</p>"
                    + extra
                    + interval_table(stages),
                )
            )
            if res.explanations:
                sections.append(
                    (
                        f"{name}: explanation weights of the listed items",
                        render_value(res.explanations),
                    )
                )
        if self.modality_summary:
            sections.append(
                ("queries: per-modality breakdown", render_value(self.modality_summary))
            )
        return sections

    def _system_html(self) -> str:
        """Which index and which ranker these numbers are about, and what the ranker was trained on."""
        import html

        rows = [("search system", self.notes.get("search_system", self.info.get("search_system", "–"))),
                ("stage 1", f"{self.info.get('index', '?')} over {self.info.get('n_items', '?')} items"),
                *([("next item, stage 1", self.info["next_item_stage1"])] if "next_item_stage1" in self.info else []),
                ("stage 2 ranker", self.ranker_source)]
        fp = self.ranker_fingerprint or {}
        if fp:
            split = fp.get("split") or {}
            rows.append(("ranker trained on",
                         f"catalog {str(fp.get('catalog'))[:12]}…, split {split.get('kind', '?')}, "
                         f"{fp.get('n_interactions', '?')} interactions over {fp.get('n_items', '?')} items"))
        body = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                       for k, v in rows)
        return f"<table>{body}</table>"

    def figures(self) -> dict[str, Any]:

        figs = figures_from_results(
            {name: res.to_dict() for name, res in self.tasks.items()}, self.latency
        )
        if self.modality_summary:
            figs["queries: which modality wins"] = modality_figure(self.modality_summary)
        return figs


def read_search_spec(work: Path) -> dict[str, Any]:
    """`<work>/search.json`, the search system notebook 03 chose ({} when there is none)."""
    import json

    path = work / "search.json"
    if not path.is_file():
        return {}
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EvaluationError(f"{path}: not valid JSON ({exc}); re-run notebook 03") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("chosen"), str):
        raise EvaluationError(f"{path}: expected an object with 'chosen', 'kind' and 'tuning'; re-run notebook 03")
    return spec


def _bm25_over(cat: Any, item_ids: np.ndarray) -> Any:
    """BM25 over the products' title and description, its items in the index's order."""

    products = (pl.DataFrame({"item_id": item_ids.astype(str)})
                .join(cat.products.collect(), on="item_id", how="left", maintain_order="left"))
    return BM25Index.build(item_ids, product_texts(products), BM25Config())


def _aligned(emb_ids: np.ndarray, vectors: np.ndarray, order: np.ndarray) -> np.ndarray:
    pos = {item: i for i, item in enumerate(emb_ids.tolist())}
    idx = np.fromiter((pos.get(i, -1) for i in order.tolist()), np.int64, len(order))
    if (idx < 0).any():
        raise EvaluationError(
            f"index item {order[idx < 0][0]!r} has no fused embedding: the index and "
            "<work>/embeddings/items.parquet come from different runs; rebuild the index (notebook 06)"
        )
    return vectors[idx]


def _load_ranker(work: Path, cfg: SystemRunConfig, expect: TrainingFingerprint, split: Split,
                 item_ids: np.ndarray, vectors: np.ndarray) -> tuple[Ranker, str]:
    """The ranker notebook 05 saved (refused when trained on other data), or one fitted here
    when there is none; with a sentence saying which."""
    folder = work / "rankers" / cfg.ranker
    shown = f"<work>/rankers/{cfg.ranker}"  # metrics.json must not depend on where the work folder is
    if folder.exists():
        ranker = load_ranker(folder, device=cfg.device, expect=expect)
        return ranker, f"loaded {shown} (trained in notebook 05, {len(ranker.history)} epochs)"
    if cfg.ranker not in MODELS:
        raise EvaluationError(
            f"ranker {cfg.ranker!r}: no saved ranker at {folder} and not one of {', '.join(MODELS)} "
            "to fit here")
    ranker = make_ranker(cfg.ranker, seed=cfg.system.seed, epochs=cfg.ranker_epochs, device=cfg.device)
    ranker.fit(split.train, items=item_ids, item_embeddings=vectors)
    ranker.fingerprint = expect  # fitted on exactly this run's split and items
    return ranker, (f"fitted {cfg.ranker} here: no saved ranker at {shown} "
                    "(run notebook 05 to evaluate the one it trained)")


def evaluate_system(
    catalog_dir: str | Path,
    work_dir: str | Path,
    config: SystemRunConfig | None = None,
    progress: bool = True,
) -> SystemRun:
    """Load the artefacts, evaluate both tasks, time single queries, break down by modality."""

    cfg = config or SystemRunConfig()
    work = Path(work_dir)
    cat = read_catalog(catalog_dir)
    emb_path = work / "embeddings" / "items.parquet"
    fused = read_item_embeddings(emb_path, "fused")
    index_dir = work / "index"
    if not index_dir.is_dir():
        raise EvaluationError(f"{index_dir}: no saved index; run notebook 06_scann_index first")
    index = load_index(index_dir)
    item_ids = np.asarray(index.item_ids).astype(str)
    vectors = _aligned(fused.item_ids, fused.vectors, item_ids)
    exact = build_index(item_ids, vectors, IndexConfig(kind="exact", device=cfg.device))
    weights = (
        pl.DataFrame({"item_id": item_ids})
        .join(fused.info, on="item_id", how="left")
        .select(pl.exclude("item_id"))
    )
    scfg = cfg.system
    tasks: dict[str, TwoStageResult] = {}
    latency: dict[str, Any] = {}
    info: dict[str, Any] = {"n_items": len(item_ids), "index": type(index).__name__}
    notes: dict[str, str] = {}
    modality_frame: pl.DataFrame | None = None
    modality_summary: dict[str, Any] = {}

    interactions = cat.interactions.collect() if cat.interactions is not None else None
    ranker, ranker_source, ranker_fingerprint = None, "none (no interactions)", None
    split = None
    if interactions is not None and interactions.height:

        split = leave_last_out(interactions)
        # What notebook 05 trained on when it used this catalog: the saved ranker must match.
        expect = TrainingFingerprint.of(data_fingerprint(cat.root)["fingerprint"], split, item_ids)
        ranker, ranker_source = _load_ranker(work, cfg, expect, split, item_ids, vectors)
        assert ranker.fingerprint is not None  # set by fitting and by loading
        ranker_fingerprint = ranker.fingerprint.to_dict()

    if cat.queries is not None and cat.qrels is not None and has_rows(cat, "queries") and has_rows(cat, "qrels"):

        queries = cat.queries.collect().sort("query_id")
        test_ids = split_queries(
            queries["query_id"].to_list(), cfg.query_test_fraction, cfg.query_split_seed
        ).test
        queries = queries.filter(pl.col("query_id").is_in(test_ids))
        encoder = load_encoder(work / "encoders", device=cfg.device)
        qvec = encoder.encode_text(queries["text"].to_list()).numpy()
        task = query_task(queries, cat.qrels, qvec, item_ids, name="queries")
        keep = np.diff(task.relevance.indptr) > 0
        info["queries_without_relevant"] = int((~keep).sum())
        # The system notebook 03 chose on validation: a hybrid adds BM25 to the index at query time.
        spec = read_search_spec(work)
        bm25 = _bm25_over(cat, item_ids)
        stage1 = stage_one(index, bm25, spec)
        info["search_system"] = spec.get("chosen", "fused item vectors (notebook 03 chose none)")
        notes["search_system"] = (f"{spec['chosen']}, chosen in notebook 03: {spec.get('reason', '')}" if spec
                                  else "fused item vectors (no <work>/search.json: notebook 03 did not choose)")
        tasks["queries"] = evaluate_two_stage(task, stage1, ranker, scfg, exact, weights)
        texts = queries["text"].to_list()
        latency["queries"] = measure_latency(
            task,
            stage1,
            ranker,
            scfg,
            n_queries=cfg.latency_queries,
            encode=lambda i: encoder.encode_text([texts[i]]).numpy(),
            progress=progress,
        )
        # Each modality, the fused vectors, BM25 and the hybrid, all exact: which finds what.
        indexes = {"fused": exact, "bm25": LexicalRetriever(bm25),
                   "hybrid": stage_one(exact, bm25, spec) if spec.get("kind") == "hybrid"
                   else HybridRetriever(exact, bm25, "rrf")}
        for m in MODALITIES:
            try:
                e = read_item_embeddings(emb_path, m)
            except Exception:  # the catalog may lack a modality entirely
                continue
            indexes[m] = build_index(
                e.item_ids, e.vectors, IndexConfig(kind="exact", device=cfg.device)
            )
        modality_frame, modality_summary = modality_breakdown(task, indexes, item_ids, k=scfg.k)

    if split is not None and ranker is not None:  # a split always comes with its ranker
        test = split.test
        if cfg.max_users is not None:
            users = test["user_id"].unique().sort().head(cfg.max_users)
            test = test.filter(pl.col("user_id").is_in(users))
        towers = ranker.two_tower_items()
        if towers is None:
            # no two-tower form (popularity, EASE, item-kNN): the user is the mean of recent items
            task = next_item_task(split.train, test, item_ids, vectors, last_n=cfg.last_n)
            tasks["next_item"] = evaluate_two_stage(task, index, ranker, scfg, exact, weights)
            latency["next_item"] = measure_latency(
                task, index, ranker, scfg, n_queries=cfg.latency_queries, progress=progress
            )
            info["next_item_stage1"] = f"{info['index']} over the fused item vectors, query: {task.info['query']}"
        else:
            # Two-tower: the ranker's user vector against an index of its own item vectors
            # (inner product, reduced to the cosine the indexes compute); stage 2 re-scores.
            tower_items = inner_product_items(towers[ranker.item_index(item_ids)])  # index column order
            # The kind of index notebook 06 chose for search (ScaNN, or exact on a small catalog);
            # ScaNN's leaves searched and re-order depth are the least work that keeps
            # TOWER_INDEX_RECALL of the exact candidates of the *training* users' vectors.
            tower_index = build_index(item_ids, tower_items, IndexConfig(kind="exact", device=cfg.device))
            if info["index"] == "ScannIndex":
                base = IndexConfig.for_size(len(item_ids), kind="scann", device=cfg.device)
                assert base.num_leaves is not None  # for_size sizes the partitions
                probe = inner_product_queries(ranker.two_tower_users(ranker.user_ids[:TOWER_TUNING_USERS]))
                depth = min(scfg.candidates, len(item_ids))
                rows = sweep(item_ids, tower_items, probe, k=depth, config=base, repeats=1, progress=False,
                             leaves_to_search=range(1, base.num_leaves + 1), reorder=(depth, 2 * depth))
                chosen = choose_setting(rows, TOWER_INDEX_RECALL, k=depth, by="work")
                tower_index = build_index(item_ids, tower_items, config_for_setting(base, chosen))
                info["next_item_tower_index"] = {k: chosen[k] for k in ("num_leaves", "leaves_to_search", "reorder")}
            tower_exact = build_index(item_ids, tower_items, IndexConfig(kind="exact", device=cfg.device))

            def user_query(users: np.ndarray) -> np.ndarray:
                return inner_product_queries(ranker.two_tower_users(users))

            task = next_item_task(split.train, test, item_ids, vectors, last_n=cfg.last_n, user_vectors=user_query)
            full = ranker.recommend(task.query_ids, scfg.candidates, exclude_seen=True)
            in_index = ranker.item_index(item_ids)  # the ranker's row of each index column
            column_of = np.full(len(ranker.item_ids), -1, dtype=np.int64)
            column_of[in_index] = np.arange(len(item_ids))
            columns = np.where(full.indices >= 0, column_of[np.maximum(full.indices, 0)], -1)
            tasks["next_item"] = evaluate_two_stage(task, tower_index, ranker, scfg, tower_exact, weights,
                                                    full_ranking=columns)
            latency["next_item"] = measure_latency(
                task, tower_index, ranker, scfg, n_queries=cfg.latency_queries,
                encode=lambda i: user_query(task.query_ids[i : i + 1]), progress=progress)
            info["next_item_stage1"] = (f"{type(tower_index).__name__} over the {cfg.ranker} ranker's item vectors, "
                                        f"query: its user vector (two-tower)")
        info["next_item_users_without_history"] = task.info["users_without_history"]
    if not tasks:
        raise EvaluationError(
            f"{cat.root}: neither queries with qrels nor interactions: nothing to evaluate"
        )
    info["config"] = asdict(cfg)
    return SystemRun(cfg, tasks, latency, modality_frame, modality_summary, ranker_source, info,
                     ranker_fingerprint, notes)


def headline_metrics(run: SystemRun, headline: pl.DataFrame) -> dict[str, Any]:
    """Notebook 07's metrics.json: per task, each stage's means from `headline` and the re-ranking gain.

    `headline` is (a filter of) `run.headline()`: `{task: {"retrieval": {metric: mean},
    "reranked": {...}, "reranking_gain": {"diff", "low", "high"} (3 decimals)}}`, tasks
    sorted, plus `modality_wins` (empty when no modality comparison ran).
    """
    metrics: dict[str, Any] = {
        task: {
            **{stage: {r["metric"]: r["mean"] for r in headline.filter((pl.col("task") == task)
                                                                       & (pl.col("stage") == stage)).to_dicts()}
               for stage in ("retrieval", "reranked")},
            "reranking_gain": {k: round(res.comparison[k], 3) for k in ("diff", "low", "high")},
        }
        for task, res in sorted(run.tasks.items())
    }
    metrics["modality_wins"] = run.modality_summary.get("wins", {})
    return metrics
