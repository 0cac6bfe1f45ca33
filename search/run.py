"""``run(cfg)``: the orchestration of one command, in running order - validate the configuration, open the
storage, then hand over to the mode's own module. Where a new mode goes: a module of its own (``search/<mode>.py``
or a package like ``search/deploy/``) with one entry function taking the :class:`~search.workbench.Workbench`; this
file gains one branch and nothing else.

- ``optimize`` (default): :func:`search.optimize.optimize` - the study, then finalize (``study.finalize``) and exports.
- ``export`` / ``report``: :mod:`search.outputs` from the stored study, no training.
- ``finalize``: :func:`search.finalize.finalize_run`, then the exports.
- ``deploy``: :func:`search.deploy.mode.deploy` (needs the ``deploy`` extra).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from omegaconf import DictConfig

from search import outputs
from search import study as lifecycle
from search.config import RunConfig, load_run_config
from search.extras import require
from search.profiles import ConfigError
from search.record import StudyRecord, count_primaries
from search.storage import make_storage
from search.workbench import Workbench


@dataclass
class RunResult:
    study: optuna.Study
    storage_url: str
    export_dir: Path
    baseline_map50: float | None
    primaries: int


def run(cfg: DictConfig | RunConfig, overrides: list[str] | None = None) -> RunResult:
    """Run (or resume) the study described by ``cfg`` and write its exports. ``overrides``: the command line's,
    for the worker processes of ``workers=N``."""
    rc = cfg if isinstance(cfg, RunConfig) else load_run_config(cfg)
    if rc.workers > 1 and rc.study.single_worker:
        raise ConfigError(f"study.single_worker=true contradicts workers={rc.workers}: set study.single_worker=false")
    if rc.mode == "deploy":
        require("deploy")  # before anything is opened: one line naming the pip install
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial (and failure) comes from here instead
    # the sampler and the device are checked before anything is created; the other modes train nothing (deploy
    # rebuilds the model on the CPU, like a node)
    trains = rc.mode in ("optimize", "finalize")
    sampler = lifecycle.make_sampler(rc) if trains else None
    wb = Workbench(rc, device=None if trains else "cpu")
    storage, url = make_storage(rc.storage, rc.study.name, wb.studies)

    if rc.mode == "optimize":
        from search.optimize import optimize

        study, base_map, done = optimize(wb, storage, url, sampler, overrides or [])
        return RunResult(study, url, wb.export_dir, base_map, done)
    study = lifecycle.load(rc, storage, url)
    out = wb.export_dir
    if rc.mode == "deploy":
        from search.deploy.mode import deploy

        out = deploy(wb, study, storage)
    elif rc.mode == "report":
        print(f"report: {outputs.report(wb, study, storage)}", flush=True)
    elif rc.mode == "finalize":
        from search.finalize import finalize_run

        finalize_run(wb, study, storage)
        outputs.export(wb, study, storage)
    else:  # export
        outputs.export(wb, study, storage)
    return RunResult(study, url, out, StudyRecord.of(study).baseline_mAP50, count_primaries(study))
