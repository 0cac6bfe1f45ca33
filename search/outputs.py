"""What a run leaves in ``studies/<study>/`` besides the database: the exports, the report, the summary, and the
kept weights cut down to what can still be deployed (``mode=export``, ``mode=report`` and the end of every run)."""

from __future__ import annotations

from pathlib import Path

import optuna

from search.config import RunConfig
from search.deploy.store import WeightStore
from search.export import export_all, print_summary
from search.finalize import load_final
from search.record import anchor_keys, front_keys
from search.report import write_report
from search.space import param_columns, point_of
from search.view import StudyView, study_view
from search.workbench import Workbench


def view(rc: RunConfig, study: optuna.Study, storage) -> StudyView:
    """The study as the exports read it: feasibility at ``study.th``, numbers at ``export.fidelity``."""
    return study_view(study, load_final(storage, study.study_name), rc.study.th, rc.export.fidelity)


def columns(wb: Workbench) -> tuple[str, ...]:
    return param_columns(wb.layout, wb.rc.space.shared_layer_keep, bool(wb.rc.space.bottleneck.latent))


def report(wb: Workbench, study: optuna.Study, storage) -> Path:
    """``mode=report``: ``report.html`` alone."""
    return write_report(view(wb.rc, study, storage), wb.export_dir, columns(wb))


def export(wb: Workbench, study: optuna.Study, storage) -> None:
    """The exports (and the report, except for ``mode=export``), the summary, and the kept weights cut down to the
    front, the anchors and the models running trials may still put on the front."""
    rc, cols = wb.rc, columns(wb)
    v = view(rc, study, storage)
    export_all(v, wb.export_dir, cols)
    if rc.mode != "export":
        write_report(v, wb.export_dir, cols)
    print_summary(v, cols)
    store = WeightStore(wb.export_dir / "models")
    if store.folder.is_dir():
        running, unsure = running_keys(wb, study)  # another worker's model may be on its way to the front
        store.retain(front_keys(study) | anchor_keys(study) | running,
                     min_age_s=rc.storage.grace_period if unsure or running else 0.0)
        print(f"kept weights: {len(list(store.folder.glob('*.pt')))} models, {store.size_bytes() / 2**20:.1f} MiB in "
              f"{store.folder}/", flush=True)


def running_keys(wb: Workbench, study: optuna.Study) -> tuple[set[str], bool]:
    """Accuracy keys of the study's RUNNING trials, and whether some running trial's point cannot be read yet."""
    keys, unsure = set(), False
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        try:
            keys.add(point_of(t.params, wb.rc.space, wb.layout).accuracy_key(wb.layout))
        except (ValueError, KeyError):
            unsure = True
    return keys, unsure
