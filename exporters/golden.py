"""Golden sets: images plus what a good model must answer for them. Validated on load.

A golden set is a folder (or s3:// prefix) with ``golden.json`` and the files it names:

    {
      "schema": 1,
      "task": "detection" | "segmentation" | "classification",
      "classes": {"1": "rectangle", "2": "ellipse", "3": "triangle"},   # label map: id -> name
      "defaults": {"min_score": 0.5, "min_iou": 0.5, "min_miou": 0.5, "top_k": 1,     # optional
                   "max_false_positives": 0},
      "images": [
        # detection: predictions with score >= min_score are matched one to one to the expected
        # objects (highest score first, same class, IoU >= min_iou); every expected object must be
        # matched and at most max_false_positives predictions with score >= fp_min_score (default:
        # min_score) may match nothing. Boxes are
        # [ymin, xmin, ymax, xmax] in pixels, max edges exclusive; [] boxes = nothing to find
        {"file": "0000.png", "boxes": [[28, 22, 65, 52]], "classes": [2]},
        {"file": "0001.png", "boxes": [], "classes": [], "max_false_positives": 1},
        # segmentation: a PNG of class ids per pixel; mean IoU over present classes >= min_miou
        {"file": "0000.png", "mask": "0000.mask.png"},
        # classification: the label must be in the top_k
        {"file": "0000.png", "label": 1}
      ]
    }

Per-image keys override ``defaults``. Images are PNG or JPEG, RGB (grey and RGBA are converted).
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np

from registry.errors import BadInput

SCHEMA = 1
DEFAULTS = {"min_score": 0.5, "min_iou": 0.5, "min_miou": 0.5, "top_k": 1, "max_false_positives": 0,
            "fp_min_score": None}


class GoldenError(BadInput):
    """A golden set that cannot be used (malformed golden.json, missing or corrupt image)."""


@dataclass
class GoldenImage:
    name: str            # file name, unique in the set
    encoded: bytes       # the file as stored (PNG/JPEG): what image_bytes clients send
    image: np.ndarray    # uint8 [H, W, 3]
    expect: dict = field(default_factory=dict)
    mask: np.ndarray | None = None  # segmentation: int [H, W]


@dataclass
class GoldenSet:
    task: str
    classes: dict[int, str]
    images: list[GoldenImage]
    source: str

    def label_ids(self) -> set[int]:
        return set(self.classes)


def _decode(name: str, data: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.format not in ("PNG", "JPEG"):
                raise GoldenError(f"golden image {name} in {where} is {im.format}, not PNG or JPEG: "
                                  "convert it (TF Serving's image_bytes decoding expects PNG/JPEG).")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise GoldenError(f"golden image {name} in {where} is not a readable image ({exc}): replace "
                          "or remove it.") from None


def _decode_mask(name: str, data: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise GoldenError(f"golden mask {name} in {where} is not a readable image ({exc}).") from None
    if arr.ndim != 2:
        raise GoldenError(f"golden mask {name} in {where} must be single-channel class ids, got shape {arr.shape}")
    return arr.astype(np.int32)


def _reader(source: str):
    """A function name -> bytes for a local folder or an s3:// prefix."""
    if source.startswith("s3://"):
        from registry.s3 import S3Uri, check_key, get_bytes, make_client
        loc, client = S3Uri.parse(source), make_client()

        def read(name):
            data = get_bytes(client, loc.bucket, loc.prefix + check_key(name))
            if data is None:
                raise GoldenError(f"{name} is missing from the golden set {source}")
            return data
        return read

    def read_local(name):
        from registry.s3 import local_path_for
        try:
            path = local_path_for(source, name)
        except BadInput as exc:
            raise GoldenError(f"golden set {source}: {exc}") from None
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise GoldenError(f"{name} is missing from the golden set {source}") from None
    return read_local


def _int(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise GoldenError(f"{what} must be an integer, got {v!r}")
    return int(v)


def load(source: str, *, task: str | None = None) -> GoldenSet:
    read = _reader(source)
    try:
        raw = json.loads(read("golden.json"))
    except ValueError as exc:
        raise GoldenError(f"{source}golden.json is not valid JSON: {exc}") from None
    where = source
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise GoldenError(f"golden.json in {where} must be an object with \"schema\": {SCHEMA}")
    gtask = raw.get("task")
    if gtask not in ("detection", "segmentation", "classification"):
        raise GoldenError(f"golden.json in {where}: task must be detection, segmentation or "
                          f"classification, got {gtask!r}")
    if task and gtask != task:
        raise GoldenError(f"golden set {where} is for {gtask} but the model is {task}: point "
                          "'golden' at the right folder.")
    classes_raw = raw.get("classes")
    if not isinstance(classes_raw, dict) or not classes_raw:
        raise GoldenError(f"golden.json in {where} needs a \"classes\" label map, e.g. {{\"1\": \"cat\"}}")
    classes = {_int(int(k) if str(k).lstrip("-").isdigit() else k, f"class id {k!r}"): str(v)
               for k, v in classes_raw.items()}
    defaults = {**DEFAULTS, **(raw.get("defaults") or {})}
    entries = raw.get("images")
    if not isinstance(entries, list) or not entries:
        raise GoldenError(f"golden.json in {where} lists no images")
    images, seen = [], set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("file"), str):
            raise GoldenError(f"golden.json in {where}: images[{i}] needs a \"file\"")
        name = e["file"]
        if name in seen:
            raise GoldenError(f"golden.json in {where}: {name} is listed twice")
        seen.add(name)
        data = read(name)
        img = _decode(name, data, where)
        expect = {k: e.get(k, defaults[k]) for k in DEFAULTS}
        fp = expect["max_false_positives"]
        if isinstance(fp, bool) or not isinstance(fp, int) or fp < 0:
            raise GoldenError(f"{name}: max_false_positives must be an integer >= 0 (how many predictions "
                              f"with score >= min_score may match no expected object), got {fp!r}")
        fs = expect["fp_min_score"]
        if fs is not None and (isinstance(fs, bool) or not isinstance(fs, (int, float)) or not 0 <= fs <= 1):
            raise GoldenError(f"{name}: fp_min_score must be a number in [0, 1] (the score from which an "
                              f"unmatched prediction is a false positive; default min_score), got {fs!r}")
        gi = GoldenImage(name=name, encoded=data, image=img, expect=expect)
        if gtask == "detection":
            boxes, cls = e.get("boxes"), e.get("classes")
            if not isinstance(boxes, list) or not isinstance(cls, list) or len(boxes) != len(cls):
                raise GoldenError(f"{name}: detection entries need \"boxes\" and \"classes\" lists of equal length")
            for b in boxes:
                if not (isinstance(b, list) and len(b) == 4 and b[0] < b[2] and b[1] < b[3]):
                    raise GoldenError(f"{name}: box {b!r} is not [ymin, xmin, ymax, xmax] with min < max")
            bad = [c for c in cls if _int(c, f"{name} class") not in classes]
            if bad:
                raise GoldenError(f"{name}: classes {bad} are not in the label map {sorted(classes)}")
            gi.expect.update(boxes=[[float(x) for x in b] for b in boxes], classes=[int(c) for c in cls])
        elif gtask == "segmentation":
            if not isinstance(e.get("mask"), str):
                raise GoldenError(f"{name}: segmentation entries need a \"mask\" file")
            gi.mask = _decode_mask(e["mask"], read(e["mask"]), where)
            if gi.mask.shape != img.shape[:2]:
                raise GoldenError(f"{name}: mask {e['mask']} is {gi.mask.shape}, image is {img.shape[:2]}")
        else:
            if "label" not in e:
                raise GoldenError(f"{name}: classification entries need a \"label\"")
            if _int(e["label"], f"{name} label") not in classes:
                raise GoldenError(f"{name}: label {e['label']} is not in the label map {sorted(classes)}")
            gi.expect["label"] = int(e["label"])
        images.append(gi)
    return GoldenSet(task=gtask, classes=classes, images=images, source=source)
