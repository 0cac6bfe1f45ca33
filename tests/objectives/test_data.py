from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from objectives.data.batches import Batches, augment_batch
from objectives.data.real import DataError, load_coco, load_yolo, read_yolo_labels
from objectives.data.synthetic import SyntheticConfig, cached, generate, load, save
from tests.helpers import augment

SMALL = SyntheticConfig(size=96, n_train=24, n_val=8, seed=3)


@pytest.fixture(scope="module")
def small():
    return generate(SMALL, "train", workers=1)


def test_synthetic_is_deterministic_and_split_independent(small):
    again = generate(SMALL, "train", workers=2)
    assert np.array_equal(small.images, again.images)
    assert all(np.array_equal(a, b) for a, b in zip(small.labels, again.labels, strict=True))
    val = generate(SMALL, "val", workers=1)
    assert not np.array_equal(small.images[:8], val.images)
    other = generate(SyntheticConfig(size=96, n_train=24, n_val=8, seed=4), "train", workers=1)
    assert not np.array_equal(small.images, other.images)


def test_synthetic_labels_valid(small):
    assert small.images.shape == (24, 96, 96, 3) and small.images.dtype == np.uint8
    counts = [len(lab) for lab in small.labels]
    assert max(counts) <= SMALL.max_feet and sum(counts) > 10
    b = np.concatenate(small.labels)
    assert (b[:, 0] == 0).all()
    x1, x2 = b[:, 1] - b[:, 3] / 2, b[:, 1] + b[:, 3] / 2
    y1, y2 = b[:, 2] - b[:, 4] / 2, b[:, 2] + b[:, 4] / 2
    assert (x1 >= -1e-6).all() and (x2 <= 1 + 1e-6).all() and (y1 >= -1e-6).all() and (y2 <= 1 + 1e-6).all()
    assert (b[:, 3] * 96 >= 2).all() and (b[:, 4] * 96 >= 2).all()
    # images are not blank: feet and floor differ
    assert small.images.std() > 10


def test_cache_roundtrip_and_rebuild(tmp_path, small):
    p = tmp_path / "x.npz"
    save(small, p)
    back = load(p)
    assert np.array_equal(back.images, small.images) and back.class_names == ("foot",)
    cfg = SyntheticConfig(size=64, n_train=4, n_val=2, seed=0)
    tr, va = cached(cfg, tmp_path)
    path = tmp_path / f"synthetic-{cfg.key()}-train.npz"
    path.write_bytes(b"corrupt")
    tr2, _ = cached(cfg, tmp_path)  # a corrupt cache is regenerated
    assert np.array_equal(tr.images, tr2.images) and len(va) == 2


@pytest.mark.parametrize("bad", [dict(size=100), dict(n_train=0), dict(min_visible=0), dict(min_foot=2)])
def test_synthetic_config_validation(bad):
    with pytest.raises(ValueError, match="data\\."):
        SyntheticConfig(**{"size": 64, "n_train": 4, "n_val": 2, "seed": 0, **bad})


def test_augment_moves_boxes_with_pixels():
    """A white square on black: after scale, shift and flips, the boxes still frame the white pixels."""
    n = 96
    imgs = torch.zeros(8, 3, n, n)
    imgs[:, :, 20:50, 30:70] = 1.0  # x 30..70, y 20..50
    t = torch.tensor([[k, 0, 50 / n, 35 / n, 40 / n, 30 / n] for k in range(8)], dtype=torch.float32)
    cfg = augment(flip_lr=0.5, flip_ud=0.5, brightness=0, saturation=0, contrast=0, scale=(0.7, 1.3),
                        translate=0.1, min_box_fraction=0.0)
    out, ot = augment_batch(imgs, t, cfg, torch.Generator().manual_seed(0))
    for row in ot:
        k = int(row[0])
        m = out[k, 0] > 0.5
        ys, xs = torch.nonzero(m, as_tuple=True)
        box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32) / n
        cx, cy, w, h = row[2:]
        want = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        assert torch.allclose(box, want, atol=2.5 / n), (k, box * n, want * n)


def test_augment_drops_boxes_pushed_out():
    imgs = torch.zeros(1, 3, 64, 64)
    t = torch.tensor([[0, 0, 0.03, 0.5, 0.06, 0.1]])
    cfg = augment(flip_lr=0, brightness=0, saturation=0, contrast=0, scale=(1.3, 1.3), translate=0.0,
                        min_box_fraction=0.5)
    _, ot = augment_batch(imgs, t, cfg, torch.Generator().manual_seed(0))
    assert len(ot) == 0  # zoomed 1.3x about the centre, the box at the left edge leaves the frame


def test_batches_cover_every_image_once(small):
    b = Batches(small, 5, shuffle=True, seed=1)
    seen = 0
    n_targets = 0
    for imgs, targets in b:
        assert imgs.dtype == torch.float32 and imgs.max() <= 1
        seen += len(imgs)
        n_targets += len(targets)
        assert targets.shape[1] == 6 and (targets[:, 0] < len(imgs)).all()
    assert seen == 24 and n_targets == sum(len(lab) for lab in small.labels)


# ------------------------------------------------------------------------------------------ real datasets


def make_yolo(tmp_path, labels: dict[str, str], extra_images=(), names=("foot", "shoe")):
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for name, text in labels.items():
        Image.new("RGB", (200, 100), (10, 20, 30)).save(root / "images" / "train" / f"{name}.png")
        if text is not None:
            (root / "labels" / "train" / f"{name}.txt").write_text(text)
    for name in extra_images:
        Image.new("RGB", (50, 50)).save(root / "images" / "val" / f"{name}.png")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {list(names)}\n")
    return root / "data.yaml"


def test_yolo_loader_letterboxes_boxes(tmp_path, caplog):
    y = make_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.1 0.2\n", "b": None}, extra_images=["v"])
    with caplog.at_level(logging.WARNING):
        ds, rep = load_yolo(y, "train", 64)
    assert ds.images.shape == (2, 64, 64, 3) and ds.class_names == ("foot", "shoe")
    assert rep.background == 1 and rep.boxes == 2
    assert sum("background" in r.message for r in caplog.records) == 1  # reported once
    # 200x100 -> 64x32 centred vertically (pad 16): y' = (y * 32 + 16) / 64
    a = ds.labels[0]
    assert np.allclose(a[0], [0, 0.5, 0.5, 0.2, 0.2], atol=1e-5)
    assert np.allclose(a[1], [1, 0.25, (0.75 * 32 + 16) / 64, 0.1, 0.1], atol=1e-5)
    assert ds.images[0][0, 0].tolist() == [114, 114, 114]  # padding


@pytest.mark.parametrize("text,match", [
    ("0 0.5 0.5 0.2\n", r"a\.txt:1: expected 'cls cx cy w h'"),
    ("0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.1 0.1\n", r"a\.txt:2: class id 2 not in 0\.\.1"),
    ("0 1.5 0.5 0.2 0.2\n", r"a\.txt:1: box .* outside \[0, 1\]"),
    ("0 0.95 0.5 0.2 0.2\n", r"outside \[0, 1\]"),
    ("0 0.5 0.5 0 0.2\n", r"a\.txt:1: box size w=0.0 h=0.2 must be positive"),
    ("0 0.5 x 0.2 0.2\n", r"a\.txt:1: non-numeric"),
])
def test_yolo_bad_labels_name_file_and_line(tmp_path, text, match):
    y = make_yolo(tmp_path, {"a": text})
    with pytest.raises(DataError, match=match):
        load_yolo(y, "train", 64)


def test_yolo_bad_files(tmp_path):
    y = make_yolo(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n"})
    (y.parent / "images" / "train" / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"junk\.png: unreadable or not an image"):
        load_yolo(y, "train", 64)
    with pytest.raises(DataError, match="val split is empty"):
        load_yolo(make_yolo(tmp_path / "2", {"a": ""}), "val", 64)
    with pytest.raises(DataError, match="data.yaml not found"):
        load_yolo(tmp_path / "nope.yaml", "train", 64)
    bad = tmp_path / "bad.yaml"
    bad.write_text("names: [a\ntrain: x\n")
    with pytest.raises(DataError, match=r"bad\.yaml:\d+: malformed YAML"):
        load_yolo(bad, "train", 64)


def test_read_yolo_labels_empty_lines_ok(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("\n0 0.5 0.5 0.1 0.1\n\n")
    assert read_yolo_labels(p, 1).shape == (1, 5)


def make_coco(tmp_path, anns, images=None):
    d = tmp_path / "coco"
    d.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (100, 50)).save(d / "a.jpg")
    Image.new("RGB", (100, 50)).save(d / "b.jpg")
    spec = {"images": images if images is not None else [
        {"id": 1, "file_name": "a.jpg", "width": 100, "height": 50},
        {"id": 2, "file_name": "b.jpg", "width": 100, "height": 50}],
        "annotations": anns, "categories": [{"id": 7, "name": "foot"}, {"id": 3, "name": "shoe"}]}
    p = d / "ann.json"
    p.write_text(json.dumps(spec, indent=1))
    return p, d


def test_coco_loader(tmp_path):
    p, d = make_coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 10]}])
    ds, rep = load_coco(p, d, 64)
    assert ds.class_names == ("shoe", "foot")  # by sorted category id
    assert rep.background == 1 and rep.images == 2
    # 100x50 -> 64x32, pad y 16: box x 10..30 -> 6.4..19.2; y 5..15 -> 3.2+16..9.6+16
    assert np.allclose(ds.labels[0][0], [1, 12.8 / 64, (6.4 + 16) / 64, 12.8 / 64, 6.4 / 64], atol=1e-5)


@pytest.mark.parametrize("anns,match", [
    ([{"id": 1, "image_id": 9, "category_id": 7, "bbox": [1, 1, 2, 2]}], "unknown image_id 9"),
    ([{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 1, 2, 2]}], r"category_id 5 not in \[3, 7\]"),
    ([{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 0, 2]}], "size 0x2 must be positive"),
    ([{"id": 1, "image_id": 1, "category_id": 7, "bbox": [90, 1, 20, 2]}], "outside the 100x50 image"),
    ([{"id": 1, "image_id": 1, "category_id": 7}], "needs image_id, category_id and a 4-number bbox"),
])
def test_coco_bad_annotations(tmp_path, anns, match):
    p, d = make_coco(tmp_path, anns)
    with pytest.raises(DataError, match=match):
        load_coco(p, d, 64)


def test_coco_malformed_json_and_empty(tmp_path):
    p, d = make_coco(tmp_path, [])
    p.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"ann\.json:2: malformed JSON"):
        load_coco(p, d, 64)
    p2, d2 = make_coco(tmp_path / "e", [], images=[])
    with pytest.raises(DataError, match="split is empty"):
        load_coco(p2, d2, 64)


def test_preview_grid_draws_boxes(tmp_path, capsys):
    from search import preview

    preview.main(["--out", str(tmp_path / "s.png")])
    img = np.asarray(Image.open(tmp_path / "s.png"))
    assert img.shape == (4 * 160 * 2, 6 * 160 * 2, 3)
    assert ((img[..., 0] == 255) & (img[..., 1] == 0) & (img[..., 2] == 0)).sum() > 100  # red boxes drawn
    assert "labelled feet" in capsys.readouterr().out
