"""The split weights of evaluated design points (fine-tuned, or as split where the model needed none), under
``studies/<study>/models/``, keyed by the accuracy key. One file per model: ``torch.save`` of plain tensors and
lists (``torch.load(weights_only=True)``), fp32, written atomically. Exports keep the files of the feasible Pareto
front and of the unpruned anchors and remove the rest.

A pruned split model is rebuilt by splitting the baseline at the same j and resizing its convs and batch norms to
the saved shapes (:func:`load_pruned`); the kept channel indices (into each pruned conv's unpruned outputs) are
saved beside the weights.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from torch import nn

from models.split import SplitModel


def file_name(key: str) -> str:
    """The weights file of an accuracy key: a hash (keys hold ';', '/' and brackets)."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"


def is_anchor(key: str) -> bool:
    """Unpruned points (the anchors the search queues): no step 1/2 pruning in the key; and every coded image
    (j=0 with JPEG/WebP), the reference of every comparison (its file is a stub unless it was fine-tuned)."""
    return ";" not in key or key.endswith("crit=-") or key.startswith("j=0;img=")


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


def load_pruned(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Load a pruned model's state dict into an unpruned skeleton of the same graph: every Conv2d and BatchNorm2d
    takes the saved tensors' shapes (channel pruning changes nothing else), then ``load_state_dict`` (strict)
    checks every other tensor."""
    for name, m in model.named_modules():
        pre = f"{name}." if name else ""
        if isinstance(m, nn.Conv2d) and f"{pre}weight" in state_dict:
            w = state_dict[f"{pre}weight"]
            m.weight = nn.Parameter(torch.empty_like(w))
            m.out_channels, m.in_channels = int(w.shape[0]), int(w.shape[1]) * m.groups
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(w.shape[0]))
        elif isinstance(m, nn.BatchNorm2d) and f"{pre}weight" in state_dict:
            n = int(state_dict[f"{pre}weight"].shape[0])
            m.num_features = n
            m.weight, m.bias = nn.Parameter(torch.empty(n)), nn.Parameter(torch.empty(n))
            m.running_mean, m.running_var = torch.zeros(n), torch.ones(n)
    model.load_state_dict(state_dict)
    return model
