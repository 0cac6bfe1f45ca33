"""``run(cfg)``: the orchestration of one command, in running order.

How one trial flows: :mod:`search.drivers` runs ``study.optimize``; the sampler proposes parameters that
:func:`search.space.suggest` turns into a frozen :class:`~objectives.design.DesignPoint`;
:class:`search.objective.Objective` trains and measures its model once per accuracy key
(:func:`objectives.objective.evaluate_accuracy`), prices it on the trial's radio and codec
(:func:`search.objective.score`), stores one :class:`~search.record.TrialRecord` and the constraints, and returns
(node_energy_mJ, latency_ms). Its ``after_trial`` callback adds one sibling trial per other radio x codec (same
model, own costs) and the driver's stop callback ends the run when the study holds ``study.n_trials`` model
evaluations. Exports and the report read the records back.
"""

from __future__ import annotations

import os
import resource
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from omegaconf import DictConfig

from models import DarknetError, DetectorConfig, cut_points
from objectives.baseline import WeightsError, detector_config, load_baseline, train_baseline, weights_digest
from objectives.device import resolve_device
from objectives.objective import EvalSettings, evaluate_accuracy
from search import drivers
from search import study as lifecycle
from search.config import RunConfig, load_run_config
from search.data import load_data
from search.export import export_all, print_summary
from search.objective import Objective, Pricing, Shared
from search.profiles import ConfigError, load_profile
from search.record import StudyRecord, count_primaries
from search.report import write_report
from search.space import baseline_points, param_columns, params_of
from search.storage import make_storage
from search.workers import WORKER_ENV, AttrHeartbeat, Claims, launch


@dataclass
class RunResult:
    study: optuna.Study
    storage_url: str
    export_dir: Path
    baseline_map50: float | None
    primaries: int


def model_config(rc: RunConfig, num_classes: int) -> DetectorConfig:
    return detector_config(rc.model, rc.data.size, num_classes)


def _export(rc: RunConfig, study: optuna.Study, export_dir: Path) -> None:
    # the cut-point table's structure (layer numbers, parameter names) does not depend on the class count
    columns = param_columns(cut_points(model_config(rc, num_classes=1)))
    export_all(study, export_dir, columns)
    if rc.mode != "export":
        write_report(study, export_dir, columns)
    print_summary(study, columns)


def baseline_model(rc: RunConfig, train, data_key: str, cache_dir: Path, device):
    """(the baseline, its name): the user's weights as they are (``model.weights``), or the detector trained here
    (cached)."""
    mcfg = model_config(rc, len(train.class_names))
    if rc.model.weights:
        try:
            base = load_baseline(mcfg, rc.model.weights, train.class_names)
        except (WeightsError, DarknetError) as e:
            raise ConfigError(str(e)) from None
        return base, f"{mcfg.name}.cfg + {base.path.name} (sha256 {weights_digest(base.path)})"
    base = train_baseline(mcfg, train, data_key, rc.train.baseline, cache_dir, device, kmeans=rc.model.kmeans_anchors,
                          progress=rc.progress)
    return base, f"{mcfg.name}.cfg trained here ({base.path.name})"


def drive(rc: RunConfig, study: optuna.Study, objective: Objective, table, base_map: float) -> int:
    if rc.study.protocol == "paper":
        return drivers.paper_protocol(rc, study, objective, table, base_map)
    return drivers.sampler_loop(rc, study, objective)


def with_storage_retries(rc: RunConfig, url: str, fn, after_outage=None):
    """Call ``fn``; while the storage is unreachable, retry with back-off (1, 2, 4 ... 30 s) for
    ``storage.retry_minutes``, then give up with one line (the trial that was running is failed by its stale
    heartbeat and queued again by the next worker). ``after_outage`` runs first when the storage is back."""
    from sqlalchemy.exc import DBAPIError

    def in_chain(e: BaseException | None, match) -> BaseException | None:
        # Optuna's _run_trial can turn a failed storage call into an UnboundLocalError: follow the chain
        seen = set()
        while e is not None and id(e) not in seen:
            if match(e):
                return e
            seen.add(id(e))
            e = e.__cause__ or e.__context__
        return None

    def storage_error(e: BaseException) -> BaseException | None:
        return in_chain(e, lambda x: isinstance(x, (DBAPIError, optuna.exceptions.StorageInternalError)))

    def finished_elsewhere(e: BaseException) -> bool:
        return in_chain(e, lambda x: isinstance(x, optuna.exceptions.UpdateFinishedTrialError) or (
            isinstance(x, ValueError) and str(x).startswith("Cannot tell a"))) is not None

    deadline, wait = None, 1.0
    while True:
        try:
            if deadline is not None and after_outage is not None:
                after_outage()
            return fn()
        except Exception as err:  # noqa: BLE001 - re-raised unless the storage is behind it
            if finished_elsewhere(err):
                print("this worker's trial was failed by another worker (its heartbeat went stale) and queued "
                      "again; going on", flush=True)
                continue
            e = storage_error(err)
            if e is None:
                raise
            now = time.time()
            deadline = deadline or now + rc.storage.retry_minutes * 60
            if now >= deadline:
                raise ConfigError(f"storage {url}: unreachable for storage.retry_minutes={rc.storage.retry_minutes}; "
                                  f"giving up ({type(e).__name__})") from None
            print(f"storage {url} unreachable ({type(e).__name__}); retrying in {wait:.0f} s", flush=True)
            time.sleep(min(wait, max(0.0, deadline - now)))
            wait = min(wait * 2, 30.0)


def run(cfg: DictConfig | RunConfig, overrides: list[str] | None = None) -> RunResult:
    """Run (or resume) the study described by ``cfg`` and write its exports. ``overrides``: the command line's,
    for the worker processes of ``workers=N``."""
    t_start = time.time()
    rc = cfg if isinstance(cfg, RunConfig) else load_run_config(cfg)
    if rc.workers > 1 and rc.study.single_worker:
        raise ConfigError(f"study.single_worker=true contradicts workers={rc.workers}: set study.single_worker=false")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial (and failure) comes from here instead
    studies = Path(rc.studies_dir)
    export_dir = studies / rc.study.name
    if rc.mode == "optimize":  # checked before anything is created
        sampler = lifecycle.make_sampler(rc)
        device = resolve_device(rc.device)
    storage, url = make_storage(rc.storage, rc.study.name, studies)
    if rc.mode in ("export", "report"):
        study = lifecycle.load(rc, storage, url)
        if rc.mode == "export":
            _export(rc, study, export_dir)
        else:
            print(f"report: {write_report(study, export_dir, param_columns(cut_points(model_config(rc, 1))))}",
                  flush=True)
        return RunResult(study, url, export_dir, StudyRecord.of(study).baseline_mAP50, count_primaries(study))

    cache_dir = studies / "cache"
    train, val, data_key = load_data(rc.data, cache_dir)
    base, model_name = baseline_model(rc, train, data_key, cache_dir, device)
    table = cut_points(base.model.cfg)
    study = lifecycle.open_study(rc, storage, sampler, model_name)
    StudyRecord(model=model_name, node_j=len(table) - 1).save(study)
    base_map = lifecycle.baseline_map(rc, study, f"{model_name}:{rc.eval.conf_threshold}:{rc.eval.nms_iou}",
                                      base.model, val, device)
    how = "given weights, measured" if rc.model.weights else "cached" if base.cached else \
        f"trained in {base.seconds:.0f} s"
    print(f"model {model_name}: {len(table)} cut points; baseline mAP@0.5 = {base_map:.4f} ({how}); "
          f"constraint mAP@0.5 >= {base_map - rc.study.th:.4f}; storage {url}", flush=True)

    codecs = {n: load_profile("codec", n) for n in rc.space.codecs}
    algorithms = tuple(dict.fromkeys(p.codec for p in codecs.values()))
    settings = EvalSettings(rc.eval, rc.model, rc.train, algorithms, rc.platform.edge.measured, rc.progress)
    pricing = Pricing(rc.platform.node, rc.platform.edge, {n: load_profile("radio", n) for n in rc.space.radios},
                      codecs, rc.study.th, base_map)
    shared = None if rc.study.single_worker else Shared(
        Claims(rc.storage.claim_delay_s),
        AttrHeartbeat(rc.storage.heartbeat_interval, rc.storage.grace_period) if rc.storage.kind == "journal"
        and rc.storage.heartbeat_interval else None,
        rc.study.n_trials if rc.study.protocol == "search" else None)
    objective = Objective(study, rc.space, table, pricing,
                          lambda p: evaluate_accuracy(p, base.model, train, val, settings, device), algorithms, shared)
    interrupted = lifecycle.recover(study, rc.study.single_worker, shared.liveness if shared else None)
    if interrupted:
        print(f"resumed: {interrupted} interrupted trial(s) failed and queued again", flush=True)
    lifecycle.complete_siblings(study, objective, rc.storage.grace_period if shared else 0)
    study.sampler = lifecycle.make_sampler(rc, lifecycle.worker_index(rc, study))
    if rc.study.enqueue_baselines:
        lifecycle.enqueue_once(study, [params_of(p, rc.space, table) for p in baseline_points(rc.space, table)])

    if rc.workers > 1:
        codes = launch(overrides or [], rc.workers, rc.storage.url_env if rc.storage.kind == "postgres" else None,
                       rc.storage.url or (os.environ.get(rc.storage.url_env) if rc.storage.kind == "postgres"
                                          else None))
        if any(codes):
            print(f"workers exited with {codes}; the study keeps what they finished", flush=True)
        done = count_primaries(study)
    else:
        done = with_storage_retries(rc, url, lambda: drive(rc, study, objective, table, base_map),
                                    after_outage=lambda: objective.finish_siblings(study))
    worker = os.environ.get(WORKER_ENV) is not None
    if not worker:  # the workers of workers=N leave the exports to their parent
        _export(rc, study, export_dir)
    if objective.trial_seconds:
        ts = sorted(objective.trial_seconds)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(f"this run: {len(ts)} trials, median {ts[len(ts) // 2]:.1f} s, total {sum(ts):.0f} s; sibling trials "
              f"(every radio x codec) {objective.sibling_seconds:.2f} s = "
              f"{100 * objective.sibling_seconds / max(sum(ts), 1e-9):.2f} % of trial time; peak RSS {rss:.0f} MiB; "
              f"wall {time.time() - t_start:.0f} s", flush=True)
    if not worker:
        print(f"exports in {export_dir}/; inspect with: optuna-dashboard {url}", flush=True)
    return RunResult(study, url, export_dir, base_map, done)
