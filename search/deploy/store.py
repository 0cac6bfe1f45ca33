"""The split weights of evaluated design points (fine-tuned, or as split where the model needed none), under
``studies/<study>/models/``, keyed by the accuracy key. One file per model: ``torch.save`` of plain tensors and
lists (``torch.load(weights_only=True)``), fp32, written atomically. Exports keep the files of the feasible Pareto
front and of the unpruned anchors and remove the rest.

A pruned split model is rebuilt by splitting the baseline at the same j and resizing its convs and batch norms to
the saved shapes (:func:`models.prune.load_pruned`); the kept channel indices (into each pruned conv's unpruned
outputs) are saved beside the weights.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch

from models.split import SplitModel


def file_name(key: str) -> str:
    """The weights file of an accuracy key: a hash (keys hold ';', '/' and brackets)."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"


class WeightStore:
    """``studies/<study>/models/``: save, find, prune to a set of keys, measure."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / file_name(key)

    def save(self, key: str, model: SplitModel, kept: dict[int, list[int]], as_baseline: bool = False) -> Path:
        """Keep ``model``'s weights; ``as_baseline``: the model is the baseline's, unchanged (nothing cut, pruned or
        fine-tuned: j=0, a coded image kept as it is, the all-in-node point), so only a stub naming it is written
        (:func:`search.deploy.bundle.rebuild` splits the baseline again)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        tmp = path.with_suffix(f".tmp{id(model)}")
        blob = {"key": key, "j": model.j, "kept": {str(c): [int(i) for i in idx] for c, idx in kept.items()}}
        if as_baseline:
            blob["baseline"] = True
        else:
            blob["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            if model.bottleneck is not None:  # what rebuilds the learned bottleneck before its state dict loads
                blob["bottleneck"] = model.bottleneck.spec()
            entropy = getattr(model.interface, "entropy", {})
            if entropy:  # the fitted entropy models (models.entropy), beside the state dict
                blob["entropy"] = {name: m.to_json() for name, m in entropy.items()}
        torch.save(blob, tmp)
        tmp.replace(path)
        return path

    def load(self, key: str) -> dict:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no kept weights for {key}")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("key") != key:
            raise ValueError(f"{path} holds {blob.get('key')!r}, not {key!r}")
        return blob

    def retain(self, keys: set[str], min_age_s: float = 0.0) -> int:
        """Remove every weights file whose key is not in ``keys`` (and stale temporaries) and that is older than
        ``min_age_s`` (another worker's model may be on its way to the front); returns how many."""
        if not self.folder.is_dir():
            return 0
        keep = {file_name(k) for k in keys}
        gone, now = 0, time.time()
        for f in self.folder.iterdir():
            stale = now - f.stat().st_mtime >= min_age_s
            if f.name not in keep and (f.suffix == ".pt" or ".tmp" in f.suffix) and stale:
                f.unlink(missing_ok=True)
                gone += 1
        return gone

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.glob("*.pt")) if self.folder.is_dir() else 0
