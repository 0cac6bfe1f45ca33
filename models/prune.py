"""Two-step structured pruning of the node part over torch-pruning's DepGraph (paper Eq. 7-10).

Step 1 keeps k of the C channels of the cut feature map (the conv before the cut); DepGraph removes the
matching batch-norm channels and the matching input channels of the edge's first conv (at j=5 also of the
route into conv 21). Step 2 keeps a ratio of the output channels of each node conv before the cut. Only node
convs are ever pruning roots, so the detection heads and every edge layer past the first are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch_pruning as tp
from torch import nn

from models.split import SplitModel

CRITERIA: tuple[str, ...] = ("l1", "l2", "bn_scale", "taylor")


def make_importance(criterion: str) -> tp.importance.Importance:
    """torch-pruning importance for a criterion name (one of :data:`CRITERIA`)."""
    if criterion == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if criterion == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "bn_scale":
        return tp.importance.BNScaleImportance()
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise ValueError(f"criterion={criterion!r} not in {list(CRITERIA)}")


def keep_count(channels: int, keep: int | float) -> int:
    """Channels kept: an int is a count (1..C), a float a ratio in (0, 1]; at least one survives."""
    if isinstance(keep, bool):
        raise ValueError(f"keep={keep!r} must be an int count or a float ratio")
    if isinstance(keep, int):
        if not 1 <= keep <= channels:
            raise ValueError(f"keep={keep} channels not in 1..{channels}")
        return keep
    if not 0 < keep <= 1:
        raise ValueError(f"keep ratio={keep} not in (0, 1]")
    return max(1, min(channels, int(round(channels * keep))))


def prune(
    split_model: SplitModel,
    keep: Mapping[int, int | float],
    criterion: str = "l1",
    example_input: torch.Tensor | None = None,
    loss_fn: Callable[[nn.Module], torch.Tensor] | None = None,
) -> dict[int, tuple[int, int]]:
    """Prune node convs of ``split_model`` in place.

    Args:
        split_model: from :func:`models.split.split`.
        keep: darknet conv index -> channels kept (int) or keep ratio (float). The cut conv (see
            ``split_model.cut_point.conv``) is step 1; other node convs are step 2. Convs not named are kept
            whole. Naming an edge conv or a head is an error.
        criterion: importance criterion, one of :data:`CRITERIA`.
        example_input: (1, 3, S, S) tensor used to trace the graph (zeros of the model's input size if
            None).
        loss_fn: required for ``taylor``: called once on the model, its loss is back-propagated to get the
            gradients the criterion reads.

    Returns:
        darknet conv index -> (channels before, channels after) for every pruned conv.
    """
    importance = make_importance(criterion)
    allowed = split_model.node_convs()
    for i in keep:
        if i not in allowed:
            raise ValueError(f"prune layer {i} is not a prunable node conv at j={split_model.j}; "
                             f"allowed: {allowed}")
    if criterion == "taylor" and loss_fn is None:
        raise ValueError("criterion='taylor' needs loss_fn to compute gradients")
    if not keep:
        return {}
    size = split_model.cfg.input_size
    if example_input is None:
        example_input = torch.zeros(1, 3, size, size)
    device = next(split_model.parameters()).device
    example_input = example_input.to(device)

    was_training = split_model.training
    iface = split_model.interface
    enabled = getattr(iface, "enabled", None)
    if enabled is not None:
        iface.enabled = False  # trace the pure graph; the interface is element-wise and channel-agnostic
    try:
        split_model.eval()
        graph = tp.DependencyGraph().build_dependency(split_model, example_inputs=example_input,
                                                      verbose=False)
        if criterion == "taylor":
            split_model.zero_grad()
            loss_fn(split_model).backward()
        # step 1 (the cut conv) first, then step 2 in darknet order
        cut_conv = split_model.cut_point.conv
        order = sorted(keep, key=lambda i: (i != cut_conv, i))
        done: dict[int, tuple[int, int]] = {}
        for i in order:
            conv = split_model.layer(i).conv
            c = conv.out_channels
            k = keep_count(c, keep[i])
            if k == c:
                continue
            group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(c)))
            scores = importance(group)
            if scores is None:  # torch-pruning returns None when no layer in the group has the statistic
                raise ValueError(f"criterion={criterion!r} gives no importance for layer {i}")
            drop = torch.argsort(scores, stable=True)[: c - k].tolist()
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=sorted(drop)).prune()
            done[i] = (c, conv.out_channels)
        if criterion == "taylor":
            split_model.zero_grad(set_to_none=True)
    finally:
        if enabled is not None:
            iface.enabled = enabled
        split_model.train(was_training)
    return done
