"""The study's life cycle: create or resume it, guard its settings, measure the baseline once, recover the
trials of a run that died, queue the anchor points."""

from __future__ import annotations

import logging
import os
import time

import optuna
from hydra.utils import instantiate
from optuna.trial import TrialState

from objectives.accuracy import evaluate_map
from objectives.data.images import ImageSet
from search import settings
from search.config import RunConfig
from search.profiles import ConfigError
from search.record import DIRECTIONS, OBJECTIVES, StudyRecord, TrialRecord
from search.workers import AttrHeartbeat, maybe_alive, reap_stale, retry

log = logging.getLogger(__name__)


def make_sampler(rc: RunConfig, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler. Shared by several workers (``single_worker=false``), TPE also avoids the points
    other workers are evaluating (``constant_liar``, which changes nothing for one worker), and worker k > 0
    gets its own seed (``seed + 7919 k``) so that workers do not all propose the same first points."""
    spec = dict(rc.study.sampler)
    if not rc.study.single_worker:
        if str(spec.get("_target_", "")).endswith("TPESampler"):
            spec.setdefault("constant_liar", True)
        if worker and spec.get("seed") is not None:
            spec["seed"] = int(spec["seed"]) + 7919 * worker
    try:
        sampler = instantiate(spec)
    except Exception as e:  # noqa: BLE001 - hydra wraps import and argument errors alike
        raise ConfigError(f"study.sampler._target_={rc.study.sampler.get('_target_')!r}: cannot build it "
                          f"({' '.join(str(e).split())[:200]})") from None
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise ConfigError(f"study.sampler._target_={rc.study.sampler.get('_target_')!r} is not an Optuna sampler")
    return sampler


def load(rc: RunConfig, storage: optuna.storages.BaseStorage, url: str) -> optuna.Study:
    """An existing study (export and report modes)."""
    try:
        return optuna.load_study(study_name=rc.study.name, storage=storage)
    except KeyError:
        raise ConfigError(f"study.name={rc.study.name!r}: no such study in {url}") from None


def open_study(rc: RunConfig, storage: optuna.storages.BaseStorage, sampler: optuna.samplers.BaseSampler,
               model: str = "") -> optuna.Study:
    """Create or resume the study; warn when it was created with another space or measured with other settings.
    ``model`` names the baseline (its weights' digest), so other weights under the same path count as a change."""
    study = optuna.create_study(study_name=rc.study.name, storage=storage, sampler=sampler,
                                directions=list(DIRECTIONS), load_if_exists=True)
    study.set_metric_names(list(OBJECTIVES))
    old = StudyRecord.of(study)
    space = repr(rc.space)
    measured_with = settings.search_settings(rc, model)
    if old.space not in (None, space):
        log.warning("the space differs from the one this study was created with; old trials are kept")
    diff = settings.difference(old.accuracy_settings, rc, model)
    if diff:
        log.warning(f"data/model/train/eval settings differ from those this study's trials were measured with "
                    f"({diff}); old trials are kept and a repeated design point reuses their results - use a new "
                    f"study.name to measure again")
    StudyRecord(space=space, accuracy_settings=measured_with).save(study)
    return study


def worker_index(rc: RunConfig, study: optuna.Study) -> int:
    """0 for the first (or only) worker, which keeps the configured seed; k > 0 for a worker that joins a study
    whose trials are running (another live worker), or the index given to the processes of ``workers=N``."""
    from search.workers import WORKER_ENV

    if os.environ.get(WORKER_ENV) is not None:
        return int(os.environ[WORKER_ENV])
    if rc.study.single_worker or not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        return 0
    k = (StudyRecord.of(study).workers_joined or 0) + 1
    StudyRecord(workers_joined=k).save(study)
    return k


def baseline_map(rc: RunConfig, study: optuna.Study, key: str, model, val: ImageSet, device) -> float:
    """mAP@0.5 of the unsplit baseline, stored in the study so a resumed run reuses it."""
    old = StudyRecord.of(study)
    if old.baseline_key == key and old.baseline_mAP50 is not None:
        return float(old.baseline_mAP50)
    r = evaluate_map(model, val, model.cfg.head(), model.cfg.input_size, rc.eval.conf_threshold, rc.eval.nms_iou,
                     device)
    StudyRecord(baseline_key=key, baseline_mAP50=r.map50, baseline_mAP50_95=r.map50_95).save(study)
    return r.map50


def recover(study: optuna.Study, single_worker: bool, liveness: AttrHeartbeat | None = None) -> int:
    """Fail the trials a dead run left RUNNING and queue their points again. Returns how many.

    With ``single_worker`` this process owns the study, so every RUNNING trial is an orphan: it is failed now
    (``study.tell``) and re-queued by the same callback the heartbeat path uses. Otherwise only trials whose
    heartbeat is stale are failed (Optuna's heartbeats, or ``liveness`` for a storage without them), so a live
    worker's trial is never touched.
    """
    if not single_worker:
        return reap_stale(study, liveness)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        retry(study, t)
    return len(running)


def complete_siblings(study: optuna.Study, objective, min_age_s: float) -> int:
    """Add the missing siblings of complete primaries (a run killed between a trial and its siblings). With other
    workers, a recent trial (completed less than ``min_age_s`` ago) is left to its own worker unless that worker
    is known to be gone (a process of this host that no longer exists)."""
    now, added = time.time(), 0
    objective.refresh(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        recent = min_age_s and t.datetime_complete and now - t.datetime_complete.timestamp() < min_age_s
        if recent and maybe_alive(TrialRecord.from_trial(t).worker):
            continue
        added += objective.add_siblings(study, t, refresh=False)
    return added


def enqueue_once(study: optuna.Study, params: list[dict]) -> None:
    """Queue the anchor points the first time a study runs (a resume does not queue them again)."""
    if StudyRecord.of(study).baselines_enqueued:
        return
    for p in params:
        study.enqueue_trial(p, skip_if_exists=True)
    StudyRecord(baselines_enqueued=True).save(study)

