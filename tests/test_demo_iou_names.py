"""One IoU, one name: the README quotes mask IoUs under the names `lvkit demo` prints and the tables define.

The demo used to print an any-label IoU per defect type while the README quoted per-label
numbers under a bare "IoU"; now each of the three definitions has one name
(``lvkit.eval.report_masks.IOU_NAMES``), used by the mask_report docs, the demo and the README.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from lvkit.demo import mask_summary, sheet_title
from lvkit.eval import mask_report
from lvkit.eval.report_masks import IOU_MEANINGS, IOU_NAMES

README = Path(__file__).resolve().parents[1] / "README.md"


def demo_printout() -> str:
    masks = pd.DataFrame({"n_images": [4, 4, 8], "iou_any": [0.7, 0.5, 0.6], "iou_any_low": [0.6, 0.4, 0.5],
                          "iou_any_high": [0.8, 0.6, 0.7], "iou_label": [0.6, 0.4, 0.5],
                          "iou_console": [0.55, 0.35, 0.45], "dice_any": [0.8, 0.6, 0.7]},
                         index=["hole", "stain", "all"])
    return mask_summary(masks)


def test_names_are_distinct_and_defined() -> None:
    assert len(set(IOU_NAMES.values())) == len(IOU_NAMES) == len(IOU_MEANINGS)
    for column, name in IOU_NAMES.items():
        assert f"``{column}``, \"{name}\"" in (mask_report.__doc__ or ""), column


def test_the_demo_prints_every_name_with_its_meaning() -> None:
    text = demo_printout()
    header = text.splitlines()[0]
    for column, name in IOU_NAMES.items():
        assert name in header and f"{name}: {IOU_MEANINGS[column]}" in text


def test_the_readme_quotes_iou_numbers_under_the_demos_names() -> None:
    readme = README.read_text()
    printed = demo_printout()
    named = re.findall(r"IoU \([^)]*\)", readme)
    assert named, "the README names no mask IoU"
    assert set(named) <= set(IOU_NAMES.values()), set(named) - set(IOU_NAMES.values())
    assert all(name in printed for name in named)
    # no number quoted under a bare "IoU" (or "IoU ... per label"), where the definition is unsaid
    bare = re.findall(r"IoU(?! \()[^.;:\n]{0,40}?\d\.\d", readme)
    assert not bare, bare


def test_the_sheet_title_explains_an_anomalous_image_with_an_empty_mask() -> None:
    assert "no pixel above the pixel threshold" in sheet_title("hole", True, 0.79, True)
    assert sheet_title("hole", True, 0.79, False) == "hole: anomalous (0.79)"
    assert sheet_title("good", False, 0.9, True) == "good: normal (0.90)"
