"""The `twotower` command: the front door for everything a user runs by hand."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import runpy
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "synthetic:shop-small"
DEFAULT_HOME = Path(".twotower")  # the data directory: feature repository, registry, indexes
log = logging.getLogger(__name__)
# What `twotower eval` reports of a two-tower's training (its artifact's metrics).
TRAINING = ("stopped_by", "improving_at_stop", "best_epoch", "steps", "val", "popularity_prior",
            "seconds_to_best", "seconds_total")


def _features(args: argparse.Namespace) -> None:
    from feature_repo.datasets import load
    from feature_repo.store import FeatureStoreConfig, build_store, materialize
    from index.home import check_home
    from index.registry import Registry
    from pipelines.defs.resources import PipelineSettings

    dataset = load(args.data)
    print(f"{dataset.name}: {len(dataset.interactions):,} interactions, {len(dataset.items):,} "
          f"items, {len(dataset.users):,} users, {len(dataset.stock):,} stock changes")
    config = FeatureStoreConfig(repo_dir=args.home / "feature_repo")
    registry = Registry(PipelineSettings(data_dir=args.home).registry_url, data_dir=args.home)
    try:
        check_home(registry, config.repo_dir / "data", dataset, replace=args.replace)
    finally:
        registry.close()
    store = build_store(dataset, config)
    end = dataset.last_event.to_pydatetime()
    materialize(store, end)
    print(f"feature repository ready at {config.repo_dir} (online store materialized to {end})")


def _demo(args: argparse.Namespace) -> None:
    from feature_repo.datasets import identity
    from twotower.demo import run_demo

    demo = run_demo(args.data, args.home, replace=args.replace, verbose=args.verbose)
    _print_checks(demo.checks)
    print("test window: " + ", ".join(f"{_named({m: v}).popitem()[0]} {v:.4f}"
                                      for m, v in demo.test.items()))
    print(f"live: model version {demo.model_version}, index version {demo.index_version}; "
          f"training: {demo.training}; ranking: {demo.ranking}")
    if not demo.recommendations:
        print("\nno recommendations: these users have seen every item in stock")
    current = None
    for rec in demo.recommendations:
        if rec.user_id != current:
            current = rec.user_id
            print(f"\nuser {rec.user_id}:   {'item':>7}  {'score':>6}  title")
        print(f"  {'':>10}{rec.item_id:>7}  {rec.score:6.3f}  {rec.title}")
    home, q = args.home, lambda value: shlex.quote(str(value))
    print(f"""
next:
  twotower serve --home {home}    # the API at http://127.0.0.1:8000/docs (TWOTOWER_*_KEYS: README)
  (cd {q(ROOT)} && DAGSTER_HOME={q((home / "dagster").resolve())} TWOTOWER_DATA_DIR={q(home.resolve())} \\
    TWOTOWER_DATA={q(identity(args.data))} dagster dev)    # these runs, and new ones: localhost:3000
  twotower versions list --home {home}    # index versions: promote, rollback, prune""")


def _data_check(args: argparse.Namespace) -> None:
    from feature_repo.datasets import check

    problems = check(args.data)
    if not problems:
        print(f"{args.data}: no problems found")
        return
    table = [("file", "column", "row", "problem"), *(
        (p.source, p.column or "", "" if p.row is None else str(p.row), p.problem) for p in problems)]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for *cells, problem in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)),
              problem, sep="  ")
    raise SystemExit(f"{len(problems)} problem{'s' * (len(problems) > 1)} in {args.data}")


def _eval(args: argparse.Namespace) -> None:
    from feature_repo.datasets import load
    from towers import baselines, evaluate, lightgcn
    from towers.artifact import Artifact
    from towers.config import ConfigError, load_preset, override
    from towers.features import feature_store, with_features
    from towers.model import TowerConfig
    from towers.train import TRAINED_ON_SPLIT, TrainConfig, fit_split, trained_on_split

    _check_eval_options(args)
    try:
        values = load_preset(args.preset) if args.preset else {}
    except (OSError, ValueError) as exc:  # missing, unreadable or not TOML
        raise SystemExit(f"twotower eval: --preset {args.preset}: {exc}") from None
    if args.item_encoder:  # the option wins over the preset
        values["item_encoder"] = args.item_encoder
    try:
        tower, train = override([TowerConfig(), TrainConfig()], values)
    except ConfigError as exc:
        raise SystemExit(f"twotower eval: {exc}") from None
    dataset = load(args.data)
    if args.cold_start:
        return _cold_start(args, dataset, tower, train)
    split = evaluate.make_split(dataset, args.protocol)
    training = {}  # how the two-tower's (or LightGCN's) training ended
    if args.model == "popularity":
        metrics = evaluate.evaluate(baselines.popularity(split.test_train, dataset.items), split.test)
    elif args.model == "ease":
        lam, _ = baselines.tune_ease(split.train, split.validation, dataset.items)
        metrics = evaluate.evaluate(baselines.ease(split.test_train, dataset.items, lam), split.test)
    elif args.model == "lightgcn":  # tuned on validation, then refit before the test cut
        recommend, training = lightgcn.fit_split(split, dataset.items)
        metrics = evaluate.evaluate(recommend, split.test)
    else:  # user features from a Feast store of the dataset, histories as long as the model's
        artifact = Artifact.load(args.artifact) if args.artifact else None
        if artifact and artifact.metrics.get(TRAINED_ON_SPLIT) != trained_on_split(split, dataset.items):
            training["fitted_on_this_split"] = False
            log.warning("--artifact %s was not fitted on the training part of this %s split of %s: "
                        "it may have trained on the test targets, and its figures then flatter it",
                        args.artifact, args.protocol.upper(), dataset.name)
        max_len = artifact.config.max_len if artifact else tower.max_len
        with tempfile.TemporaryDirectory(prefix="twotower-eval-") as home:
            store = feature_store(dataset, max_len, home)
            split = with_features(split, store)
            artifact = artifact or fit_split(split, dataset.items, store, tower=tower, train=train)
            dense = evaluate.evaluate(evaluate.two_tower(artifact, dataset.items), split.test)
            with _served(artifact, dataset, store=store) as engine:
                metrics = evaluate.evaluate(engine.rank, split.test)
        training |= {k: artifact.metrics[k] for k in TRAINING if k in artifact.metrics}
    metrics = _named(metrics)
    if args.model == "two-tower":  # served by the service's engine above; also by an exact dense product
        metrics |= {f"dense {name}": v for name, v in _named(dense).items() if name != "users"}
    title = f"{args.model} on {dataset.name}, {args.protocol.upper()} ({split.notes})"
    if training:
        title += "\n  training: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in training.items())
    _report(args, title, {"protocol": args.protocol, "model": args.model, "split": split.notes,
                          **({"training": training} if training else {}), **metrics})


def _check_eval_options(args: argparse.Namespace) -> None:
    """Refuse an option the chosen evaluation would ignore, before the data is read; then fill in
    the defaults."""
    two_tower = not args.cold_start and (args.model or "two-tower") == "two-tower"
    trains = args.cold_start or (two_tower and not args.artifact)
    for name, given, applies, why in (
            ("--protocol", args.protocol, not args.cold_start, "--cold-start makes its own split"),
            ("--model", args.model, not args.cold_start, "--cold-start compares two-tower and popularity"),
            ("--artifact", args.artifact, two_tower, "it is a saved two-tower, for --model two-tower"),
            ("--preset", args.preset, trains, "it configures a two-tower this command trains"),
            ("--item-encoder", args.item_encoder, trains, "it configures a two-tower this command trains")):
        if given and not applies:
            raise SystemExit(f"twotower eval: {name} does not apply here: {why}")
    if args.json and not args.json.parent.is_dir():
        raise SystemExit(f"twotower eval: --json {args.json}: no folder {args.json.parent}")
    args.protocol, args.model = args.protocol or "loo", args.model or "two-tower"


def _cold_start(args: argparse.Namespace, dataset, tower, train) -> None:
    """Two-tower (served by the service's engine) vs point-in-time Popularity on held-out items (see
    towers/cold_start.py)."""
    from contextlib import ExitStack

    from towers.cold_start import report

    with tempfile.TemporaryDirectory(prefix="twotower-cold-") as home, ExitStack() as engines:
        def serve(artifact, cold_items):  # an index version of the held-out items only
            # report() embeds the query users itself, so the engine answers the ANN step.
            return engines.enter_context(_served(artifact, dataset, items=cold_items)).retrieve

        result = report(dataset, home, tower=tower, train=train, serve=serve)
    metrics = {f"{model} {name}": value for model in ("two-tower", "popularity")
               for name, value in _named(result.pop(model)).items() if name != "users"}
    _report(args, f"cold start on {dataset.name} ({result})", {"cold_start": result, **metrics})


def _report(args: argparse.Namespace, title: str, metrics: dict) -> None:
    """Print the metrics as a table; with --json also write them."""
    print(title)
    for name, value in metrics.items():
        if isinstance(value, int | float):
            print(f"  {name:>22}  {value:.4f}" if isinstance(value, float) else
                  f"  {name:>22}  {value}")
    if args.json:
        result = {"data": args.data, **metrics}
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")


def _named(metrics: dict) -> dict:
    """Metric names as reported: HR@10, NDCG@10, Recall@100, ..."""
    return {name.replace("hr", "HR").replace("ndcg", "NDCG").replace("recall", "Recall"): value
            for name, value in metrics.items()}


@contextmanager
def _served(artifact, dataset, *, items=None, store=None) -> Iterator:  # -> services.engine.Engine
    """The service's engine over a Qdrant Edge index version of `items` (default: the dataset's)
    embedded by `artifact`, in a temporary directory. `store` is the dataset's Feast store, built
    there if not given: the engine reads item content from it (queries bring their own features).
    """
    import dataclasses

    from index.model_store import publish
    from services.engine import Engine
    from towers.features import feature_store

    indexed = dataset if items is None else dataclasses.replace(dataset, items=items)
    with tempfile.TemporaryDirectory(prefix="twotower-eval-") as home:
        registry = publish(artifact, indexed, Path(home), config={"data": dataset.name})
        if store is None:
            store = feature_store(dataset, artifact.config.max_len, home)
        engine = Engine(store=store, backend=registry.backend, registry=registry)
        try:
            engine.refresh()
            yield engine
        finally:
            engine.close()
            registry.backend.close()
            registry.close()


def _field_names(location: tuple) -> list[str]:
    """A settings error's location as the variable's parts: without the index backend's union
    tag, which is no field (`TWOTOWER_INDEX__TIMEOUT_S`, not `..._INDEX__SERVER__TIMEOUT_S`)."""
    return [str(part) for part in location if part not in ("edge", "server")]


def _serve(args: argparse.Namespace) -> None:
    """Run the API with uvicorn in `--workers` processes, each serving its own copy of the live
    Qdrant Edge shard (`EdgeSettings.own_copies`) and replaying the others' writes from the log."""
    import uvicorn
    from pydantic import ValidationError

    from services.api.config import Settings

    if args.home:  # the workers read their settings from the environment, as uvicorn starts them
        os.environ["TWOTOWER_DATA_DIR"] = str(args.home)
    try:  # a settings error is told here, once, not per worker
        settings = Settings()  # type: ignore[call-arg]
    except ValidationError as error:
        raise SystemExit("twotower serve: " + "; ".join(
            ("TWOTOWER_" + "__".join(_field_names(e["loc"])).upper() + ": " if e["loc"] else "")
            + e["msg"] for e in error.errors())) from None
    repo = Path(settings.feature_store().repo_dir)
    if not (repo / "feature_store.yaml").is_file():
        raise SystemExit(f"twotower serve: no feature repository in {repo}: build the data directory "
                         f"first (twotower demo --home {settings.data_dir})")
    shared = tempfile.TemporaryDirectory(prefix="twotower-metrics-") if args.workers > 1 \
        else contextlib.nullcontext()
    with shared as folder:
        if folder:  # every worker's metric values in one folder, set before a worker starts
            # prometheus_client reads the first name; Feast, imported by every worker, the second
            for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR",
                         "TWOTOWER_METRICS_DIR"):
                os.environ[name] = folder
        uvicorn.run("services.api.main:create_app", factory=True, workers=args.workers,
                    host=args.host, port=args.port, access_log=False,
                    log_config=_serve_logging(args.verbose),
                    log_level="debug" if args.verbose else "info")


def _serve_logging(verbose: bool) -> dict:
    """uvicorn's logging, plus the service's own records (the version each worker loads, the
    writes it replays) in the same stream; the libraries' INFO chatter stays out, as elsewhere."""
    from uvicorn.config import LOGGING_CONFIG

    quiet = {} if verbose else {name: {"level": "WARNING"} for name in QUIET_LOGGERS}
    return {**LOGGING_CONFIG,
            "formatters": {**LOGGING_CONFIG["formatters"], "named": {
                "()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(name)s: %(message)s"}},
            "handlers": {**LOGGING_CONFIG["handlers"], "named": {
                "formatter": "named", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
            "loggers": {**LOGGING_CONFIG["loggers"], **quiet},
            "root": {"handlers": ["named"], "level": "DEBUG" if verbose else "INFO"}}


def _versions(args: argparse.Namespace) -> None:
    from index import VectorIndexError
    from twotower import versions

    if not args.home.is_dir():
        raise SystemExit(f"twotower versions: --home {args.home}: no such data directory")
    with versions.open_registry(args.home) as registry:
        try:
            if args.action == "list":
                result: object = versions.list_versions(registry)
            elif args.action == "promote":
                result = versions.promote(registry, args.version_id)
            elif args.action == "rollback":
                result = versions.rollback(registry)
            else:
                result = versions.prune(registry, args.keep, args.home)
        except (VectorIndexError, ValueError) as exc:
            raise SystemExit(f"twotower versions {args.action}: {exc}") from None
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif args.action == "list":
        print(f"{'id':>5}  {'status':<9} {'model':>5} {'items':>9}  promoted_at")
        for row in result:  # type: ignore[union-attr]
            mark = "  (rollback target)" if row["rollback_target"] else ""
            print(f"{row['id']:>5}  {row['status']:<9} {row['model_version']:>5} "
                  f"{row['items'] if row['items'] is not None else '-':>9}  "
                  f"{row['promoted_at'] or '-'}{mark}")
    elif args.action == "prune":
        print(f"deleted index versions {result['deleted'] or 'none'} and model versions "  # type: ignore[index]
              f"{result['deleted_models'] or 'none'}; kept {result['kept']}")  # type: ignore[index]
    else:
        print(f"index version {result['id']} is live (model version {result['model_version']})")  # type: ignore[index]


def _retrain(args: argparse.Namespace) -> None:
    from twotower.retrain import retrain

    result = retrain(args.home, args.data, replace=args.replace, verbose=args.verbose)
    _print_checks(result.checks)
    print(f"live index version {result.live_index_version} (model version "
          f"{result.live_model_version})")
    if not result.success:
        raise SystemExit(f"twotower retrain: the run failed{result.cause}; the previous live "
                         f"version, if any, keeps serving (runs: DAGSTER_HOME={args.home / 'dagster'})")


def _print_checks(checks) -> None:  # checks: list[twotower.demo.Check]
    """A count, then each check with its figures."""
    print(f"\nchecks: {sum(c.passed for c in checks)} passed, {sum(not c.passed for c in checks)} failed")
    for check in checks:
        figures = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in check.figures.items() if isinstance(v, int | float | str))
        print(f"  {'ok  ' if check.passed else 'FAIL'} {check.name}: {figures}")


def _bench(args: argparse.Namespace) -> None:
    script = ROOT / "bench" / f"{args.name}.py"
    if not script.is_file():
        names = sorted(p.stem for p in (ROOT / "bench").glob("*.py"))
        raise SystemExit(f"twotower bench: no benchmark {args.name!r}; choose from {names}")
    sys.argv = [str(script), *args.overrides]
    runpy.run_path(str(script), run_name="__main__")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twotower", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_data(name: str, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.add_argument("--data", default=DEFAULT_DATA,
                         help="dataset spec: movielens-100k:PATH, movielens-1m:PATH, generic:PATH, "
                              f"synthetic:PRESET or synthetic:key=value,... (default {DEFAULT_DATA})")
        sub.add_argument("--home", type=Path, default=DEFAULT_HOME,
                         help=f"data directory (default {DEFAULT_HOME})")
        return sub

    for name, help_, run in (
            ("features", "build the Feast repository for a dataset and materialize it", _features),
            ("demo", "run the platform end to end on a dataset and print results", _demo)):
        sub = with_data(name, help_)
        sub.add_argument("--replace", action="store_true",
                         help="overwrite the features of another dataset that the home's live "
                              "model serves (default: refuse; or use a new --home)")
        sub.set_defaults(run=run)
    data = commands.add_parser("data", help="check a dataset against the data contract")
    checks = data.add_subparsers(dest="action", required=True)
    check = checks.add_parser("check", help="read everything and list every problem (file, "
                              "column, row); exit 1 if any")
    check.add_argument("--data", required=True, help="dataset spec, e.g. generic:PATH")
    check.set_defaults(run=_data_check)
    evaluation = commands.add_parser("eval", help="offline evaluation on the LOO or TEMPORAL split")
    evaluation.add_argument("--data", required=True, help="dataset spec, e.g. movielens-100k:PATH")
    evaluation.add_argument("--protocol", choices=["loo", "temporal"], help="the split (default loo)")
    evaluation.add_argument("--model", choices=["two-tower", "lightgcn", "ease", "popularity"],
                            help="what is evaluated (default two-tower)")
    evaluation.add_argument("--preset", type=Path,
                            help="a TOML file of the two-tower's config keys when it trains one "
                                 "(as python -m towers.train --preset; e.g. towers/configs/)")
    evaluation.add_argument("--item-encoder",
                            help="the two-tower's item encoder when it trains one: content (ID "
                                 "and content; the default) or sage (+ the item's graph "
                                 "neighbourhood); it wins over a --preset's")
    evaluation.add_argument("--artifact", type=Path, help="a saved two-tower (default: train one)")
    evaluation.add_argument("--json", type=Path, help="write the metrics here as JSON")
    evaluation.add_argument("--cold-start", action="store_true",
                            help="hold out 10%% of items from training; Recall@100 on them vs "
                                 "Popularity over the same items")
    evaluation.set_defaults(run=_eval)
    serve = commands.add_parser("serve", help="run the recommendation API (settings: TWOTOWER_* "
                                "environment variables, see services/api/config.py)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--home", type=Path, help="data directory (default TWOTOWER_DATA_DIR or "
                       f"{DEFAULT_HOME})")
    serve.add_argument("--workers", type=int, default=1, help="processes answering requests "
                       "(default 1; one per core uses them all, each holding its own copy of the "
                       "live version in memory)")
    serve.set_defaults(run=_serve)
    versions = commands.add_parser("versions", help="list, promote, roll back or prune index versions")
    common = argparse.ArgumentParser(add_help=False)  # before the action or after it
    common.add_argument("--home", type=Path, default=argparse.SUPPRESS,
                        help=f"data directory (default {DEFAULT_HOME})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    versions.add_argument("--home", type=Path, default=DEFAULT_HOME, help=argparse.SUPPRESS)
    versions.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    actions = versions.add_subparsers(dest="action", required=True)
    actions.add_parser("list", parents=[common], help="every index version with its status")
    actions.add_parser("promote", parents=[common], help="make a ready version live").add_argument(
        "version_id", type=int)
    actions.add_parser("rollback", parents=[common], help="make the previously live version live again")
    actions.add_parser("prune", parents=[common], help="delete old versions (never the live one or "
                       "the rollback target)").add_argument(
        "--keep", type=int, default=3, help="ready or retired versions kept besides them")
    versions.set_defaults(run=_versions)
    retrain = commands.add_parser("retrain", help="run the retraining job (dataset plus event log; "
                                  "promotes only if every check passes, then prunes) in this process")
    retrain.add_argument("--home", type=Path, default=DEFAULT_HOME,
                         help=f"data directory (default {DEFAULT_HOME})")
    retrain.add_argument("--data", help="dataset spec (default TWOTOWER_DATA, else the dataset the "
                         "home's last run read)")
    retrain.add_argument("--replace", action="store_true",
                         help="overwrite the features of another dataset that the home's live "
                              "model serves (default: refuse)")
    retrain.set_defaults(run=_retrain)
    bench = commands.add_parser("bench", help="run a benchmark from bench/ (bench NAME --key=value)")
    bench.add_argument("name", help="benchmark script in bench/, e.g. features")
    bench.add_argument("overrides", nargs=argparse.REMAINDER, help="--key=value overrides")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run a command. Bad input (a `DataError`, a home of another dataset, a failed pipeline run)
    ends as one line on stderr and exit status 1; `-v` shows the traceback and the full log."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Warnings go to the log (libraries such as Feast reset the warning filters when imported):
    # shown with -v, dropped otherwise, with the INFO chatter of the libraries.
    logging.captureWarnings(True)
    if not args.verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("py.warnings").setLevel(logging.ERROR)
    try:
        args.run(args)
    except Exception as error:
        if args.verbose or not _user_error(error):
            raise
        raise SystemExit(f"twotower {args.command}: {error}") from None


QUIET_LOGGERS = ("feast", "dagster", "alembic", "httpx", "urllib3")
# Errors that are the user's input, not a bug: (module, class). A module not yet imported raised
# none of them, so none is imported here only to be checked.
USER_ERRORS = (("feature_repo.datasets.contract", "DataError"), ("index.home", "HomeError"),
               ("twotower.demo", "PipelineFailed"))


def _user_error(error: Exception) -> bool:
    return any(isinstance(error, kind) for module, name in USER_ERRORS
               if isinstance(kind := getattr(sys.modules.get(module), name, None), type))


if __name__ == "__main__":
    main()
