from __future__ import annotations

import itertools

import pytest
import torch

from models import TinyYOLOv3, TinyYOLOv3Config, YOLOHeadConfig, YOLOLoss, batched_nms, box_iou, nms
from models.yolo import decode, postprocess, xywh_to_xyxy


def iou_ref(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms_ref(boxes, scores, thr):
    """Brute force: visit by descending score (stable), keep a box unless a kept box overlaps > thr."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if all(iou_ref(boxes[i], boxes[k]) <= thr for k in kept):
            kept.append(i)
    return kept


def random_boxes(n, gen, spread=50.0):
    xy = torch.rand(n, 2, generator=gen) * spread
    wh = torch.rand(n, 2, generator=gen) * 20 + 1
    return torch.cat([xy, xy + wh], 1)


def test_box_iou_matches_reference():
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(20, g), random_boxes(15, g)
    a[0] = torch.tensor([5.0, 5.0, 5.0, 9.0])  # zero-area box
    got = box_iou(a, b)
    for i, j in itertools.product(range(20), range(15)):
        assert got[i, j].item() == pytest.approx(iou_ref(a[i].tolist(), b[j].tolist()), abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_matches_brute_force(seed, thr):
    g = torch.Generator().manual_seed(seed)
    n = 200
    boxes = random_boxes(n, g)
    scores = torch.rand(n, generator=g)
    scores[::7] = 0.5  # many exact ties
    got = nms(boxes, scores, thr).tolist()
    assert got == nms_ref(boxes.tolist(), scores.tolist(), thr)


@pytest.mark.parametrize("max_keep", [1, 5, 17, 1000])
def test_nms_max_keep_is_the_first_of_the_full_result(max_keep):
    g = torch.Generator().manual_seed(11)
    boxes, scores = random_boxes(300, g), torch.rand(300, generator=g)
    full = nms(boxes, scores, 0.5).tolist()
    assert len(full) > 17
    assert nms(boxes, scores, 0.5, max_keep).tolist() == full[:max_keep]


def test_nms_ties_keep_input_order_and_threshold_is_strict():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 5.0]])
    scores = torch.tensor([0.9, 0.9, 0.9])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]  # IoU(0, 2) = 0.5 exactly: not suppressed
    assert nms(boxes, scores, 0.49).tolist() == [0]


def test_nms_empty_and_single():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert nms(torch.tensor([[0, 0, 1, 1.0]]), torch.tensor([0.1]), 0.5).tolist() == [0]
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), 0.5).shape == (0,)


def test_batched_nms_classes_do_not_suppress_each_other():
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(100, g)
    scores = torch.rand(100, generator=g)
    classes = torch.randint(0, 3, (100,), generator=g)
    got = set(batched_nms(boxes, scores, classes, 0.4).tolist())
    want = set()
    for c in range(3):
        idx = (classes == c).nonzero().flatten()
        want |= {int(idx[k]) for k in nms_ref(boxes[idx].tolist(), scores[idx].tolist(), 0.4)}
    assert got == want


def head_cfg(nc=1, size=160):
    return YOLOHeadConfig(num_classes=nc, anchors=tuple(map(tuple, TinyYOLOv3Config(
        input_size=size).scaled_anchors.tolist())))


def test_decode_places_a_box_where_the_logits_say():
    cfg = head_cfg()
    h32 = torch.full((1, 18, 5, 5), -10.0)
    h16 = torch.full((1, 18, 10, 10), -10.0)
    # anchor 1 of the stride-16 head (anchor index 1 overall), cell (row 3, col 7): centre logits 0
    # -> sigmoid 0.5 * 2 - 0.5 = 0.5 -> centre (7.5*16, 3.5*16); size logits 0 -> (0.5*2)^2 = 1 x anchor
    h16[0, 6 + 0: 6 + 4, 3, 7] = 0.0
    h16[0, 6 + 4, 3, 7] = 10.0
    h16[0, 6 + 5, 3, 7] = 10.0
    d = decode([h32, h16], cfg)
    assert d.shape == (1, 3 * 25 + 3 * 100, 6)
    best = d[0, d[0, :, 4].argmax()]
    aw, ah = cfg.anchors[1]
    want = xywh_to_xyxy(torch.tensor([7.5 * 16, 3.5 * 16, aw, ah]))
    assert torch.allclose(best[:4], want, atol=1e-4)
    dets = postprocess(d, conf_threshold=0.5)
    assert len(dets) == 1 and dets[0].shape == (1, 6)
    assert torch.allclose(dets[0][0, :4], want, atol=1e-4) and dets[0][0, 5] == 0


def test_loss_trains_and_is_finite_without_targets():
    torch.manual_seed(0)
    cfg = TinyYOLOv3Config(num_classes=2, input_size=96, width=0.125)
    model = TinyYOLOv3(cfg)
    loss_fn = YOLOLoss(head_cfg(2, 96), 96)
    x = torch.rand(2, 3, 96, 96)
    targets = torch.tensor([[0, 0, 0.3, 0.4, 0.2, 0.3], [0, 1, 0.7, 0.7, 0.1, 0.1], [1, 1, 0.5, 0.5, 0.6, 0.5]])
    empty_loss, parts = loss_fn(model(x), torch.zeros(0, 6))
    assert torch.isfinite(empty_loss) and parts["box"] == 0 and parts["cls"] == 0 and parts["obj"] > 0
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(60):
        loss, parts = loss_fn(model(x), targets)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["box"] > 0 and parts["cls"] > 0
    assert loss.item() < 0.5 * first
    # after over-fitting, the top detection of image 1 is the big class-1 box
    model.eval()
    with torch.no_grad():
        det = postprocess(decode(model(x), head_cfg(2, 96)), 0.1)[1]
    top = det[det[:, 4].argmax()]
    assert int(top[5]) == 1
    assert box_iou(top[None, :4], xywh_to_xyxy(torch.tensor([[48, 48, 57.6, 48.0]])))[0, 0] > 0.5
