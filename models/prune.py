"""Two-step structured pruning of the node part over torch-pruning's DepGraph (paper Eq. 7-10).

Step 1 keeps k of the C channels of the cut feature map (the conv before the cut); DepGraph removes the
matching batch-norm channels and the matching input channels of every layer that reads them (Tiny-YOLOv3's
j=5: also the route into conv 21). Step 2 keeps a ratio of the output channels of each other node conv. Only
node convs are ever pruning roots, so the detection heads and every edge layer's outputs are untouched.

A conv whose output a grouped route splits (yolov4-tiny's ``groups=2, group_id=1``) loses the same number of
channels in every slice - the lowest-ranked within each - so the split still takes the channels it took before;
its kept count is a multiple of the groups (:meth:`models.split.CutTable.kept`). Convs the cut-point table
refuses (``CutTable.refused``: shortcuts, splits of several layers) are never pruned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch_pruning as tp
from torch import nn

from models.split import SplitModel, keep_count

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


def prune(
    split_model: SplitModel,
    keep: Mapping[int, int | float],
    criterion: str = "l1",
    example_input: torch.Tensor | None = None,
    loss_fn: Callable[[nn.Module], torch.Tensor] | None = None,
    kept: dict[int, list[int]] | None = None,
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
        kept: if given, filled with darknet conv index -> the indices (into its unpruned output channels, ascending)
            of the channels each pruned conv keeps.

    Returns:
        darknet conv index -> (channels before, channels after) for every pruned conv.
    """
    importance = make_importance(criterion)
    allowed = split_model.node_convs()
    for i in keep:
        if i not in allowed:
            why = split_model.table.refused.get(i)
            raise ValueError(f"prune layer {i} is not a prunable node conv at j={split_model.j}"
                             + (f" ({why})" if why else f"; allowed: {allowed}"))
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
            g = split_model.table.conv_groups.get(i, 1)
            k = keep_count(c, keep[i], g)
            if k == c:
                continue
            group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(c)))
            scores = importance(group)
            if scores is None:  # torch-pruning returns None when no layer in the group has the statistic
                raise ValueError(f"criterion={criterion!r} gives no importance for layer {i}")
            n = c // g  # channels per slice of the grouped route (g = 1: one slice, the whole output)
            drop = [s * n + d for s in range(g)
                    for d in torch.argsort(scores[s * n:(s + 1) * n], stable=True)[: (c - k) // g].tolist()]
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=sorted(drop)).prune()
            done[i] = (c, conv.out_channels)
            if kept is not None:
                gone = set(drop)
                kept[i] = [k for k in range(c) if k not in gone]
        if criterion == "taylor":
            split_model.zero_grad(set_to_none=True)
    finally:
        if enabled is not None:
            iface.enabled = enabled
        split_model.train(was_training)
    return done


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
