"""The validation report: ``verdict.json`` (every check, the numbers, the set metrics) and
``index.html``, the page a person reads first. It stays usable with hundreds of golden images:

- top: verdict, reason, the golden-set metrics (with the model's floors), the checks (per-image
  golden checks folded: failed ones listed, passing ones counted);
- golden images: the failed ones first, worst first, then the worst passing ones, as full cards
  (pictures with each image's numbers beside them), at most ``FULL_FAILED`` + ``FULL_PASSING``;
  every other image as a small thumbnail in a grid (failed ones first, then worst first);
- latency; a link to the great-expectations results in ``gx/``.

With a baseline (``verdict["regression"]``, see ``validation/regression.py``) the page opens with
"Baseline vN vs candidate": the gate's status, set metrics baseline | candidate | delta (coloured
by ``higher_is_better``), flips, latency, memory, load times, signature compatibility. The golden
images are then pairs: the regressed ones first as cards with the baseline's and the candidate's
pictures side by side, then failed and worst passing ones, every other image as a thumbnail pair.
The budget of full cards is the same as without a baseline.

One self-contained file: pictures are inline data URIs, styles inline, no scripts, nothing fetched.
The great-expectations results get the same treatment (``gx/index.html``, written here from GX's
own JSON results, kept beside it as ``gx/results.json``): GX's Data Docs pull Bootstrap, jQuery,
Vega and fonts from CDNs and run scripts, which the report endpoint's Content-Security-Policy
forbids, so they are not written.
Pictures are drawn here, and only for the images shown: a per-image entry carries ``full`` and
``thumb`` callables (see ``validation.validate.golden_checks``).

The package: ``page.py`` (the front page), ``regression.py`` (the baseline section and image
pairs), ``pictures.py`` (drawing), ``gx.py`` (the GX page), ``common.py`` (styles, budgets,
numbers). Its public names are here.
"""
from __future__ import annotations

from validation.report.common import FULL_FAILED, FULL_PASSING, GOLDEN_ROWS
from validation.report.gx import gx_page, write_gx
from validation.report.page import order, write
from validation.report.pictures import (
    EXPECTED, FALSE_POSITIVE, MATCHED, MISSED, UNCOUNTED, box_colour, box_legend, class_colour, class_legend,
    classification_pictures, detection_pictures, detection_thumb, image_picture, image_thumb, legend, mask_picture,
    mask_thumb, segmentation_pictures)
from validation.report.regression import NO_BASELINE, delta_class, order_pairs

__all__ = ["FULL_FAILED", "FULL_PASSING", "GOLDEN_ROWS", "gx_page", "write_gx", "order", "write", "EXPECTED", "FALSE_POSITIVE", "MATCHED", "MISSED", "UNCOUNTED", "box_colour", "box_legend", "class_colour", "class_legend", "classification_pictures", "detection_pictures", "detection_thumb", "image_picture", "image_thumb", "legend", "mask_picture", "mask_thumb", "segmentation_pictures", "NO_BASELINE", "delta_class", "order_pairs"]
