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

import dataclasses
import os
import resource
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from omegaconf import DictConfig

from models import DarknetError, DetectorConfig, cut_points
from objectives.baseline import WeightsError, detector_config, load_baseline, train_baseline, weights_digest
from objectives.device import resolve_device
from objectives.objective import EvalSettings, evaluate_accuracy
from objectives.settings import TrainSettings
from objectives.table import DesignTable
from objectives.table import read_csv as read_table
from search import drivers
from search import study as lifecycle
from search.config import RunConfig, load_run_config
from search.data import load_data
from search.deploy.store import WeightStore
from search.export import StudyView, export_all, print_summary, study_view
from search.extras import require
from search.finalize import (
    Finalized,
    agreement,
    candidates,
    final_name,
    finalize,
    judged,
    load_final,
    open_final,
    pareto_front,
)
from search.objective import Objective, Pricing, Shared, score
from search.profiles import ConfigError, load_profile
from search.record import StudyRecord, TrialRecord, anchor_keys, count_primaries, front_keys
from search.report import write_report
from search.space import baseline_points, param_columns, params_of, point_of
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


def view(rc: RunConfig, study: optuna.Study, storage) -> StudyView:
    """The study as the exports read it: feasibility at ``study.th``, numbers at ``export.fidelity``."""
    return study_view(study, load_final(storage, study.study_name), rc.study.th, rc.export.fidelity)


def _export(rc: RunConfig, study: optuna.Study, export_dir: Path, storage) -> None:
    # the cut-point table's structure (layer numbers, parameter names) does not depend on the class count
    columns = param_columns(cut_points(model_config(rc, num_classes=1)), rc.space.shared_layer_keep)
    v = view(rc, study, storage)
    export_all(v, export_dir, columns)
    if rc.mode != "export":
        write_report(v, export_dir, columns)
    print_summary(v, columns)
    store = WeightStore(export_dir / "models")
    if store.folder.is_dir():
        running, unsure = running_keys(rc, study)  # another worker's model may be on its way to the front
        store.retain(front_keys(study) | anchor_keys(study) | running,
                     min_age_s=rc.storage.grace_period if unsure or running else 0.0)
        print(f"kept weights: {len(list(store.folder.glob('*.pt')))} models, {store.size_bytes() / 2**20:.1f} MiB in "
              f"{store.folder}/", flush=True)


def running_keys(rc: RunConfig, study: optuna.Study) -> tuple[set[str], bool]:
    """Accuracy keys of the study's RUNNING trials, and whether some running trial's point cannot be read yet."""
    table = cut_points(model_config(rc, num_classes=1))
    keys, unsure = set(), False
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        try:
            keys.add(point_of(t.params, rc.space, table).accuracy_key(table))
        except (ValueError, KeyError):
            unsure = True
    return keys, unsure


def deploy(rc: RunConfig, study: optuna.Study, export_dir: Path, storage) -> Path:
    """``mode=deploy``: the bundle of ``deploy.trial`` (or the lowest-energy feasible Pareto point) at the export's
    fidelity: a finalized point ships its final weights and numbers."""
    from search.deploy.bundle import DeployError, rebuild, write_bundle

    v = view(rc, study, storage)
    if rc.deploy.trial is None:
        front = sorted(pareto_front(v.pool), key=lambda t: t.values[0])
        if not front:
            raise ConfigError(f"deploy: study {rc.study.name} has no feasible Pareto point at th={rc.study.th:g}; "
                              f"pick one with deploy.trial=N")
        trial = front[0]
    else:
        trial = {t.number: t for t in v.pool}.get(rc.deploy.trial)
        if trial is None:
            raise ConfigError(f"deploy.trial={rc.deploy.trial}: not a complete trial of study {rc.study.name}")
    rec = TrialRecord.from_trial(trial)
    final = rec.fidelity == "final"
    store = WeightStore(export_dir / ("final-models" if final else "models"))
    if rec.accuracy is None or not store.path(rec.accuracy.key).is_file():
        key = rec.accuracy.key if rec.accuracy else "?"
        raise ConfigError(f"deploy.trial={trial.number}: no kept weights for {key} in {store.folder}/ (kept: the "
                          f"feasible Pareto front and the unpruned anchors)")
    studies = Path(rc.studies_dir)
    train, val, data_key = load_data(rc.data, studies / "cache")
    base, model_name = baseline_model(rc, train, data_key, studies / "cache", resolve_device("cpu"))
    blob = store.load(rec.accuracy.key)
    bits = int(trial.params.get("bits", 8))
    acc = rec.accuracy
    sm = rebuild(base.model, blob, bits, rc.model.recon, acc.image_codec or None, acc.quality)
    codec = load_profile("codec", rec.codec)
    info = {"study": rc.study.name, "trial": trial.number, "key": rec.accuracy.key, "model": model_name,
            "fidelity": "final" if final else "search", "final_trial": rec.final_trial,
            "finetune_steps": rec.accuracy.finetune_steps,
            "mAP50": rec.mAP50, "mAP50_95": rec.mAP50_95, "payload_bytes": rec.payload_bytes,
            "payload_mean_bytes": rec.accuracy.payload_mean_bytes.get(codec.codec),
            "payload_images": rc.eval.payload_images,
            "codec": {"name": rec.codec, "algorithm": codec.codec}, "radio": rec.radio,
            "platform": {"node": rc.platform.node.name, "edge": rc.platform.edge.name},
            "image_encoder": dataclasses.asdict(image_encoders(rc.platform.node)[acc.image_codec])
            if acc.image_codec else None,
            "node_energy_mJ": trial.values[0], "latency_ms": trial.values[1],
            "class_names": list(train.class_names), "data": dataclasses.asdict(rc.data),
            "eval": {"conf_threshold": rc.eval.conf_threshold, "nms_iou": rc.eval.nms_iou,
                     "payload_conf_threshold": rc.eval.payload_conf_threshold, "max_det": 100},
            "max_frame_bytes": rc.deploy.max_frame_bytes, "idle_timeout_s": rc.deploy.idle_timeout_s,
            "max_clients": rc.deploy.max_clients}
    images = torch.from_numpy(val.images[:8]).permute(0, 3, 1, 2).float() / 255
    try:
        out = write_bundle(export_dir / "deploy" / str(trial.number), sm, blob, info, images)
    except DeployError as e:
        raise ConfigError(str(e)) from None
    print(f"deploy: trial {trial.number} ({rec.accuracy.key}, {rec.radio}/{rec.codec}, mAP@0.5 {rec.mAP50:.4f} "
          f"{'final' if final else 'search-time'}, {rec.payload_bytes} B) -> {out}/", flush=True)
    return out


def unchanged(acc) -> bool:
    """The measured model is the baseline itself: nothing cut (j=0, the all-in-node point), nothing fine-tuned."""
    return acc.feature_values == 0 and acc.finetune_steps == 0 and not acc.kept_channels


def final_training(train: TrainSettings) -> TrainSettings:
    """``mode=finalize``'s settings: the ``train.final`` budget in place of the search's, and every model trained
    (a front model the search kept un-fine-tuned, ``train.finetune_when=needed``, is trained too)."""
    return dataclasses.replace(train, finetune=train.final, finetune_when="always")


def measuring(rc: RunConfig, base_map: float, train: TrainSettings, radios: set[str] = frozenset(),
              codecs: set[str] = frozenset()) -> tuple[EvalSettings, Pricing]:
    """How a run measures a model (``train``'s fine-tuning, payloads for every codec algorithm) and prices it: the
    space's radios and codecs, and ``radios``/``codecs`` besides (a study's trials may name ones the space has
    dropped since)."""
    profiles = {n: load_profile("codec", n) for n in [*rc.space.codecs, *sorted(set(codecs) - set(rc.space.codecs))]}
    algorithms = tuple(dict.fromkeys(p.codec for p in profiles.values()))
    settings = EvalSettings(rc.eval, rc.model, train, algorithms, rc.platform.edge.measured, rc.progress,
                            required_map50=base_map - rc.study.th)
    radio_names = [*rc.space.radios, *sorted(set(radios) - set(rc.space.radios))]
    return settings, Pricing(rc.platform.node, rc.platform.edge, {n: load_profile("radio", n) for n in radio_names},
                             profiles, rc.study.th, base_map, image_encoders(rc.platform.node))


def image_encoders(node) -> dict:
    """Image format -> the image-codec profile the node encodes it with (``platform.node.image_encoders``)."""
    return {fmt: load_profile("image_codec", name) for fmt, name in (node.image_encoders or {}).items()}


def finalize_run(rc: RunConfig, study: optuna.Study, storage, export_dir: Path, device) -> list[Finalized]:
    """``mode=finalize``: re-train the front (and the models just below the threshold) with ``train.final`` and
    store the results in ``<study>.final`` (:mod:`search.finalize`); prints the agreement with the search."""
    t0 = time.time()
    rec = StudyRecord.of(study)
    if rec.baseline_mAP50 is None:
        raise ConfigError(f"finalize: study {rc.study.name} has no measured baseline (run it first)")
    cache_dir = Path(rc.studies_dir) / "cache"
    train, val, data_key = load_data(rc.data, cache_dir)
    base, model_name = baseline_model(rc, train, data_key, cache_dir, device)
    searched = lifecycle.search_settings(rc, model_name)
    if rec.accuracy_settings not in (None, searched):
        raise ConfigError(f"finalize: the data/model/train/eval settings differ from those study {rc.study.name} was "
                          f"measured with (model now: {model_name}; study: {rec.model}); finalize with the study's "
                          f"settings")
    table = cut_points(base.model.cfg)
    trials = [judged(t, rc.study.th) for t in study.get_trials(deepcopy=False,
                                                                 states=(optuna.trial.TrialState.COMPLETE,))]
    cands = candidates(trials, rc.finalize.margin, rc.finalize.max_points)
    names = {(r.radio, r.codec) for t in trials if (r := TrialRecord.from_trial(t)).radio}
    settings, pricing = measuring(rc, float(rec.baseline_mAP50), final_training(rc.train),
                                  radios={r for r, _ in names}, codecs={c for _, c in names})
    store = WeightStore(export_dir / "final-models")

    def train_one(t: optuna.trial.FrozenTrial):
        point = point_of(t.params, rc.space, table)
        trained: dict = {}
        acc = evaluate_accuracy(point, base.model, train, val, settings, device, trained)
        store.save(acc.key, trained["model"], trained["kept"])
        return acc

    budget = (f"{rc.train.final.steps} steps" if rc.train.final.steps > 0 else f"{rc.train.final.epochs:g} epochs")
    n_front = sum(c.on_front for c in cands)
    print(f"finalize: {len(cands)} models ({n_front} on the feasible front at th={rc.study.th:g}, "
          f"{len(cands) - n_front} within finalize.margin={rc.finalize.margin:g} below the threshold "
          f"{rec.baseline_mAP50 - rc.study.th:.4f}; finalize.max_points={rc.finalize.max_points}), train.final: "
          f"{budget}; results in study {final_name(rc.study.name)}", flush=True)
    fs = open_final(storage, study)
    done = finalize(study, fs, cands, f"{searched} final={rc.train.final!r}", rc.study.th, train_one,
                    lambda acc, radio, codec, **kw: score(acc, radio, codec, pricing, **kw),
                    log=lambda m: print(m, flush=True))
    trained = [f.seconds for f in done if f.trained]
    if done:
        a = agreement([f.mAP50_search for f in done], [f.mAP50_final for f in done], [f.key for f in done],
                      rec.baseline_mAP50 - rc.study.th)
        print(f"finalize: {len(trained)} models trained ({len(done) - len(trained)} stored before), "
              + (f"median {sorted(trained)[len(trained) // 2]:.0f} s each, " if trained else "")
              + f"{time.time() - t0:.0f} s in all; search vs final mAP@0.5: Kendall tau {a.kendall_tau:.3f}, mean "
              f"|change| {a.mean_abs_change:.4f} (mean {a.mean_change:+.4f}); now feasible: "
              f"{len(a.became_feasible)}, now infeasible: {len(a.became_infeasible)}", flush=True)
    return done


def load_design_table(rc: RunConfig) -> DesignTable:
    """The design table of ``rc.table``, checked against this run: it must have been measured with the run's data,
    model, train and eval settings, and hold payload sizes for every codec of the space."""
    path = Path(rc.table)
    try:
        prov, rows = read_table(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"table={rc.table!r}: {e}") from None
    for k in ("settings", "model", "num_classes", "digest"):
        if k not in prov:
            raise ConfigError(f"table={rc.table!r}: its provenance line lacks {k!r} (rebuild it with "
                              f"tests/benchmarks/build_table.py)")
    ours = lifecycle.search_settings(rc, prov["model"])
    theirs = prov["settings"]
    if theirs != ours:
        i = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                 min(len(ours), len(theirs)))
        raise ConfigError(f"table={rc.table!r}: measured with other data/model/train/eval settings than this run's "
                          f"(first difference: table {theirs[max(0, i - 30):i + 30]!r} vs run "
                          f"{ours[max(0, i - 30):i + 30]!r})")
    design = DesignTable.from_rows(prov, rows, cut_points(model_config(rc, int(prov["num_classes"]))))
    need = {load_profile("codec", n).codec for n in rc.space.codecs}  # the algorithms behind the space's codecs
    have = set(next(iter(design.results.values())).payload_mean_bytes) if design.results else set()
    if not design.results or not need <= have:
        raise ConfigError(f"table={rc.table!r}: no payload sizes for codec algorithm(s) {sorted(need - have)} "
                          f"(it has {sorted(have)}); drop them from space.codecs")
    return design


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


def enqueue_anchors(rc: RunConfig, study: optuna.Study, table) -> None:
    """``study.enqueue_baselines``: j=0, j=6 and every unpruned split point first (once per study)."""
    if rc.study.enqueue_baselines:
        lifecycle.enqueue_once(study, [params_of(p, rc.space, table) for p in baseline_points(rc.space, table)])


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
    if rc.mode in ("optimize", "finalize"):  # checked before anything is created
        sampler = lifecycle.make_sampler(rc)
        device = resolve_device(rc.device)
    if rc.mode == "deploy":
        require("deploy")  # before anything is opened: one line naming the pip install
    storage, url = make_storage(rc.storage, rc.study.name, studies)
    if rc.mode == "deploy":
        study = lifecycle.load(rc, storage, url)
        out = deploy(rc, study, export_dir, storage)
        return RunResult(study, url, out, StudyRecord.of(study).baseline_mAP50, count_primaries(study))
    if rc.mode in ("export", "report"):
        study = lifecycle.load(rc, storage, url)
        if rc.mode == "export":
            _export(rc, study, export_dir, storage)
        else:
            columns = param_columns(cut_points(model_config(rc, 1)), rc.space.shared_layer_keep)
            print(f"report: {write_report(view(rc, study, storage), export_dir, columns)}", flush=True)
        return RunResult(study, url, export_dir, StudyRecord.of(study).baseline_mAP50, count_primaries(study))
    if rc.mode == "finalize":
        study = lifecycle.load(rc, storage, url)
        finalize_run(rc, study, storage, export_dir, device)
        _export(rc, study, export_dir, storage)
        return RunResult(study, url, export_dir, StudyRecord.of(study).baseline_mAP50, count_primaries(study))

    if rc.table:  # every point answered from the design table: nothing is loaded or trained
        design = load_design_table(rc)
        table, model_name = design.cut, design.provenance["model"]
        study = lifecycle.open_study(rc, storage, sampler, model_name)
        StudyRecord(model=model_name, node_j=len(table) - 1, baseline_key=f"table:{design.provenance['digest']}",
                    baseline_mAP50=design.baseline_map50).save(study)
        base_map, how = design.baseline_map50, f"from the design table {rc.table}"
    else:
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

    settings, pricing = measuring(rc, base_map, rc.train)
    shared = None if rc.study.single_worker else Shared(
        Claims(rc.storage.claim_delay_s),
        AttrHeartbeat(rc.storage.heartbeat_interval, rc.storage.grace_period) if rc.storage.kind == "journal"
        and rc.storage.heartbeat_interval else None,
        rc.study.n_trials if rc.study.protocol == "search" else None)
    store = WeightStore(export_dir / "models")

    def evaluate(point):  # measure the point and keep its trained weights (studies/<study>/models/)
        trained: dict = {}
        acc = evaluate_accuracy(point, base.model, train, val, settings, device, trained)
        store.save(acc.key, trained["model"], trained["kept"], as_baseline=unchanged(acc))
        # a point that is dominated or infeasible now stays so: only the front, the anchors and running trials' points
        # (this one among them) can ever be deployed, so the folder holds those alone as the study runs
        # (with other workers, files of the last grace period stay: a just-completed trial's siblings, which may be
        # on the front, are added by its worker right after it completes)
        running, _ = running_keys(rc, study)
        store.retain(front_keys(study) | anchor_keys(study) | running | {acc.key},
                     min_age_s=0.0 if rc.study.single_worker else rc.storage.grace_period)
        return acc

    objective = Objective(study, rc.space, table, pricing, design.lookup if rc.table else evaluate, settings.codecs,
                          shared)
    interrupted = lifecycle.recover(study, rc.study.single_worker, shared.liveness if shared else None)
    if interrupted:
        print(f"resumed: {interrupted} interrupted trial(s) failed and queued again", flush=True)
    lifecycle.complete_siblings(study, objective, rc.storage.grace_period if shared else 0)
    study.sampler = lifecycle.make_sampler(rc, lifecycle.worker_index(rc, study))
    enqueue_anchors(rc, study, table)

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
    if rc.study.finalize and not worker:
        finalize_run(rc, study, storage, export_dir, device)
    if not worker:  # the workers of workers=N leave the exports to their parent
        _export(rc, study, export_dir, storage)
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
