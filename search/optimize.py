"""``mode=optimize`` (the default): open or resume the study, measure the baseline, run the sampler (or the paper's
grid) with one worker or ``workers=N``, then finalize (``study.finalize``) and export.

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

import optuna

from objectives.design import DesignPoint
from objectives.objective import AccuracyResult, measure
from search import study as lifecycle
from search.deploy.store import WeightStore
from search.design_table import load_design_table
from search.drivers import drive, enqueue_anchors
from search.finalize import finalize_run
from search.objective import Objective, Shared
from search.outputs import export, running_keys
from search.record import StudyRecord, anchor_keys, count_primaries, front_keys
from search.retry import with_storage_retries
from search.workbench import Workbench
from search.workers import WORKER_ENV, AttrHeartbeat, Claims, launch


def unchanged(acc: AccuracyResult) -> bool:
    """The measured model is the baseline itself: nothing cut (j=0, the all-in-node point), nothing fine-tuned."""
    return acc.feature_values == 0 and acc.finetune_steps == 0 and not acc.kept_channels


def optimize(wb: Workbench, storage, url: str, sampler, overrides: list[str]) -> tuple[optuna.Study, float, int]:
    """Run (or resume) the study; returns (study, baseline mAP@0.5, model evaluations it holds)."""
    t_start, rc = time.time(), wb.rc
    if rc.table:  # every point answered from the design table: nothing is loaded or trained
        design = load_design_table(rc)
        table, model_name = design.cut, design.provenance["model"]
        study = lifecycle.open_study(rc, storage, sampler, model_name)
        StudyRecord(model=model_name, node_j=len(table) - 1, baseline_key=f"table:{design.provenance['digest']}",
                    baseline_mAP50=design.baseline_map50).save(study)
        base_map, how = design.baseline_map50, f"from the design table {rc.table}"
    else:
        table, model_name = wb.cut, wb.model_name
        study = lifecycle.open_study(rc, storage, sampler, model_name)
        StudyRecord(model=model_name, node_j=len(table) - 1).save(study)
        base_map = lifecycle.baseline_map(rc, study, f"{model_name}:{rc.eval.conf_threshold}:{rc.eval.nms_iou}",
                                          wb.baseline.model, wb.val, wb.device)
        how = wb.how
    print(f"model {model_name}: {len(table)} cut points; baseline mAP@0.5 = {base_map:.4f} ({how}); "
          f"constraint mAP@0.5 >= {base_map - rc.study.th:.4f}; storage {url}", flush=True)

    settings, pricing = wb.measuring(base_map)
    shared = None if rc.study.single_worker else Shared(
        Claims(rc.storage.claim_delay_s),
        AttrHeartbeat(rc.storage.heartbeat_interval, rc.storage.grace_period) if rc.storage.kind == "journal"
        and rc.storage.heartbeat_interval else None,
        rc.study.n_trials if rc.study.protocol == "search" else None)
    store = WeightStore(wb.export_dir / "models")

    def evaluate(point: DesignPoint) -> AccuracyResult:  # measure the point, keep its weights (studies/<study>/models/)
        m = measure(point, wb.baseline.model, wb.train, wb.val, settings, wb.device)
        acc = m.result
        store.save(acc.key, m.model, m.kept, as_baseline=unchanged(acc))
        # a point that is dominated or infeasible now stays so: only the front, the anchors and running trials' points
        # (this one among them) can ever be deployed, so the folder holds those alone as the study runs
        # (with other workers, files of the last grace period stay: a just-completed trial's siblings, which may be
        # on the front, are added by its worker right after it completes)
        running, _ = running_keys(wb, study)
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
        codes = launch(overrides, rc.workers, rc.storage.url_env if rc.storage.kind == "postgres" else None,
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
        finalize_run(wb, study, storage)
    if not worker:  # the workers of workers=N leave the exports to their parent
        export(wb, study, storage)
    if objective.trial_seconds:
        ts = sorted(objective.trial_seconds)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(f"this run: {len(ts)} trials, median {ts[len(ts) // 2]:.1f} s, total {sum(ts):.0f} s; sibling trials "
              f"(every radio x codec) {objective.sibling_seconds:.2f} s = "
              f"{100 * objective.sibling_seconds / max(sum(ts), 1e-9):.2f} % of trial time; peak RSS {rss:.0f} MiB; "
              f"wall {time.time() - t_start:.0f} s", flush=True)
    if not worker:
        print(f"exports in {wb.export_dir}/; inspect with: optuna-dashboard {url}", flush=True)
    return study, base_map, done
