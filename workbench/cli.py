"""The `workbench` command line (also `python -m workbench`).

Errors of the workbench go to stderr as one readable line; `--debug` shows the
traceback. Heavy modules are imported inside each command so `--help` is quick.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from workbench.errors import ConfigError, WorkbenchError

EXIT_CODES = (
    "exit codes:\n"
    "  0  success (`catalog validate`: the catalog is valid; warnings allowed)\n"
    "  1  `catalog validate` found problems (one line each on stderr); `reproduce`/`compare`:\n"
    "     a metric outside its tolerance\n"
    "  2  bad input or usage: one line 'error: ...' naming the file and what was expected\n"
    "  3  internal error: a bug in the workbench (rerun with --debug for the traceback)\n"
    "  130  interrupted"
)


def catalog_info(path: str | Path) -> dict:
    """Counts per table, modality coverage and time range of a catalog, as plain JSON types.

    The manifest, checksums and every row are checked first (media files are
    not opened): an invalid catalog raises `CatalogError` with its first problem.
    """
    import polars as pl

    from workbench.catalog import TABLES, read_catalog, validate_catalog
    from workbench.catalog.io import media_digest_problems
    from workbench.errors import CatalogError

    cat = read_catalog(path, verify_checksums=False)  # validate_catalog verifies the checksums
    try:
        validate_catalog(cat, check_media=False, on_error="raise", progress=False)
        # Media are hashed (cheap), not decoded: files changed since the write are caught here.
        if changed := media_digest_problems(cat.root, cat.manifest):
            raise CatalogError(str(changed[0]))
    except CatalogError as e:
        raise CatalogError(f"{e} (`workbench catalog validate {path}` lists every problem)") from e
    counts = {t: table.select(pl.len()).collect().item() for t in TABLES if (table := cat.table(t)) is not None}
    coverage = (
        cat.products.select(
            pl.lit(1.0).alias("text"),
            pl.col("image").is_not_null().mean().alias("image"),
            pl.col("audio").is_not_null().mean().alias("audio"),
        )
        .collect()
        .row(0, named=True)
    )
    info: dict = {
        "name": cat.name,
        "path": str(cat.root),
        "counts": counts,
        "modality_coverage": {k: round(float(v), 4) for k, v in coverage.items()},
        "categories": cat.products.select(pl.col("category").n_unique()).collect().item(),
    }
    if cat.interactions is not None:
        stats = cat.interactions.select(
            pl.col("user_id").n_unique().alias("users"),
            pl.col("item_id").n_unique().alias("items_interacted"),
            pl.col("timestamp").min().alias("first"),
            pl.col("timestamp").max().alias("last"),
        ).collect().row(0, named=True)
        info["interactions"] = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in stats.items()}
        info["events"] = dict(
            cat.interactions.group_by("event").len().sort("event").collect().iter_rows()
        )
    return info


def _cmd_synth(args: argparse.Namespace) -> int:
    from workbench.catalog.synthetic import SyntheticConfig, generate_synthetic

    config = SyntheticConfig(
        n_items=args.items,
        n_users=args.users,
        seed=args.seed,
        image_size=args.image_size,
        with_media=not args.no_media,
        workers=args.workers,
        **({"n_queries": args.queries} if args.queries is not None else {}),
    )
    out = generate_synthetic(args.out, config, overwrite=args.overwrite, progress=not args.quiet)
    print(out)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from workbench.catalog import validate_catalog

    # A progress bar only on a terminal: piped stderr keeps exactly one line per problem.
    progress = not args.quiet and sys.stderr.isatty()
    problems = validate_catalog(args.dir, check_media=not args.no_media, on_error="collect",
                                progress=progress, include_warnings=True)
    errors = [p for p in problems if p.is_error]
    for problem in problems:
        print(f"{'problem' if problem.is_error else 'warning'}: {problem}", file=sys.stderr)
    warnings = f", {len(problems) - len(errors)} warning(s)" if len(problems) > len(errors) else ""
    if errors:
        print(f"{args.dir}: {len(errors)} problem(s) found{warnings}", file=sys.stderr)
        return 1
    print(f"{args.dir}: valid{warnings}")  # warnings alone never fail a catalog
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    info = catalog_info(args.dir)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(f"catalog {info['name']} at {info['path']}")
    for table, n in info["counts"].items():
        print(f"  {table:<13} {n:>10,} rows")
    coverage = ", ".join(f"{m} {v:.1%}" for m, v in info["modality_coverage"].items())
    print(f"  modalities    {coverage}")
    print(f"  categories    {info['categories']}")
    if "interactions" in info:
        i = info["interactions"]
        print(f"  users         {i['users']:,} ({i['first']} .. {i['last']})")
    return 0


# `catalog import table` flags -> TableMapping fields (the rest of the table flags are files and options)
_TABLE_COLUMN_FLAGS = {
    "id": "id", "title": "title", "description": "description", "brand": "brand", "price": "price",
    "image": "image", "audio": "audio", "user_col": "user", "item_col": "item", "time_col": "time",
    "event_col": "event", "value_col": "value", "query_id_col": "query_id", "query_text_col": "query_text",
    "relevance_col": "relevance",
}
_TABLE_ONLY = (*_TABLE_COLUMN_FLAGS, "category", "attributes", "interactions", "queries", "qrels",
               "media_root", "table_format", "on_duplicate")


def _cmd_import(args: argparse.Namespace) -> int:
    from workbench.catalog.loaders import import_catalog

    if args.format == "table":
        return _import_table(args)
    given = [name for name in _TABLE_ONLY if getattr(args, name) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-").replace("table-format", "format")
        raise ConfigError(f"{flag} applies only to `workbench catalog import table`, not to {args.format}")
    report = import_catalog(args.format, args.src, args.out, overwrite=args.overwrite,
                            derived_queries=args.derived_queries)
    print(report.to_json())
    return 0


def _import_table(args: argparse.Namespace) -> int:
    from workbench.catalog.loaders.queries import DerivedQueryConfig
    from workbench.catalog.loaders.table import TableImportConfig, TableMapping, import_table
    from workbench.errors import ConfigError

    derived = None
    if args.derived_queries is not None:
        if args.derived_queries < 1:
            raise ConfigError(f"--derived-queries {args.derived_queries}: expected a count >= 1")
        derived = DerivedQueryConfig(n_queries=args.derived_queries, seed=0)
    category = TableMapping.from_columns_text(args.category)
    mapping = TableMapping(
        **{field: getattr(args, flag) for flag, field in _TABLE_COLUMN_FLAGS.items()},
        category=category or None,
        attributes=TableMapping.from_columns_text(args.attributes),
    )
    config = TableImportConfig(duplicates=args.on_duplicate or "first", progress=not args.quiet,
                               derived_queries=derived)
    # The mapping goes to stderr before the import, so stdout holds only the JSON report.
    report = import_table(args.src, args.out, mapping=mapping, interactions=args.interactions,
                          queries=args.queries, qrels=args.qrels, media_root=args.media_root,
                          file_format=args.table_format, overwrite=args.overwrite, config=config,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.to_json())
    return 0


class _RankerNames:
    """`--model` choices: the names of `workbench.rankers.MODELS`, imported only when argparse
    checks or lists them (the registry imports torch; `workbench --help` stays quick)."""

    def _names(self) -> list[str]:
        from workbench.rankers import MODELS

        return list(MODELS)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self):
        return iter(self._names())


def _cmd_recommend(args: argparse.Namespace) -> int:
    from workbench.experiments.recommend import RecommendConfig, run_recommend

    metrics = run_recommend(
        RecommendConfig(
            catalog=args.catalog,
            model=args.model,
            split=args.split,
            seed=args.seed,
            k=args.k,
            out=args.out,
            embeddings=args.embeddings,
            epochs=args.epochs,
            device=args.device,
            ratio=args.ratio,
        )
    )
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from workbench.index import IndexJob, build_work_index

    print(build_work_index(IndexJob(work_dir=args.work, column=args.column, out_dir=args.out)))
    return 0


def _parameters(pairs: list[str]) -> dict[str, object]:
    """`-p NAME=VALUE` pairs: VALUE as JSON (2, 0.5, true, [1, 2], {"a": 1}), else as a string."""
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ConfigError(f"-p {pair!r}: expected NAME=VALUE with a notebook parameter's name, e.g. -p EPOCHS=2")
        try:
            out[name.strip()] = json.loads(value)
        except ValueError:
            out[name.strip()] = value
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from workbench.pipeline import run_series

    if args.mlflow is not None:  # refuse before an hour of notebooks, not after
        from workbench.tracking import require_mlflow

        require_mlflow()
    report = run_series(profile=args.profile, catalog=args.catalog, run_name=args.run,
                        allow_problems=args.allow_problems, overrides=_parameters(args.parameter))
    run_dir = report.parent if report.name == "index.html" else report
    series = json.loads((run_dir / "series.json").read_text(encoding="utf-8"))
    for stem, reason in series.get("stopped", {}).items():
        print(f"{stem} stopped early: {reason}")
    print(report)
    if args.mlflow is not None:
        from workbench.tracking import log_run, normalise_uri

        run_id = log_run(run_dir, tracking_uri=args.mlflow or None)
        print(f"mlflow run {run_id} in {normalise_uri(args.mlflow or None)}")
    return 0


def _print_comparison(comparison, show_all: bool) -> None:
    rows_shown = comparison.table(only_changed=not show_all)
    print(rows_shown)
    print(comparison.summary())
    for row in comparison.outside():
        print(f"outside: {row.describe(comparison.name_a, comparison.name_b)}", file=sys.stderr)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from workbench.reproduce import reproduce

    result = reproduce(args.report, catalog=args.catalog, keep=args.keep, progress=not args.quiet)
    _print_comparison(result.comparison, args.all)
    if result.rerun_dir is not None:
        print(f"re-run kept in {result.rerun_dir}")
    print("reproduced: every metric identical or within its tolerance" if result.ok
          else "NOT reproduced: metrics outside their tolerance (listed on stderr)")
    return 0 if result.ok else 1


def _cmd_compare(args: argparse.Namespace) -> int:
    from workbench.reproduce import compare_runs

    result = compare_runs(args.run_a, args.run_b)
    _print_comparison(result.comparison, args.all)
    for note in result.notes:
        print(note)
    if result.paired:
        print("\npaired randomisation tests on the per-query results (b - a):")
        for r in result.paired:
            verdict = "a real difference" if r["significant"] else "no clear difference"
            print(f"  {r['task']:<10} {r['metric']:<28} {r['a']:.4f} -> {r['b']:.4f} "
                  f"({r['diff']:+.4f}, 95% CI {r['low']:+.4f} to {r['high']:+.4f}, p={r['p_value']:.3f}, "
                  f"n={r['n']}): {verdict}")
    return 0 if result.ok else 1


def _cmd_lab(args: argparse.Namespace) -> int:
    """JupyterLab whose kernels inherit the deterministic settings (pinned at import)."""
    import os
    import shutil

    from workbench.paths import project_root

    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent)) or shutil.which("jupyter")
    if jupyter is None:
        from workbench.errors import ConfigError

        raise ConfigError("jupyter is not installed in this environment; expected `make install` first")
    argv = [jupyter, "lab", "--ip=127.0.0.1", "--no-browser", f"--notebook-dir={project_root() / 'notebooks'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    os.execv(jupyter, argv + list(args.jupyter_args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    catalog = sub.add_parser("catalog", help="create, check, describe and import catalogs")
    csub = catalog.add_subparsers(dest="catalog_command", required=True)

    synth = csub.add_parser("synth", help="generate the ground-truth synthetic catalog")
    synth.add_argument("--items", type=int, default=1000)
    synth.add_argument("--users", type=int, default=300)
    synth.add_argument("--queries", type=int, default=None)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=64)
    synth.add_argument("--no-media", action="store_true", help="tables only (for very large catalogs)")
    synth.add_argument("--workers", type=int, default=None, help="media processes (default: one per CPU)")
    synth.add_argument("--out", required=True)
    synth.add_argument("--overwrite", action="store_true")
    synth.add_argument("--quiet", action="store_true")
    synth.set_defaults(func=_cmd_synth)

    validate = csub.add_parser("validate", help="check every table and decode every media file")
    validate.add_argument("dir")
    validate.add_argument("--no-media", action="store_true", help="skip decoding media files")
    validate.add_argument("--quiet", action="store_true")
    validate.set_defaults(func=_cmd_validate)

    info = csub.add_parser("info", help="counts per table and modality coverage")
    info.add_argument("dir")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_cmd_info)

    from workbench.catalog.loaders import FORMATS
    from workbench.catalog.loaders.table import DUPLICATE_POLICIES, FILE_FORMATS

    imp = csub.add_parser(
        "import", help="convert a public dataset layout, or your own table, into a catalog",
        description="`table` reads your own products table (CSV, TSV, parquet, JSON lines); each column "
                    "flag names the source column of a field, and a field without one is guessed from "
                    "common column names (the mapping is printed on stderr before the import). The import "
                    "report is printed on stdout as JSON.")
    imp.add_argument("format", choices=sorted(FORMATS))
    imp.add_argument("src", help="the dataset folder, or for `table` the products file")
    imp.add_argument("--out", required=True)
    imp.add_argument("--overwrite", action="store_true")
    imp.add_argument("--derived-queries", type=int, default=None, metavar="N",
                     help="fashion-products: how many queries to derive from attributes "
                          "(default: min(1000, products of a queryable type)); table: derive N seeded "
                          "queries and graded qrels from the category and attributes when you have no "
                          "search log (the catalog records that they are derived)")
    tab = imp.add_argument_group("table only: files and options")
    tab.add_argument("--format", dest="table_format", choices=FILE_FORMATS, default=None,
                     help="format of SRC (default: from its extension)")
    tab.add_argument("--media-root", default=None, metavar="DIR",
                     help="folder the image and audio paths are relative to (default: SRC's folder); "
                          "nothing outside it is read")
    tab.add_argument("--interactions", default=None, metavar="FILE")
    tab.add_argument("--queries", default=None, metavar="FILE")
    tab.add_argument("--qrels", default=None, metavar="FILE", help="graded relevance (needs --queries)")
    tab.add_argument("--on-duplicate", choices=DUPLICATE_POLICIES, default=None,
                     help="a repeated item or query id: keep the first row (default) or refuse the import")
    tab.add_argument("--quiet", action="store_true", help="no progress bars")
    cols = imp.add_argument_group("table only: source columns (default: guessed from common names)")
    for flag, what in (("--id", "item_id"), ("--title", "title"), ("--description", "description"),
                       ("--brand", "brand"), ("--price", "price (not a number: null, counted)"),
                       ("--image", "image path, relative to the media root"),
                       ("--audio", "audio path, relative to the media root")):
        cols.add_argument(flag, default=None, metavar="COL", help=what)
    cols.add_argument("--category", default=None, metavar="COL[,COL...]",
                      help="a path column ('a/b/c', 'a > b', or a list of levels) or several level columns")
    cols.add_argument("--attributes", default=None, metavar="COL,COL...",
                      help="columns written into the attributes JSON (default: every column no field "
                           "took; '' for none)")
    for flag, what in (("--user-col", "interactions (and queries): user id"),
                       ("--item-col", "interactions and qrels: item id"),
                       ("--time-col", "interactions: time (ISO 8601, or epoch seconds/milliseconds)"),
                       ("--event-col", "interactions: event (view, click, cart, purchase, rating)"),
                       ("--value-col", "interactions: value (e.g. a rating)"),
                       ("--query-id-col", "queries and qrels: query id"),
                       ("--query-text-col", "queries: query text"),
                       ("--relevance-col", "qrels: relevance 0..3 (default: 1 for every pair)")):
        cols.add_argument(flag, default=None, metavar="COL", help=what)
    imp.set_defaults(func=_cmd_import)

    from workbench.catalog.splits import SPLIT_KINDS

    rec = sub.add_parser("recommend", help="train a ranker, write recommendations and print metrics")
    rec.add_argument("--catalog", required=True)
    rec.add_argument("--model", choices=_RankerNames(), default="bpr",
                     help="a ranker of workbench.rankers.MODELS")
    rec.add_argument("--split", choices=SPLIT_KINDS, default="stratified")
    rec.add_argument("--seed", type=int, default=42, help="split and training seed (42: Recommenders' protocol)")
    rec.add_argument("--k", type=int, default=10)
    rec.add_argument("--out", required=True)
    rec.add_argument("--embeddings", default=None, help="items.parquet with a `fused` column (optional)")
    rec.add_argument("--epochs", type=int, default=None, help="override the model's default epochs")
    rec.add_argument("--device", default="auto")
    rec.add_argument("--ratio", type=float, default=0.75, help="train share per user (stratified split)")
    rec.set_defaults(func=_cmd_recommend)

    index = sub.add_parser("index", help="build and save a ScaNN/exact index over a work folder's embeddings")
    index.add_argument("--work", required=True, help="work folder holding embeddings/items.parquet")
    index.add_argument("--column", default="fused", help="embedding column (fused, text, image, audio)")
    index.add_argument("--out", default=None, help="index folder (default: <work>/index)")
    index.set_defaults(func=_cmd_index)

    from workbench.paths import PROFILES

    run = sub.add_parser("run", help="execute notebooks 01-07 in order and write the report")
    run.add_argument("--profile", choices=PROFILES, default="ci")
    run.add_argument("--catalog", default=None, help="catalog folder (default: the synthetic catalog)")
    run.add_argument("--run", default=None, help="run name (folder under <home>/reports/; default: the catalog folder's name)")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                     help="set a notebook parameter in every notebook that declares it (repeatable); "
                          "VALUE is read as JSON when it parses, else as text")
    run.add_argument("--allow-problems", action="store_true",
                     help="run on a catalog that fails validation (the report says so)")
    run.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                     help="log the run's config, metrics and report folder to MLflow (default store: "
                          "mlruns/ in the project; needs pip install -e '.[tracking]')")
    run.set_defaults(func=_cmd_run)

    rep = sub.add_parser(
        "reproduce",
        help="verify a report folder and its catalog, re-run its series and compare every metric",
        description="Exit 0 when every metric is identical or within its tolerance, 1 when any is "
                    "outside, 2 when the report or catalog cannot be verified.")
    rep.add_argument("report", help="a report folder written by `workbench run` (reports/<run>)")
    rep.add_argument("--catalog", default=None, help="a copy of the catalog, when it moved")
    rep.add_argument("--keep", default=None, metavar="DIR", help="keep the re-run in DIR (default: a temporary folder)")
    rep.add_argument("--all", action="store_true", help="list identical metrics too")
    rep.add_argument("--quiet", action="store_true")
    rep.set_defaults(func=_cmd_reproduce)

    cmp = sub.add_parser(
        "compare", help="compare two runs of the same series: every metric, and paired tests per query",
        description="Exit 0 when every metric is identical or within its tolerance, 1 when any is "
                    "outside, 2 when the runs cannot be compared (other catalogs, other metrics).")
    cmp.add_argument("run_a")
    cmp.add_argument("run_b")
    cmp.add_argument("--all", action="store_true", help="list identical metrics too")
    cmp.set_defaults(func=_cmd_compare)

    lab = sub.add_parser("lab", help="JupyterLab on 127.0.0.1 with the deterministic settings")
    lab.add_argument("jupyter_args", nargs=argparse.REMAINDER, help="passed on to `jupyter lab`")
    lab.set_defaults(func=_cmd_lab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code says how it went (see the epilog of `workbench --help`)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def one_line(e: BaseException) -> str:  # a library's message may wrap; stderr gets one line per failure
        return " ".join("".join(c if c.isprintable() else " " for c in str(e)).split())

    try:
        return args.func(args)
    except WorkbenchError as e:
        if args.debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        for problem in getattr(e, "problems", ()):  # a refused catalog: one line per problem
            print(f"problem: {one_line(problem)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"internal error: {type(e).__name__}: {one_line(e)} (a bug; run with --debug for the traceback)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
