"""``run(cfg)``: create or resume the study, train/load the baseline, optimize, export.

Trial design: each *primary* trial samples a full design point (j, bits, keep ratios, criterion, codec,
radio), runs the accuracy part once per accuracy key (cached in memory and recovered from storage on
resume) and returns (node_energy_mJ, latency_ms) for its own codec and radio. After it completes, one
*sibling* trial per other codec x radio of the space is added with ``study.add_trial`` (same model, same
accuracy attributes, its own costs), so every evaluated model appears in the export for every radio and
codec, and the sampler learns from all of them. ``study.n_trials`` counts primary trials over the study's
life, so re-running the same command resumes up to that total.
"""

from __future__ import annotations

import logging
import math
import resource
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.trial import TrialState
from tqdm.auto import tqdm

from models import TinyYOLOv3Config, layer_table
from models.split import CUT_CONV
from objectives.accuracy import evaluate_map
from objectives.data.real import load_coco, load_yolo
from objectives.data.synthetic import ImageSet, SyntheticConfig, cached
from objectives.design import EARLIER_CONVS, DesignPoint, conv_channels
from objectives.objective import (
    AccuracyResult,
    EvalSettings,
    attrs_for,
    constraint_value,
    evaluate_accuracy,
    evaluate_costs,
)
from objectives.train import TrainingDiverged, head_config, resolve_device, train_baseline
from search.config import RunConfig, load_run_config
from search.export import export_all, print_summary
from search.profiles import ConfigError, load_profile
from search.report import write_report
from search.space import baseline_points, distributions_of, params_of, suggest
from search.storage import make_storage

log = logging.getLogger(__name__)
LEGACY_CONSTRAINTS = "constraints"  # the system attr optuna-dashboard 0.21 reads (a list)
OBJECTIVES = ("node_energy_mJ", "latency_ms")


@dataclass
class RunResult:
    study: optuna.Study
    storage_url: str
    export_dir: Path
    baseline_map50: float | None
    primaries: int


def load_data(rc: RunConfig, cache_dir: Path) -> tuple[ImageSet, ImageSet, str]:
    d = rc.data
    if d.kind == "synthetic":
        sc = SyntheticConfig(size=d.size, n_train=d.n_train, n_val=d.n_val, seed=d.seed)
        train, val = cached(sc, cache_dir)
        return train, val, sc.key()
    if d.kind == "yolo":
        train, _ = load_yolo(Path(d.data_yaml), "train", d.size)
        val, _ = load_yolo(Path(d.data_yaml), "val", d.size)
        return train, val, f"yolo:{Path(d.data_yaml).resolve()}:{d.size}"
    train, _ = load_coco(Path(d.train_json), Path(d.train_images), d.size)
    val, _ = load_coco(Path(d.val_json), Path(d.val_images), d.size)
    return train, val, f"coco:{Path(d.train_json).resolve()}:{d.size}"


def _role(t: optuna.trial.FrozenTrial) -> str:
    return str(t.user_attrs.get("role", "primary"))


def count_primaries(study: optuna.Study) -> int:
    """Primary trials that count towards n_trials: complete, or failed for a reason of their own."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if _role(t) == "primary" and not t.user_attrs.get("interrupted"):
            n += 1
    return n


def recover(study: optuna.Study, single_worker: bool) -> int:
    """Fail trials a killed run left RUNNING and enqueue their parameters again. Returns how many."""
    if not single_worker:
        optuna.storages.fail_stale_trials(study)
        return 0
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            # not skip_if_exists: Optuna would find this very (now failed) trial's params and skip the retry
            study.enqueue_trial(t.params)
        n += 1
    return n


class Searcher:
    """The objective and its sibling bookkeeping, over one study."""

    def __init__(self, rc: RunConfig, study: optuna.Study, baseline, train: ImageSet, val: ImageSet,
                 baseline_map50: float, device: torch.device) -> None:
        self.rc, self.study, self.baseline = rc, study, baseline
        self.train, self.val, self.device = train, val, device
        self.baseline_map50 = baseline_map50
        self.channels = conv_channels(baseline.cfg)
        self.radios = {n: load_profile("radio", n) for n in rc.space.radios}
        self.codecs = {n: load_profile("codec", n) for n in rc.space.codecs}
        ft = rc.train.finetune if rc.train.finetune_enabled else None
        self.settings = EvalSettings(
            conf_threshold=rc.eval.conf_threshold, nms_iou=rc.eval.nms_iou,
            payload_conf_threshold=rc.eval.payload_conf_threshold, calib_images=rc.eval.calib_images,
            payload_images=rc.eval.payload_images, codecs=tuple(rc.space.codecs), finetune=ft,
            distill=rc.train.distill, adapt=rc.train.adapt, measure_edge=rc.platform.edge.measured,
            progress=rc.progress,
            recon=rc.model.recon, range_percentile=rc.model.range_percentile,
            before_finetune=rc.eval.before_finetune)
        self.cache: dict[str, AccuracyResult] = {}
        self.sibling_seconds = 0.0
        self.trial_seconds: list[float] = []
        self.evaluated: dict[tuple[str, str, str], int] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self._remember(t)
            acc = t.user_attrs.get("accuracy")
            if acc and set(rc.space.codecs) <= set(acc.get("payload_mean_bytes", {})):
                self.cache.setdefault(acc["key"], AccuracyResult.from_attrs(acc))

    def _remember(self, t: optuna.trial.FrozenTrial) -> None:
        """Note which (model, radio, codec) a complete trial holds, so a re-proposal is recognised."""
        key = t.user_attrs.get("accuracy_key")
        if key:
            self.evaluated.setdefault((key, t.user_attrs.get("radio"), t.user_attrs.get("codec")), t.number)

    # -------------------------------------------------------------------------------- objective
    def accuracy(self, point: DesignPoint) -> AccuracyResult:
        key = point.accuracy_key(self.channels)
        if key not in self.cache:
            self.cache[key] = evaluate_accuracy(point, self.baseline, self.train, self.val, self.settings,
                                                self.device)
        return self.cache[key]

    def score(self, acc: AccuracyResult, radio: str, codec: str):
        """Cost of a measured model on one radio and codec, its constraints (feasible when all <= 0) and the
        user attrs that go with them - the same for a primary trial and its siblings."""
        cost = evaluate_costs(acc, self.rc.platform.node, self.rc.platform.edge, self.radios[radio],
                              self.codecs[codec])
        c_map = constraint_value(acc.map50, self.baseline_map50, self.rc.study.th)
        constraints = {"map50_drop": c_map, "platform": 0.0 if cost.feasible else 1.0}
        attrs = attrs_for(acc, cost, self.baseline_map50, c_map, c_map <= 0 and cost.feasible)
        return cost, constraints, attrs

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        t0 = time.time()
        try:
            return self._objective(trial)
        finally:
            self.trial_seconds.append(time.time() - t0)

    def _objective(self, trial: optuna.Trial) -> tuple[float, float]:
        point = suggest(trial, self.rc.space)
        trial.set_user_attr("role", "primary")
        trial.set_user_attr("radio", point.radio)
        trial.set_user_attr("codec", point.codec)
        dup = self.evaluated.get((point.accuracy_key(self.channels), point.radio, point.codec))
        if dup is not None:
            # the same model on the same radio and codec is already in the study (as a trial or a sibling)
            trial.set_user_attr("duplicate_of", dup)
            raise optuna.TrialPruned(f"duplicate of trial {dup}")
        try:
            acc = self.accuracy(point)
        except TrainingDiverged as e:
            trial.set_user_attr("fail_reason", str(e))
            raise
        if not (math.isfinite(acc.map50)):
            trial.set_user_attr("fail_reason", f"mAP is {acc.map50}")
            raise TrainingDiverged(f"mAP is {acc.map50} for {acc.key}")
        cost, constraints, attrs = self.score(acc, point.radio, point.codec)
        for k, v in constraints.items():
            trial.set_constraint(k, v)
        # optuna-dashboard 0.21 reads only the legacy list in the system attrs
        trial.storage.set_trial_system_attr(trial._trial_id, LEGACY_CONSTRAINTS, list(constraints.values()))
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        feasible = attrs["feasible"]
        before = "" if math.isnan(acc.map50_before_finetune) else f"before fine-tune {acc.map50_before_finetune:.3f}, "
        tqdm.write(f"trial {trial.number}: {acc.key} -> mAP@0.5 {acc.map50:.3f} ({before}{acc.seconds:.0f} s), "
                   f"{math.ceil(acc.payload_mean_bytes[point.codec])} B; "
                   f"{point.radio}/{point.codec}: {cost.node_energy_mj:.3f} mJ, {cost.latency_ms:.2f} ms"
                   f"{'' if feasible else ' (infeasible)'}")
        return cost.node_energy_mj, cost.latency_ms

    # -------------------------------------------------------------------------------- siblings
    def add_siblings(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
        """Add a sibling trial for every codec x radio of the space the primary did not take (idempotent)."""
        if trial.state != TrialState.COMPLETE or _role(trial) != "primary":
            return 0
        self._remember(trial)
        t0 = time.time()
        try:
            return self._add_siblings(study, trial)
        finally:
            self.sibling_seconds += time.time() - t0

    def _add_siblings(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
        acc = AccuracyResult.from_attrs(trial.user_attrs["accuracy"])
        base = {k: v for k, v in trial.params.items() if k not in ("codec", "radio")}
        added = 0
        for radio in self.rc.space.radios:
            for codec in self.rc.space.codecs:
                if (acc.key, radio, codec) in self.evaluated:  # the primary itself, or a sibling added before
                    continue
                cost, constraints, attrs = self.score(acc, radio, codec)
                params = {**base, "codec": codec, "radio": radio}
                attrs.update(role="sibling", parent=trial.number, radio=radio, codec=codec)
                study.add_trial(optuna.trial.create_trial(
                    params=params, distributions=distributions_of(params, self.rc.space),
                    values=[cost.node_energy_mj, cost.latency_ms], user_attrs=attrs,
                    system_attrs={LEGACY_CONSTRAINTS: list(constraints.values())}, constraints=constraints))
                self.evaluated.setdefault((acc.key, radio, codec), trial.number)
                added += 1
        return added


def _step(study: optuna.Study, searcher: Searcher) -> None:
    study.optimize(searcher, n_trials=1, catch=(TrainingDiverged,),
                   callbacks=[lambda s, t: searcher.add_siblings(s, t)], show_progress_bar=False)
    last = study.get_trials(deepcopy=False)[-1]
    if last.state == TrialState.FAIL:
        reason = last.user_attrs.get("fail_reason", "see the study")
        tqdm.write(f"trial {last.number} failed: {reason}; the study goes on")


def optimize_loop(rc: RunConfig, study: optuna.Study, searcher: Searcher) -> int:
    """Sample primary trials until the study holds ``study.n_trials`` of them (or the timeout)."""
    done = count_primaries(study)
    t0 = time.time()
    bar = tqdm(total=rc.study.n_trials, initial=min(done, rc.study.n_trials), desc=f"study {rc.study.name}",
               unit="trial", disable=not rc.progress)
    duplicates = 0
    try:
        while done < rc.study.n_trials:
            if rc.study.timeout_min and time.time() - t0 > rc.study.timeout_min * 60:
                print(f"study.timeout_min={rc.study.timeout_min} reached; re-run to continue", flush=True)
                break
            _step(study, searcher)
            last = study.get_trials(deepcopy=False)[-1]
            duplicates = duplicates + 1 if last.state == TrialState.PRUNED else 0
            if duplicates >= rc.study.max_duplicates:
                print(f"the sampler proposed {duplicates} already-evaluated points in a row: the study has converged "
                      f"on this space (widen it, relax study.th, or fine-tune longer); stopping at {done} of "
                      f"{rc.study.n_trials} evaluations", flush=True)
                break
            done = count_primaries(study)
            bar.n = min(done, rc.study.n_trials)
            bar.refresh()
    finally:
        bar.close()
    return done


def _run_queue(rc: RunConfig, study: optuna.Study, searcher: Searcher, points: list[DesignPoint], desc: str) -> None:
    for p in points:
        study.enqueue_trial(params_of(p, rc.space), skip_if_exists=True)
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    bar = tqdm(total=waiting, desc=desc, unit="trial", disable=not rc.progress)
    try:
        while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            _step(study, searcher)
            bar.update(1)
    finally:
        bar.close()


def paper_step1_points(rc: RunConfig, model_cfg: TinyYOLOv3Config) -> list[DesignPoint]:
    """The paper's step 1 at 1 bit and the first codec (ZIP): j=0, j=6, each split point unpruned, and each
    split point keeping ``study.paper_channels`` channels at the cut conv (earlier layers whole)."""
    table = layer_table(model_cfg)
    codec, radio = rc.space.codecs[0], rc.space.radios[0]
    pts = list(baseline_points(rc.space, bits=min(rc.space.bits)))
    for j in (j for j in rc.space.partitions if 1 <= j <= 5):
        c = table[CUT_CONV[j]].out_channels
        earlier = tuple((e, 1.0) for e in EARLIER_CONVS[j]) if rc.space.prune_earlier else ()
        for k in rc.study.paper_channels:
            if k < c:
                pts.append(DesignPoint(j, min(rc.space.bits), k / c, earlier, rc.space.criteria[0], codec, radio))
    return pts


def paper_step2_points(rc: RunConfig, study: optuna.Study, base_map: float) -> list[DesignPoint]:
    """Step 2: at each j's smallest feasible step-1 payload (Eq. 7/8), prune every earlier node conv to each
    of ``study.paper_ratios`` (Eq. 9/10)."""
    codec, radio = rc.space.codecs[0], rc.space.radios[0]
    pts = []
    for j in (j for j in rc.space.partitions if 2 <= j <= 5):
        cands = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if _role(t) == "primary" and t.params.get("j") == j
                 and all(v >= 1.0 for k, v in t.params.items() if k.startswith("keep_L"))
                 and t.user_attrs.get("mAP50", -1) >= base_map - rc.study.th]
        if not cands:
            print(f"paper protocol: no feasible step-1 point at j={j}; step 2 skipped there", flush=True)
            continue
        best = min(cands, key=lambda t: (t.user_attrs["payload_bytes"], -t.user_attrs["mAP50"]))
        for r in rc.study.paper_ratios:
            pts.append(DesignPoint(j, int(best.params.get("bits", 1)), float(best.params["keep_cut"]),
                                   tuple((e, float(r)) for e in EARLIER_CONVS[j]), rc.space.criteria[0], codec, radio))
    return pts


def run_paper_protocol(rc: RunConfig, study: optuna.Study, searcher: Searcher, model_cfg: TinyYOLOv3Config) -> int:
    """The paper's manual protocol as an enqueued grid (resumable: existing points are skipped)."""
    _run_queue(rc, study, searcher, paper_step1_points(rc, model_cfg), "paper step 1")
    _run_queue(rc, study, searcher, paper_step2_points(rc, study, searcher.baseline_map50), "paper step 2")
    return count_primaries(study)


def _baseline_map(rc: RunConfig, study: optuna.Study, key: str, model, val: ImageSet, device) -> float:
    """mAP@0.5 of the unsplit baseline, stored in the study so a resumed run reuses it."""
    attrs = study.user_attrs
    if attrs.get("baseline_key") == key and "baseline_mAP50" in attrs:
        return float(attrs["baseline_mAP50"])
    r = evaluate_map(model, val, head_config(model.cfg), model.cfg.input_size, rc.eval.conf_threshold,
                     rc.eval.nms_iou, device)
    study.set_user_attr("baseline_key", key)
    study.set_user_attr("baseline_mAP50", r.map50)
    study.set_user_attr("baseline_mAP50_95", r.map50_95)
    return r.map50


def _make_sampler(rc: RunConfig) -> optuna.samplers.BaseSampler:
    try:
        sampler = instantiate(rc.study.sampler)
    except Exception as e:  # noqa: BLE001 - hydra wraps import and argument errors alike
        raise ConfigError(f"study.sampler._target_={rc.study.sampler.get('_target_')!r}: cannot build it "
                          f"({' '.join(str(e).split())[:200]})") from None
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise ConfigError(f"study.sampler._target_={rc.study.sampler.get('_target_')!r} is not an Optuna sampler")
    return sampler


def run(cfg: DictConfig | RunConfig) -> RunResult:
    """Run (or resume) the study described by ``cfg`` and write its exports."""
    t_start = time.time()
    rc = cfg if isinstance(cfg, RunConfig) else load_run_config(cfg)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial (and failure) comes from here instead
    studies = Path(rc.studies_dir)
    export_dir = studies / rc.study.name
    storage, url = make_storage(rc.storage, rc.study.name, studies)
    if rc.mode in ("export", "report"):
        try:
            study = optuna.load_study(study_name=rc.study.name, storage=storage)
        except KeyError:
            raise ConfigError(f"study.name={rc.study.name!r}: no such study in {url}") from None
        if rc.mode == "export":
            export_all(study, export_dir)
            print_summary(study)
        else:
            print(f"report: {write_report(study, export_dir)}", flush=True)
        return RunResult(study, url, export_dir, study.user_attrs.get("baseline_mAP50"), count_primaries(study))

    sampler = _make_sampler(rc)
    device = resolve_device(rc.device)
    cache_dir = studies / "cache"
    train, val, data_key = load_data(rc, cache_dir)
    mcfg = TinyYOLOv3Config(num_classes=len(train.class_names), input_size=rc.data.size, width=rc.model.width)
    base = train_baseline(mcfg, train, data_key, rc.train.baseline, cache_dir, device, kmeans=rc.model.kmeans_anchors,
                          progress=rc.progress)
    study = optuna.create_study(study_name=rc.study.name, storage=storage, sampler=sampler,
                                directions=["minimize", "minimize"], load_if_exists=True)
    study.set_metric_names(list(OBJECTIVES))
    if study.user_attrs.get("space") not in (None, repr(rc.space)):
        log.warning("the space differs from the one this study was created with; old trials are kept")
    study.set_user_attr("space", repr(rc.space))
    measured_with = repr((rc.data, rc.model, rc.train, rc.eval))  # what an accuracy result depends on
    if study.user_attrs.get("accuracy_settings") not in (None, measured_with):
        log.warning("data/model/train/eval settings differ from those this study's trials were measured with; old "
                    "trials are kept and a repeated design point reuses their results - use a new study.name to "
                    "measure again")
    study.set_user_attr("accuracy_settings", measured_with)
    base_map = _baseline_map(rc, study, f"{base.path.name}:{rc.eval.conf_threshold}:{rc.eval.nms_iou}",
                             base.model, val, device)
    print(f"baseline mAP@0.5 = {base_map:.4f} ({'cached' if base.cached else f'trained in {base.seconds:.0f} s'}); "
          f"constraint mAP@0.5 >= {base_map - rc.study.th:.4f}; storage {url}", flush=True)
    searcher = Searcher(rc, study, base.model, train, val, base_map, device)
    interrupted = recover(study, rc.study.single_worker)
    if interrupted:
        print(f"resumed: {interrupted} interrupted trial(s) failed and queued again", flush=True)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        searcher.add_siblings(study, t)  # a run killed between a trial and its siblings
    if rc.study.enqueue_baselines and not study.user_attrs.get("baselines_enqueued"):
        for p in baseline_points(rc.space):
            study.enqueue_trial(params_of(p, rc.space), skip_if_exists=True)
        study.set_user_attr("baselines_enqueued", True)

    if rc.study.protocol == "paper":
        done = run_paper_protocol(rc, study, searcher, base.model.cfg)
    else:
        done = optimize_loop(rc, study, searcher)
    export_all(study, export_dir)
    write_report(study, export_dir)
    print_summary(study)
    if searcher.trial_seconds:
        ts = sorted(searcher.trial_seconds)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(f"this run: {len(ts)} trials, median {ts[len(ts) // 2]:.1f} s, total {sum(ts):.0f} s; sibling trials "
              f"(every radio x codec) {searcher.sibling_seconds:.2f} s = "
              f"{100 * searcher.sibling_seconds / max(sum(ts), 1e-9):.2f} % of trial time; peak RSS {rss:.0f} MiB; "
              f"wall {time.time() - t_start:.0f} s", flush=True)
    print(f"exports in {export_dir}/; inspect with: optuna-dashboard {url}", flush=True)
    return RunResult(study, url, export_dir, base_map, done)


def run_config_from_overrides(overrides: list[str], config_dir: Path | None = None) -> RunConfig:
    """Compose ``conf/`` with command-line style overrides (for tests and notebooks)."""
    from hydra import compose, initialize_config_dir

    from search.profiles import CONF_DIR

    with initialize_config_dir(str((config_dir or CONF_DIR).resolve()), version_base=None):
        cfg = compose("config", overrides=overrides)
    return load_run_config(cfg)

