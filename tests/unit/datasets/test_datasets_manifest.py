"""Lookout for Vision manifests: round trips, colour masks in every storage, malformed lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lvkit.datasets import PALETTE, load, load_manifest, read_label_masks, write_manifest
from lvkit.errors import DatasetError

from .conftest import gray, save_png, write_lines

NORMAL = {
    "source-ref": "img/n.png",
    "anomaly-label": 0,
    "anomaly-label-metadata": {
        "class-name": "normal",
        "type": "groundtruth/image-classification",
        "human-annotated": "yes",
    },
}


def _color_map(*entries: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "internal-color-map": {
            key: {"class-name": name, "hex-color": color, "confidence": 0.5} for key, name, color in entries
        },
        "type": "groundtruth/semantic-segmentation",
        "human-annotated": "yes",
    }


def _anomaly(mask: str | None = "m.png", **meta: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "source-ref": "img/a.png",
        "anomaly-label": 1,
        "anomaly-label-metadata": {"class-name": "anomaly"},
    }
    if mask is not None:
        line["anomaly-mask-ref"] = mask
        line["anomaly-mask-ref-metadata"] = meta.get(
            "metadata",
            _color_map(("2", "background", "#FFFFFF"), ("0", "scratch", "#2CA02C"), ("1", "dent", "#d62728")),
        )
    return line


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    save_png(tmp_path / "img" / "n.png", gray())
    save_png(tmp_path / "img" / "a.png", gray(90))
    return tmp_path


def _colour_mask() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A white mask with a green scratch, a red dent and blended (anti-aliased) pixels at their edges."""
    rgb = np.full((64, 64, 3), 255, np.uint8)
    scratch = np.zeros((64, 64), bool)
    scratch[10:12, 5:40] = True
    dent = np.zeros((64, 64), bool)
    dent[30:40, 30:40] = True
    rgb[scratch] = (0x2C, 0xA0, 0x2C)
    rgb[dent] = (0xD6, 0x27, 0x28)
    rgb[12, 5:40] = (150, 208, 150)  # half-way between green and white: not in the map
    rgb[29, 30:40] = (234, 147, 147)
    return rgb, scratch, dent


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_colour_masks_in_any_storage(folder: Path, mode: str) -> None:
    rgb, scratch, dent = _colour_mask()
    if mode == "P":  # an exact adaptive palette, as paint tools save it
        from PIL import Image

        Image.fromarray(rgb).quantize(colors=16, dither=Image.Dither.NONE).save(folder / "m.png")
    else:
        save_png(folder / "m.png", rgb, mode=mode)
    ds = load_manifest(write_lines(folder / "train.manifest", [NORMAL, "", _anomaly()]))
    sample = next(s for s in ds.samples if s.label == 1)
    assert sample.mask_colors == (("#2ca02c", "scratch"), ("#d62728", "dent"))
    assert sample.defect_type == "scratch"  # several labels: the first in key order ("0" here)
    masks = read_label_masks(sample)
    assert np.array_equal(masks["scratch"], scratch) and np.array_equal(masks["dent"], dent)
    assert ds.colors == {"dent": "#d62728", "scratch": "#2ca02c"} and ds.labels == ("dent", "scratch")


def test_single_label_line_and_numeric_key_order(folder: Path) -> None:
    save_png(folder / "m.png", _colour_mask()[0])
    meta = _color_map(("10", "dent", "#d62728"), ("2", "scratch", "#2ca02c"), ("0", "BACKGROUND", "#ffffff"))
    one = _color_map(("0", "BACKGROUND", "#ffffff"), ("1", "dent", "#D62728"))
    ds = load_manifest(
        write_lines(folder / "x.jsonl", [NORMAL, _anomaly(metadata=meta), _anomaly(metadata=one)])
    )
    assert [s.defect_type for s in ds.samples if s.label] == ["scratch", "dent"]


def test_classification_lines_and_normal_masks(folder: Path) -> None:
    save_png(folder / "m.png", _colour_mask()[0])
    normal_with_mask = {
        **NORMAL,
        "anomaly-mask-ref": "m.png",
        "anomaly-mask-ref-metadata": _color_map(("0", "BACKGROUND", "#ffffff")),
    }
    ds = load_manifest(write_lines(folder / "train.manifest", [normal_with_mask, _anomaly(mask=None)]))
    normal, anomaly = sorted(ds.samples, key=lambda s: s.label)
    assert normal.mask_path is None and read_label_masks(normal) == {}
    assert (anomaly.defect_type, anomaly.mask_path) == ("anomaly", None)
    assert ds.labels == ("anomaly",) and ds.colors == {"anomaly": PALETTE[0]} and not ds.is_segmentation


def test_classification_label_takes_a_free_colour(folder: Path) -> None:
    save_png(folder / "m.png", _colour_mask()[0])
    blue = _color_map(("0", "BACKGROUND", "#ffffff"), ("1", "dent", PALETTE[0]))
    ds = load_manifest(
        write_lines(folder / "train.manifest", [NORMAL, _anomaly(metadata=blue), _anomaly(mask=None)])
    )
    assert ds.colors == {"anomaly": PALETTE[1], "dent": PALETTE[0]}


def test_paths_absolute_and_file_uris(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    lines = [
        {**NORMAL, "source-ref": str(folder / "img" / "n.png")},
        {**NORMAL, "source-ref": (folder / "img" / "a.png").as_uri()},
    ]
    ds = load_manifest(write_lines(elsewhere / "train.manifest", lines))
    assert [s.image_path for s in ds.samples] == [folder / "img" / "a.png", folder / "img" / "n.png"]
    assert ds.root == elsewhere


def test_round_trip_binary_masks(bench: Path, tmp_path: Path) -> None:
    ds = load(bench / "grass")
    out = tmp_path / "lfv"
    for split in ("train", "test"):
        write_manifest(ds, out / f"{split}.manifest", split=split, mask_dir=tmp_path / "painted")
    back = load(out)
    assert back.layout == "manifest" and back.colors == ds.colors and back.labels == ds.labels
    assert len(back.samples) == len(ds.samples)
    for a, b in zip(ds.samples, back.samples, strict=True):
        assert (a.image_path, a.label, a.split, a.defect_type) == (
            b.image_path,
            b.label,
            b.split,
            b.defect_type,
        )
        assert (b.mask_path is None) == (a.mask_path is None)
        masks_a, masks_b = read_label_masks(a), read_label_masks(b)
        assert masks_a.keys() == masks_b.keys()
        assert all(np.array_equal(masks_a[k], masks_b[k]) for k in masks_a)
    first = json.loads((out / "test.manifest").read_text().splitlines()[-1])
    assert first["anomaly-label-metadata"]["type"] == "groundtruth/image-classification"
    assert first["anomaly-mask-ref-metadata"]["internal-color-map"]["0"]["class-name"] == "BACKGROUND"
    assert first["anomaly-mask-ref"].startswith("../painted/")


def test_round_trip_colour_masks_is_exact(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    save_png(folder / "m.png", _colour_mask()[0])
    ds = load_manifest(write_lines(folder / "train.manifest", [NORMAL, _anomaly()]))
    out = tmp_path_factory.mktemp("again") / "train.manifest"
    assert load_manifest(write_manifest(ds, out, split="train")).samples == ds.samples
    with pytest.raises(ValueError, match="split"):
        write_manifest(ds, out, split="valid")


MALFORMED = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"anomaly-label": 0}, "missing source-ref"),
    ({"source-ref": "img/n.png"}, "missing anomaly-label"),
    ({**NORMAL, "anomaly-label": 2}, "anomaly-label must be 0 or 1, got 2"),
    ({**NORMAL, "anomaly-label": "1"}, "anomaly-label must be 0 or 1, got '1'"),
    ({**NORMAL, "anomaly-label": True}, "anomaly-label must be 0 or 1, got True"),
    ({**NORMAL, "anomaly-label-metadata": "normal"}, "anomaly-label-metadata must be an object"),
    ({**NORMAL, "source-ref": ""}, "source-ref must be a non-empty string"),
    ({**NORMAL, "source-ref": "img/gone.png"}, r"source-ref 'img/gone.png': no such file .*img/gone.png"),
    ({**NORMAL, "source-ref": "s3://bucket/img/n.png"}, "S3 URI; lvkit cannot fetch S3"),
    ({**NORMAL, "source-ref": "https://example.com/n.png"}, "unsupported scheme 'https'"),
    ({**NORMAL, "source-ref": "file://server/share/n.png"}, "remote host"),
    (_anomaly(mask="s3://bucket/m.png"), "anomaly-mask-ref 's3://bucket/m.png' is an S3 URI"),
    (_anomaly(mask="gone.png"), r"anomaly-mask-ref 'gone.png': no such file"),
    (_anomaly(metadata=None), "internal-color-map object"),
    (_anomaly(metadata={"internal-color-map": {"0": "white"}}), "entry '0' must be an object"),
    (_anomaly(metadata=_color_map(("1", "", "#2ca02c"))), "entry '1' has no class-name"),
    (
        _anomaly(metadata={"internal-color-map": {"1": {"class-name": "dent"}}}),
        r"entry '1' \(dent\) has no hex-color",
    ),
    (_anomaly(metadata=_color_map(("1", "dent", "red"))), r"entry '1' \(dent\): expected a colour like"),
    (
        _anomaly(metadata=_color_map(("1", "dent", "#2ca02c"), ("2", "scratch", "#2CA02C"))),
        "gives #2ca02c to both",
    ),
    (
        _anomaly(metadata=_color_map(("0", "BACKGROUND", "#ffffff"))),
        "lists no anomaly label besides BACKGROUND",
    ),
]


@pytest.mark.parametrize(("line", "message"), MALFORMED, ids=[m[:24] for _, m in MALFORMED])
def test_malformed_line_names_file_and_line(folder: Path, line: Any, message: str) -> None:
    save_png(folder / "m.png", _colour_mask()[0])
    manifest = write_lines(folder / "bad.manifest", [NORMAL, "", "   ", line, NORMAL])
    with pytest.raises(DatasetError, match=rf"bad\.manifest, line 4: .*{message}"):
        load_manifest(manifest)


def test_label_colours_must_agree_across_lines(folder: Path) -> None:
    save_png(folder / "m.png", _colour_mask()[0])
    red = _color_map(("0", "BACKGROUND", "#ffffff"), ("1", "dent", "#d62728"))
    green = _color_map(("0", "BACKGROUND", "#ffffff"), ("1", "dent", "#2ca02c"))
    other = _color_map(("0", "BACKGROUND", "#ffffff"), ("1", "crack", "#D62728"))
    with pytest.raises(DatasetError, match="line 3: label 'dent' is #2ca02c here but #d62728"):
        load_manifest(
            write_lines(folder / "a.manifest", [NORMAL, _anomaly(metadata=red), _anomaly(metadata=green)])
        )
    with pytest.raises(DatasetError, match="line 3: colour #d62728 is 'crack' here but 'dent'"):
        load_manifest(
            write_lines(folder / "b.manifest", [NORMAL, _anomaly(metadata=red), _anomaly(metadata=other)])
        )


def test_train_manifest_needs_a_normal_image(folder: Path) -> None:
    save_png(folder / "m.png", _colour_mask()[0])
    manifest = write_lines(folder / "train.manifest", [_anomaly()])
    with pytest.raises(
        DatasetError, match=r"no normal images found under .*train\.manifest: training needs at least one"
    ):
        load_manifest(manifest)
    assert len(load_manifest(manifest, split="test").samples) == 1
    with pytest.raises(ValueError, match="split"):
        load_manifest(manifest, split="validation")
    with pytest.raises(DatasetError, match="cannot read manifest"):
        load_manifest(folder / "absent.manifest")
