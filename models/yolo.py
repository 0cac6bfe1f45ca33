"""YOLO head: box ops, decoding, non-maximum suppression and the training loss, in plain torch.

There is no CPU torchvision on the project's machines, so NMS and IoU are written here and tested against a
brute-force reference. Boxes are ``xyxy`` in pixels unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------- box ops


def xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre/size -> corners."""
    xy, wh = b[..., :2], b[..., 2:4] / 2
    return torch.cat([xy - wh, xy + wh], -1)


def box_area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M). A pair whose union is empty has IoU 0."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def bbox_giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise IoU and generalized IoU of (..., 4) xyxy boxes."""
    lt = torch.max(a[..., :2], b[..., :2])
    rb = torch.min(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - inter + eps
    iou = inter / union
    hull = (torch.max(a[..., 2:], b[..., 2:]) - torch.min(a[..., :2], b[..., :2])).clamp(min=0).prod(-1) + eps
    return iou, iou - (hull - union) / hull


# ---------------------------------------------------------------------------------------------- NMS


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int | None = None) -> torch.Tensor:
    """Greedy NMS with torchvision's semantics.

    Boxes are visited by descending score (ties keep input order); a box is dropped when its IoU with an
    already kept box is strictly greater than ``iou_threshold``.

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        iou_threshold: IoU above which the lower-scored box is suppressed.
        max_keep: stop once this many boxes are kept (the same first ``max_keep`` as without it).

    Returns:
        int64 indices of kept boxes, by descending score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    over = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    n = len(order)
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == max_keep:
            break
        suppressed |= over[i]
    return order[torch.as_tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float,
                max_keep: int | None = None) -> torch.Tensor:
    """Per-class NMS (boxes of different classes never suppress each other), by coordinate offsets."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offset = classes.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold, max_keep)


# ---------------------------------------------------------------------------------------------- head


BOX_STYLES = ("v5", "darknet")
# YOLOv5's objectness balance per head stride (utils/loss.py: [4.0, 1.0, 0.4] for P3..P5); 1.0 elsewhere.
_OBJ_BALANCE = {8: 4.0, 16: 1.0, 32: 0.4}


@dataclass(frozen=True)
class YOLOHeadConfig:
    """Decoding and loss settings of the detection heads, in the order the model returns them.

    Attributes:
        num_classes: classes predicted by each anchor.
        anchors: every (w, h) anchor in pixels at the model input; ``masks[i]`` picks head i's.
        masks: anchor indices per head (darknet's ``mask=``); the default is Tiny-YOLOv3's.
        strides: input pixels per grid cell, per head.
        scale_xy: grid-sensitive centre scale, one for all heads or one per head; the centre is
            ``(sigmoid*s - (s-1)/2 + cell) * stride``, so with 2 a centre can reach the neighbour cells that
            the assignment makes positive.
        box: size parametrization. ``v5`` (the recipe this project trains with): ``(2 sigmoid(t))^2 * anchor``;
            ``darknet``: ``exp(t) * anchor``, which darknet-trained weights expect.
        anchor_t: a target is positive for every anchor whose w/h ratio to it is below this (YOLOv5).
        neighbours: also make the two nearest neighbour cells positive (only where ``scale_xy >= 2``).
        box_w, obj_w, cls_w: loss weights.
        obj_balance: objectness weight per head; None = YOLOv5's by stride (0.4 at 32, 1.0 at 16, 4.0 at 8).
    """

    num_classes: int
    anchors: tuple[tuple[float, float], ...]
    masks: tuple[tuple[int, ...], ...] = ((3, 4, 5), (0, 1, 2))
    strides: tuple[int, ...] = (32, 16)
    scale_xy: float | tuple[float, ...] = 2.0
    box: str = "v5"
    anchor_t: float = 4.0
    neighbours: bool = True
    box_w: float = 0.05
    obj_w: float = 1.0
    cls_w: float = 0.5
    obj_balance: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.box not in BOX_STYLES:
            raise ValueError(f"box={self.box!r} not in {list(BOX_STYLES)}")
        if len(self.masks) != len(self.strides) or any(m >= len(self.anchors) for mk in self.masks for m in mk):
            raise ValueError(f"masks={self.masks} / strides={self.strides} do not fit {len(self.anchors)} anchors")

    def scale(self, i: int) -> float:
        return float(self.scale_xy if isinstance(self.scale_xy, (int, float)) else self.scale_xy[i])

    def balance(self, i: int) -> float:
        return float(self.obj_balance[i]) if self.obj_balance is not None else _OBJ_BALANCE.get(self.strides[i], 1.0)

    def head_anchors(self, i: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(A, 2) anchors of head i in pixels."""
        return torch.as_tensor(self.anchors, dtype=torch.float32, device=device)[list(self.masks[i])]

    def wh(self, t: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Box sizes from the raw size outputs ``t`` (..., 2) and matching anchors."""
        if self.box == "darknet":
            return t.clamp(max=10.0).exp() * anchors  # clamp: exp overflows in fp32 above ~88; e^10 is far off-image
        return (t.sigmoid() * 2) ** 2 * anchors


def decode(heads: list[torch.Tensor], cfg: YOLOHeadConfig) -> torch.Tensor:
    """Raw head outputs -> (B, N, 5 + nc): xyxy in pixels, objectness and class probabilities."""
    out = []
    for i, p in enumerate(heads):
        b, _, h, w = p.shape
        a, stride = len(cfg.masks[i]), cfg.strides[i]
        p = p.float().view(b, a, 5 + cfg.num_classes, h, w).permute(0, 1, 3, 4, 2)
        gy, gx = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device),
                                indexing="ij")
        grid = torch.stack([gx, gy], -1).float()
        s = cfg.scale(i)
        xy = (p[..., :2].sigmoid() * s - (s - 1) / 2 + grid) * stride
        wh = cfg.wh(p[..., 2:4], cfg.head_anchors(i, p.device).view(1, a, 1, 1, 2))
        box = xywh_to_xyxy(torch.cat([xy, wh], -1))
        out.append(torch.cat([box, p[..., 4:].sigmoid()], -1).reshape(b, -1, 5 + cfg.num_classes))
    return torch.cat(out, 1)


def postprocess(
    decoded: torch.Tensor,
    conf_threshold: float = 0.001,
    iou_threshold: float = 0.5,
    max_det: int = 300,
    max_candidates: int = 3000,
) -> list[torch.Tensor]:
    """Confidence filter + per-class NMS.

    Args:
        decoded: (B, N, 5 + nc) from :func:`decode`.
        conf_threshold: keep boxes with objectness x class probability above this.
        iou_threshold: NMS IoU.
        max_det: detections kept per image.
        max_candidates: highest-scoring boxes that enter NMS.

    Returns:
        One (n, 6) tensor per image: x1, y1, x2, y2, score, class.
    """
    results = []
    for d in decoded:
        cls_conf, cls = (d[:, 5:] * d[:, 4:5]).max(1)
        keep = cls_conf > conf_threshold
        boxes, scores, cls = d[keep, :4], cls_conf[keep], cls[keep]
        if scores.numel() > max_candidates:
            top = scores.topk(max_candidates).indices
            boxes, scores, cls = boxes[top], scores[top], cls[top]
        k = batched_nms(boxes, scores, cls, iou_threshold, max_det)
        results.append(torch.cat([boxes[k], scores[k, None], cls[k, None].float()], 1))
    return results


class YOLOLoss:
    """Objectness + class + GIoU box loss with per-head anchor assignment.

    Targets are (T, 6): image index, class, cx, cy, w, h with coordinates normalized to [0, 1].
    """

    def __init__(self, cfg: YOLOHeadConfig, input_size: int) -> None:
        self.cfg = cfg
        self.input_size = input_size

    def __call__(self, heads: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        dev = heads[0].device
        lbox = torch.zeros((), device=dev)
        lobj = torch.zeros((), device=dev)
        lcls = torch.zeros((), device=dev)
        targets = targets.to(dev).float()
        for i, p in enumerate(heads):
            b, _, h, w = p.shape
            stride, anchors = cfg.strides[i], cfg.head_anchors(i, dev)
            p = p.float().view(b, len(anchors), 5 + cfg.num_classes, h, w).permute(0, 1, 3, 4, 2)
            tobj = torch.zeros(p.shape[:4], device=dev)
            img, a, gj, gi, tbox, tcls = self._assign(targets, anchors, stride, h, w, cfg.scale(i))
            if img.numel():
                ps = p[img, a, gj, gi]
                s = cfg.scale(i)
                pxy = ps[:, :2].sigmoid() * s - (s - 1) / 2
                pwh = cfg.wh(ps[:, 2:4], anchors[a]) / stride
                pbox = xywh_to_xyxy(torch.cat([pxy, pwh], 1))
                iou, giou = bbox_giou(pbox, xywh_to_xyxy(tbox))
                lbox = lbox + (1.0 - giou).mean()
                # objectness target = IoU of the prediction (detached), so confidence ranks box quality
                tobj[img, a, gj, gi] = iou.detach().clamp(0).to(tobj.dtype)
                if cfg.num_classes > 1:
                    t = torch.zeros_like(ps[:, 5:])
                    t[torch.arange(len(tcls), device=dev), tcls] = 1.0
                    lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], t)
            lobj = lobj + cfg.balance(i) * F.binary_cross_entropy_with_logits(p[..., 4], tobj)
        loss = cfg.box_w * lbox + cfg.obj_w * lobj + cfg.cls_w * lcls
        return loss, {"box": float(lbox.detach()), "obj": float(lobj.detach()), "cls": float(lcls.detach())}

    def _assign(self, targets: torch.Tensor, anchors: torch.Tensor, stride: int, h: int, w: int, scale: float):
        """Positive (image, anchor, row, col) for one head, with the target box in grid units relative to
        the cell (cx, cy offsets and w, h)."""
        cfg = self.cfg
        dev = targets.device
        if targets.numel() == 0:
            z = torch.zeros(0, dtype=torch.long, device=dev)
            return z, z, z, z, torch.zeros(0, 4, device=dev), z
        gain = torch.tensor([w, h, w, h], device=dev, dtype=torch.float32)
        t = targets[:, 2:6] * gain  # grid units
        anc = anchors / stride  # (A, 2) grid units
        ratio = t[None, :, 2:4] / anc[:, None]  # (A, T, 2)
        ok = torch.max(ratio, 1 / ratio).max(2).values < cfg.anchor_t  # (A, T)
        ai, ti = ok.nonzero(as_tuple=True)
        gxy = t[ti, :2]
        offsets = [torch.zeros(2, device=dev)]
        sel = [torch.ones_like(ti, dtype=torch.bool)]
        if cfg.neighbours and scale >= 2:  # a centre can only reach a neighbour cell with scale >= 2
            frac = gxy % 1.0
            inv = torch.stack([torch.full_like(gxy[:, 0], w), torch.full_like(gxy[:, 1], h)], 1) - gxy
            left, up = ((frac < 0.5) & (gxy > 1.0)).T
            right, down = (((inv % 1.0) < 0.5) & (inv > 1.0)).T
            for off, m in (((1, 0), left), ((0, 1), up), ((-1, 0), right), ((0, -1), down)):
                offsets.append(torch.tensor(off, device=dev, dtype=torch.float32) * 0.5)
                sel.append(m)
        img_l, a_l, gj_l, gi_l, box_l, cls_l = [], [], [], [], [], []
        for off, m in zip(offsets, sel, strict=True):
            g = gxy[m]
            cell = (g - off).long()
            cell[:, 0].clamp_(0, w - 1)
            cell[:, 1].clamp_(0, h - 1)
            img_l.append(targets[ti[m], 0].long())
            a_l.append(ai[m])
            gi_l.append(cell[:, 0])
            gj_l.append(cell[:, 1])
            box_l.append(torch.cat([g - cell, t[ti[m], 2:4]], 1))
            cls_l.append(targets[ti[m], 1].long())
        return (torch.cat(img_l), torch.cat(a_l), torch.cat(gj_l), torch.cat(gi_l), torch.cat(box_l),
                torch.cat(cls_l))
