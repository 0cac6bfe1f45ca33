"""Loaders for real datasets: YOLO format (images/ + labels/ + data.yaml) and COCO JSON.

Images are letterboxed to the model input (aspect kept, grey padding) and held as one uint8 array, like the
embedded data. Bad data raises :class:`DataError` with one line naming the file (and line) and what was
expected; an image without a label file is background, counted and reported once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from objectives.data.images import ImageSet

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PAD = 114


class DataError(ValueError):
    """Bad dataset input; the message names the file (and line) and what was expected."""


@dataclass(frozen=True)
class LoadReport:
    images: int
    boxes: int
    background: int  # images without a label file (YOLO) or without annotations (COCO)


def letterbox(img: Image.Image, size: int) -> tuple[np.ndarray, float, float, float]:
    """Resize keeping the aspect ratio and pad to ``size`` x ``size``. Returns (array, scale, pad_x, pad_y)."""
    w, h = img.size
    r = size / max(w, h)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    canvas = Image.new("RGB", (size, size), (PAD, PAD, PAD))
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas.paste(img.convert("RGB").resize((nw, nh), Image.BILINEAR), (px, py))
    return np.asarray(canvas), r, px, py


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
        return img
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable or not an image ({type(e).__name__})") from None


def _to_letterbox(boxes_xyxy: np.ndarray, w: int, h: int, size: int, r: float, px: float, py: float) -> np.ndarray:
    """Pixel xyxy in the original image -> normalized cx, cy, w, h in the letterboxed one."""
    b = boxes_xyxy * r + np.array([px, py, px, py])
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1) / size


# ------------------------------------------------------------------------------------------ YOLO format


def read_yolo_labels(path: Path, num_classes: int) -> np.ndarray:
    """Parse one label file -> (m, 5) class, cx, cy, w, h (normalized). Raises DataError naming file:line."""
    rows = []
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{ln}"
        if len(parts) != 5:
            raise DataError(f"{where}: expected 'cls cx cy w h' (5 fields), got {len(parts)}")
        try:
            c = float(parts[0])
            cx, cy, w, h = (float(p) for p in parts[1:])
        except ValueError:
            raise DataError(f"{where}: non-numeric value in {line.strip()!r}") from None
        if c != int(c) or not 0 <= c < num_classes:
            raise DataError(f"{where}: class id {parts[0]} not in 0..{num_classes - 1}")
        if not (w > 0 and h > 0):
            raise DataError(f"{where}: box size w={w} h={h} must be positive")
        eps = 1e-3
        if not all(0 <= v <= 1 for v in (cx, cy, w, h)) or cx - w / 2 < -eps or cx + w / 2 > 1 + eps \
                or cy - h / 2 < -eps or cy + h / 2 > 1 + eps:
            raise DataError(f"{where}: box {cx} {cy} {w} {h} outside [0, 1] (normalized cx cy w h expected)")
        rows.append([c, cx, cy, w, h])
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def _label_path(img: Path) -> Path:
    parts = list(img.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return img.with_suffix(".txt")


def _split_images(root: Path, entry: str | list[str], key: str, yaml_path: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    files: list[Path] = []
    for e in entries:
        p = (root / e) if not Path(e).is_absolute() else Path(e)
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file() and p.suffix == ".txt":
            files += [(root / ln.strip()) if not Path(ln.strip()).is_absolute() else Path(ln.strip())
                      for ln in p.read_text().splitlines() if ln.strip()]
        else:
            raise DataError(f"{yaml_path}: {key}: {p} is neither a folder of images nor a .txt list")
    if not files:
        raise DataError(f"{yaml_path}: {key} split is empty (no images under {entries})")
    return files


def load_yolo(data_yaml: Path, split: str, size: int) -> tuple[ImageSet, LoadReport]:
    """Load split ``train`` or ``val`` of a YOLO-format dataset described by ``data.yaml``."""
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise DataError(f"data.yaml not found: {data_yaml}")
    try:
        spec = yaml.safe_load(data_yaml.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark else ""
        raise DataError(f"{data_yaml}{at}: malformed YAML") from None
    if not isinstance(spec, dict) or "names" not in spec or split not in spec:
        raise DataError(f"{data_yaml}: expected keys 'names' and '{split}'")
    names = spec["names"]
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    if "nc" in spec and int(spec["nc"]) != len(names):
        raise DataError(f"{data_yaml}: nc={spec['nc']} but {len(names)} names")
    root = Path(spec.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = data_yaml.parent / root
    files = _split_images(root, spec[split], split, data_yaml)
    images, labels, background = [], [], 0
    for f in files:
        if not f.is_file():
            raise DataError(f"{f}: listed in {split} but missing")
        img = _open(f)
        arr, r, px, py = letterbox(img, size)
        lp = _label_path(f)
        if lp.is_file():
            lab = read_yolo_labels(lp, len(names))
        else:
            lab = np.zeros((0, 5))
            background += 1
        w, h = img.size
        if len(lab):
            c, cx, cy, bw, bh = lab.T
            xyxy = np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], 1)
            lab = np.c_[c, _to_letterbox(np.clip(xyxy, 0, [w, h, w, h]), w, h, size, r, px, py)]
        images.append(arr)
        labels.append(lab.astype(np.float32))
    if background:
        log.warning("%s %s: %d of %d images have no label file and count as background", data_yaml, split,
                    background, len(files))
    return (ImageSet(np.stack(images), labels, tuple(names)),
            LoadReport(len(files), int(sum(len(lab) for lab in labels)), background))


# ------------------------------------------------------------------------------------------ COCO JSON


def load_coco(ann_json: Path, images_dir: Path, size: int) -> tuple[ImageSet, LoadReport]:
    """Load a COCO detection JSON (bbox = [x, y, w, h] in pixels); categories map to 0..K-1 by sorted id."""
    ann_json, images_dir = Path(ann_json), Path(images_dir)
    if not ann_json.is_file():
        raise DataError(f"annotation file not found: {ann_json}")
    try:
        spec = json.loads(ann_json.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{ann_json}:{e.lineno}: malformed JSON ({e.msg})") from None
    for k in ("images", "annotations", "categories"):
        if not isinstance(spec, dict) or not isinstance(spec.get(k), list):
            raise DataError(f"{ann_json}: expected a list under '{k}'")
    if not spec["images"]:
        raise DataError(f"{ann_json}: the split is empty (no images)")
    cats = sorted(spec["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    imgs = {}
    for im in spec["images"]:
        try:
            imgs[im["id"]] = im
        except (KeyError, TypeError):
            raise DataError(f"{ann_json}: an image entry lacks 'id': {im!r}") from None
    per_image: dict[int, list[list[float]]] = {i: [] for i in imgs}
    for a in spec["annotations"]:
        try:
            iid, cid, (x, y, w, h) = a["image_id"], a["category_id"], a["bbox"]
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{ann_json}: annotation {a.get('id', '?') if isinstance(a, dict) else a!r} needs "
                            f"image_id, category_id and a 4-number bbox") from None
        if iid not in imgs:
            raise DataError(f"{ann_json}: annotation {a.get('id')} refers to unknown image_id {iid}")
        if cid not in cat_index:
            raise DataError(f"{ann_json}: annotation {a.get('id')} has category_id {cid} not in "
                            f"{sorted(cat_index)}")
        if a.get("iscrowd", 0):
            continue
        if not (w > 0 and h > 0):
            raise DataError(f"{ann_json}: annotation {a.get('id')} bbox size {w}x{h} must be positive")
        W, H = imgs[iid].get("width"), imgs[iid].get("height")
        if W and H and (x < -1 or y < -1 or x + w > W + 1 or y + h > H + 1):
            raise DataError(f"{ann_json}: annotation {a.get('id')} bbox {[x, y, w, h]} outside the {W}x{H} image")
        per_image[iid].append([cat_index[cid], x, y, x + w, y + h])
    images, labels, background = [], [], 0
    for iid, im in imgs.items():
        path = images_dir / im.get("file_name", "")
        if not path.is_file():
            raise DataError(f"{path}: image of id {iid} in {ann_json} not found")
        img = _open(path)
        arr, r, px, py = letterbox(img, size)
        rows = np.array(per_image[iid], dtype=np.float64).reshape(-1, 5)
        if not len(rows):
            background += 1
        w, h = img.size
        lab = np.c_[rows[:, 0], _to_letterbox(np.clip(rows[:, 1:], 0, [w, h, w, h]), w, h, size, r, px, py)] \
            if len(rows) else np.zeros((0, 5))
        images.append(arr)
        labels.append(lab.astype(np.float32))
    if background:
        log.warning("%s: %d of %d images have no annotation and count as background", ann_json, background, len(imgs))
    return (ImageSet(np.stack(images), labels, tuple(str(c.get("name", c["id"])) for c in cats)),
            LoadReport(len(imgs), int(sum(len(x) for x in labels)), background))
