from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from objectives.metrics import average_precision


def coco_reference(dets, gts, num_classes, max_dets=100):
    """mAP@0.5 and mAP@[.5:.95] from pycocotools on the same boxes."""
    images = [{"id": i + 1, "width": 1000, "height": 1000} for i in range(len(gts))]
    anns, k = [], 1
    for i, g in enumerate(gts):
        for x1, y1, x2, y2, c in g:
            anns.append({"id": k, "image_id": i + 1, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
            k += 1
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        res = [{"image_id": i + 1, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
               for i, d in enumerate(dets) for x1, y1, x2, y2, s, c in d]
        if not res:
            return 0.0, 0.0
        dt = gt.loadRes(res)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K) at area "all" and maxDets=max_dets
    return float(np.mean(prec[0][prec[0] > -1])), float(np.mean(prec[prec > -1]))


def random_case(seed, n_img=30, num_classes=3, p_empty=0.2):
    rng = np.random.default_rng(seed)
    dets, gts = [], []
    for _ in range(n_img):
        m = 0 if rng.random() < p_empty else rng.integers(1, 6)
        xy = rng.uniform(0, 400, (m, 2))
        wh = rng.uniform(10, 120, (m, 2))
        g = np.c_[xy, xy + wh, rng.integers(0, num_classes, m)]
        # detections: jittered copies of some ground truths (varying quality) plus false positives
        keep = g[rng.random(m) < 0.8]
        jit = keep[:, :4] + rng.normal(0, rng.uniform(1, 25), (len(keep), 4))
        jit[:, 2:] = np.maximum(jit[:, 2:], jit[:, :2] + 1)
        cls = np.where(rng.random(len(keep)) < 0.9, keep[:, 4], rng.integers(0, num_classes, len(keep)))
        fp_n = rng.integers(0, 5)
        fxy = rng.uniform(0, 400, (fp_n, 2))
        fp = np.c_[fxy, fxy + rng.uniform(5, 100, (fp_n, 2))]
        boxes = np.r_[jit, fp]
        scores = np.round(rng.random(len(boxes)), 2)  # rounding makes score ties
        d = np.c_[boxes, scores, np.r_[cls, rng.integers(0, num_classes, fp_n)]]
        dets.append(d)
        gts.append(g)
    return dets, gts


@pytest.mark.parametrize("seed", range(6))
def test_equal_to_pycocotools_on_random_detections(seed):
    dets, gts = random_case(seed)
    ours = average_precision(dets, gts, 3)
    ref50, ref = coco_reference(dets, gts, 3)
    assert ours.map50 == pytest.approx(ref50, abs=1e-6)
    assert ours.map50_95 == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_equal_to_pycocotools_on_crowded_overlapping_boxes(seed):
    """Overlapping ground truths and several detections per object (duplicates, IoU ties on integer boxes): the
    greedy matching's order and tie rule decide the result at every threshold."""
    rng = np.random.default_rng(100 + seed)
    dets, gts = [], []
    for _ in range(12):
        m = rng.integers(3, 12)
        xy = rng.integers(0, 60, (m, 2)).astype(float)  # a small field: the boxes overlap
        g = np.c_[xy, xy + rng.integers(20, 50, (m, 2)), rng.integers(0, 2, m)]
        copies = np.repeat(g, rng.integers(1, 4, m), axis=0)
        jit = copies[:, :4] + rng.integers(-4, 5, (len(copies), 4))
        jit[:, 2:] = np.maximum(jit[:, 2:], jit[:, :2] + 1)
        d = np.c_[jit, np.round(rng.random(len(copies)), 1), copies[:, 4]]
        dets.append(d)
        gts.append(g)
    ours = average_precision(dets, gts, 2)
    ref50, ref = coco_reference(dets, gts, 2)
    assert ours.map50 == pytest.approx(ref50, abs=1e-6) and ours.map50_95 == pytest.approx(ref, abs=1e-6)


def test_iou_tie_takes_the_last_ground_truth_like_cocoeval():
    """d1 overlaps both ground truths at IoU 9/11; COCOeval keeps the later one, so d2 (= gt b) is left gt a at
    IoU 2/3: a hit below 0.7 and a miss above. Taking gt a would make d2 a hit at every threshold."""
    gts = [np.array([[0, 0, 10, 10, 0], [2, 0, 12, 10, 0]], float)]
    dets = [np.array([[1, 0, 11, 10, 0.9, 0], [2, 0, 12, 10, 0.8, 0]], float)]
    ours = average_precision(dets, gts, 1)
    ref50, ref = coco_reference(dets, gts, 1)
    assert ours.map50 == pytest.approx(ref50, abs=1e-9) == 1.0
    assert ours.map50_95 == pytest.approx(ref, abs=1e-9) and ref < 0.9


def test_max_dets_cut_matches_pycocotools():
    dets, gts = random_case(11, n_img=10, num_classes=1)
    rng = np.random.default_rng(0)
    dets = [np.r_[d, np.c_[rng.uniform(0, 300, (30, 2)), rng.uniform(300, 400, (30, 2)), rng.random(30),
                            np.zeros(30)]] for d in dets]
    ours = average_precision(dets, gts, 1, max_dets=10)
    ref50, ref = coco_reference(dets, gts, 1, max_dets=10)
    assert ours.map50 == pytest.approx(ref50, abs=1e-6) and ours.map50_95 == pytest.approx(ref, abs=1e-6)


def test_perfect_and_empty_cases():
    g = [np.array([[10, 10, 50, 50, 0], [60, 60, 90, 100, 1]], float)]
    d = [np.c_[g[0][:, :4], [0.9, 0.8], g[0][:, 4]]]
    r = average_precision(d, g, 2)
    assert r.map50 == pytest.approx(1.0) and r.map50_95 == pytest.approx(1.0)  # COCO divides by tp+fp+eps
    # no detections at all: AP 0 for classes with ground truth
    assert average_precision([np.zeros((0, 6))], g, 2).map50 == 0.0
    # a class without ground truth is left out of the mean (class 2 here)
    d2 = [np.r_[d[0], [[0, 0, 5, 5, 0.95, 2]]]]
    assert average_precision(d2, g, 3).map50 == pytest.approx(1.0)
    # no ground truth anywhere: undefined
    assert np.isnan(average_precision([d[0]], [np.zeros((0, 5))], 2).map50)
    # empty images mixed in
    assert average_precision(d + [np.zeros((0, 6))], g + [np.zeros((0, 5))], 2).map50 == pytest.approx(1.0)


def test_false_positive_ranked_first_halves_ap():
    g = [np.array([[10, 10, 50, 50, 0]], float)]
    d = [np.array([[10, 10, 50, 50, 0.5, 0], [200, 200, 250, 250, 0.9, 0]], float)]
    r = average_precision(d, g, 1)
    ref50, _ = coco_reference(d, g, 1)
    assert r.map50 == pytest.approx(0.5) == pytest.approx(ref50)


def test_bad_classes_rejected():
    with pytest.raises(ValueError, match="class"):
        average_precision([np.array([[0, 0, 1, 1, 0.5, 3]])], [np.zeros((0, 5))], 2)
