"""The report's pictures: golden images with boxes, masks and class captions drawn (PIL), encoded
as inline data URIs; colours and legends. Drawn only for the images a page shows."""
from __future__ import annotations

import base64
import html
import io

import numpy as np

from validation.report.common import FULL_SIZE, THUMB_SIZE

# class colours (segmentation masks only); 0 = background (the dimmed image)
PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], dtype=np.uint8)
# box colours (detection only): what a box is, never which class (class names are written as text)
EXPECTED, MISSED, MATCHED, FALSE_POSITIVE = (0, 200, 0), (255, 0, 255), (255, 140, 0), (220, 0, 0)
# a prediction that matched nothing but scored below the image's fp_min_score: drawn, not counted
UNCOUNTED = (150, 150, 150)


def class_colour(c: int) -> tuple[int, int, int]:
    """The palette colour of class id c > 0 (wraps around after 8 classes)."""
    return tuple(int(v) for v in PALETTE[1 + (int(c) - 1) % (len(PALETTE) - 1)])


# --- pictures ----------------------------------------------------------------------------------

def _encode(im, *, photo_ok: bool = True) -> str:
    """Small pictures as PNG (pixel-exact); large ones as JPEG so a report of many stays small."""
    buf = io.BytesIO()
    if photo_ok and im.width * im.height > FULL_SIZE * FULL_SIZE:
        im.convert("RGB").save(buf, format="JPEG", quality=88)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    im.save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb_src(im) -> str:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _fit(image: np.ndarray, size: int, *, nearest: bool = False):
    """(PIL image, scale): small images enlarged by a whole factor up to ``size``, large ones shrunk to it."""
    from PIL import Image
    im = Image.fromarray(np.ascontiguousarray(image))
    side = max(im.width, im.height)
    scale = max(1, size // side) if side <= size else size / side
    if scale == 1:
        return im, 1
    w, h = max(1, round(im.width * scale)), max(1, round(im.height * scale))
    return im.resize((w, h), Image.NEAREST if nearest or scale > 1 else Image.BILINEAR), scale


def _draw_boxes(im, scale, expect, dets, match, labels, *, text: bool, width: int):
    from PIL import ImageDraw
    d = ImageDraw.Draw(im)
    boxes, scores, classes = dets
    missed = set(match.missed) if match is not None else set()

    def label(xy, text, colour):  # on a dark patch, readable over any image
        x, y = max(0, xy[0]), max(0, xy[1])
        d.rectangle(d.textbbox((x, y), text), fill=(0, 0, 0))
        d.text((x, y), text, fill=colour)

    def rect(box):
        y0, x0, y1, x1 = (float(v) * scale for v in box)
        return [x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)]  # max edges are exclusive
    for j, (box, cls) in enumerate(zip(expect.get("boxes", []), expect.get("classes", []))):
        colour = MISSED if j in missed else EXPECTED
        r = rect(box)
        d.rectangle(r, outline=colour, width=width + 1)
        if text:
            label((r[0] + 2, r[3] - 12), f"{labels.get(cls, cls)}", colour)
    if match is None:
        return
    false, matched = set(match.false_positives), {p for p, _, _ in match.pairs}
    for i in match.counted:  # predictions with score >= min_score
        b = boxes[i]
        if not np.all(np.isfinite(b)):
            continue
        colour = box_colour(i, matched, false)
        r = rect(b)
        d.rectangle(r, outline=colour, width=width)
        if text:
            label((r[0] + 2, r[1] + 2), f"{labels.get(int(classes[i]), int(classes[i]))} {scores[i]:.2f}", colour)


def box_colour(i: int, matched: set, false: set) -> tuple[int, int, int]:
    """What prediction i is: matched an expected object, a counted false positive, or neither (it
    matched nothing but scored below fp_min_score, so the check does not count it)."""
    return MATCHED if i in matched else FALSE_POSITIVE if i in false else UNCOUNTED


def detection_pictures(image, expect, dets, match, labels) -> list[tuple[str, str]]:
    im, scale = _fit(image, FULL_SIZE)
    im = im.convert("RGB")
    _draw_boxes(im, scale, expect, dets, match, labels, text=True, width=2)
    return [(f"expected and predicted boxes (score >= {expect.get('min_score')})", _encode(im))]


def detection_thumb(image, expect, dets, match, labels) -> str:
    im, scale = _fit(image, THUMB_SIZE)
    im = im.convert("RGB")
    _draw_boxes(im, scale, expect, dets, match, labels, text=False, width=1)
    return _thumb_src(im)


def _mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Class ids in solid palette colours over the dimmed image (same colour = same class)."""
    out = (np.asarray(image) * 0.35).astype(np.uint8)
    fg = mask > 0
    out[fg] = PALETTE[1 + (mask[fg].astype(np.int64) - 1) % (len(PALETTE) - 1)]
    return out


def mask_picture(image: np.ndarray, mask: np.ndarray) -> str:
    return _encode(_fit(_mask_overlay(image, mask), 192, nearest=True)[0])


def image_picture(image: np.ndarray) -> str:
    return _encode(_fit(image, 128)[0])


def segmentation_pictures(image, mask, pred) -> list[tuple[str, str]]:
    return [("image", _encode(_fit(image, 192)[0])), ("expected mask", mask_picture(image, mask)),
            ("predicted mask", mask_picture(image, pred))]


def mask_thumb(image, pred) -> str:
    return _thumb_src(_fit(_mask_overlay(image, pred), THUMB_SIZE, nearest=True)[0])


def classification_pictures(image, label, scores, labels) -> list[tuple[str, str]]:
    top = int(np.argmax(scores))
    return [(f"expected {labels.get(label, label)}; predicted {labels.get(top, top)}", image_picture(image))]


def image_thumb(image) -> str:
    return _thumb_src(_fit(image, THUMB_SIZE)[0])


# --- legends -----------------------------------------------------------------------------------

def _swatch(rgb, *, box: bool) -> str:
    style = f"border:3px solid rgb{tuple(rgb)}" if box else f"background:rgb{tuple(rgb)}"
    return f"<span class=sw style='{style}'></span>"


def class_legend(labels: dict) -> str:
    """Segmentation: one colour per class (background is the dimmed image)."""
    return "class colours: " + " ".join(
        f"{_swatch(class_colour(c), box=False)}{html.escape(str(name))}" for c, name in sorted(labels.items()) if c > 0)


def box_legend() -> str:
    """Detection: box colours say what a box is; class names and scores are written beside the boxes."""
    return ("box colours: " + " ".join(f"{_swatch(rgb, box=True)}{what}" for rgb, what in (
        (EXPECTED, "expected, found"), (MISSED, "expected, missed"),
        (MATCHED, "predicted, matched"), (FALSE_POSITIVE, "predicted, false positive"),
        (UNCOUNTED, "predicted, unmatched below fp_min_score (not counted)"))) +
            ". Class names (and scores of predictions) are written as text labels on the boxes; predictions "
            "below the image's min_score are not drawn.")


def legend(task: str | None, labels: dict) -> str:
    if task == "detection":
        return box_legend()
    if task == "segmentation":
        return class_legend(labels)
    return "Each picture is captioned with the expected and the predicted class."
