"""``mode=deploy``: the bundle of ``deploy.trial`` (or the lowest-energy feasible Pareto point) at the export's
fidelity - a finalized point ships its final weights and numbers (:mod:`search.deploy.bundle` writes it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import torch

from models.codec import get_codec
from search.deploy.store import WeightStore
from search.outputs import view
from search.profiles import ConfigError, load_profile
from search.record import TrialRecord
from search.space import point_of
from search.view import pareto_front
from search.workbench import Workbench, image_encoders


def chosen(wb: Workbench, study: optuna.Study, storage) -> optuna.trial.FrozenTrial:
    """``deploy.trial``, or the lowest-energy feasible Pareto point at the export's fidelity."""
    rc = wb.rc
    v = view(rc, study, storage)
    if rc.deploy.trial is None:
        front = sorted(pareto_front(v.pool), key=lambda t: t.values[0])
        if not front:
            raise ConfigError(f"deploy: study {rc.study.name} has no feasible Pareto point at th={rc.study.th:g}; "
                              f"pick one with deploy.trial=N")
        return front[0]
    trial = {t.number: t for t in v.pool}.get(rc.deploy.trial)
    if trial is None:
        raise ConfigError(f"deploy.trial={rc.deploy.trial}: not a complete trial of study {rc.study.name}")
    return trial


def deploy(wb: Workbench, study: optuna.Study, storage) -> Path:
    """Write ``studies/<study>/deploy/<trial>/`` for the chosen trial; returns the folder."""
    from search.deploy.bundle import DeployError, rebuild, write_bundle

    rc = wb.rc
    trial = chosen(wb, study, storage)
    rec = TrialRecord.from_trial(trial)
    final = rec.fidelity == "final"
    store = WeightStore(wb.export_dir / ("final-models" if final else "models"))
    if rec.accuracy is None or not store.path(rec.accuracy.key).is_file():
        key = rec.accuracy.key if rec.accuracy else "?"
        raise ConfigError(f"deploy.trial={trial.number}: no kept weights for {key} in {store.folder}/ (kept: the "
                          f"feasible Pareto front and the unpruned anchors)")
    blob = store.load(rec.accuracy.key)
    acc = rec.accuracy
    try:
        point = point_of(trial.params, rc.space, wb.layout)
    except ValueError as e:
        raise ConfigError(f"deploy.trial={trial.number}: its parameters are outside this run's space ({e}); run "
                          f"mode=deploy with the study's space") from None
    sm = rebuild(wb.baseline.model, blob, point.bits, rc.model.recon, acc.image_codec or None, acc.quality)
    codec = load_profile("codec", rec.codec)
    if get_codec(codec.codec).entropy and sm.cut_point.is_split and codec.codec not in sm.interface.entropy:
        # weights kept before the entropy models were stored with them: fit them as the search did (deterministic)
        calib = torch.from_numpy(wb.train.images[:rc.eval.calib_images]).permute(0, 3, 1, 2).float() / 255
        sm.fit_entropy(calib, wb.device, (codec.codec,))
        sm.cpu()
    info = {"study": rc.study.name, "trial": trial.number, "key": acc.key, "model": wb.model_name,
            "fidelity": "final" if final else "search", "final_trial": rec.final_trial,
            "finetune_steps": acc.finetune_steps,
            "mAP50": rec.mAP50, "mAP50_95": rec.mAP50_95, "payload_bytes": rec.payload_bytes,
            "payload_mean_bytes": acc.payload_mean_bytes.get(codec.codec),
            "payload_images": rc.eval.payload_images,
            "codec": {"name": rec.codec, "algorithm": codec.codec}, "radio": rec.radio,
            "platform": {"node": rc.platform.node.name, "edge": rc.platform.edge.name},
            "image_encoder": dataclasses.asdict(image_encoders(rc.platform.node)[acc.image_codec])
            if acc.image_codec else None,
            "node_energy_mJ": trial.values[0], "latency_ms": trial.values[1],
            "class_names": list(wb.train.class_names), "data": dataclasses.asdict(rc.data),
            "eval": {"conf_threshold": rc.eval.conf_threshold, "nms_iou": rc.eval.nms_iou,
                     "payload_conf_threshold": rc.eval.payload_conf_threshold, "max_det": 100},
            "max_frame_bytes": rc.deploy.max_frame_bytes, "idle_timeout_s": rc.deploy.idle_timeout_s,
            "max_clients": rc.deploy.max_clients}
    images = torch.from_numpy(wb.val.images[:8]).permute(0, 3, 1, 2).float() / 255
    try:
        out = write_bundle(wb.export_dir / "deploy" / str(trial.number), sm, blob, info, images)
    except DeployError as e:
        raise ConfigError(str(e)) from None
    print(f"deploy: trial {trial.number} ({acc.key}, {rec.radio}/{rec.codec}, mAP@0.5 {rec.mAP50:.4f} "
          f"{'final' if final else 'search-time'}, {rec.payload_bytes} B) -> {out}/", flush=True)
    return out
