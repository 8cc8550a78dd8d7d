"""MVTec and folder loaders, layout detection, records and binary masks, on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lvkit.datasets import (
    PALETTE,
    Dataset,
    Sample,
    assign_colors,
    load,
    load_folder,
    load_mvtec,
    read_label_masks,
    write_manifest,
)
from lvkit.errors import DatasetError

from .conftest import gray, save_png


def test_palette_is_distinct_lowercase_and_never_black_or_white() -> None:
    assert len(PALETTE) >= 20 and len(set(PALETTE)) == len(PALETTE)
    assert all(c == c.lower() and len(c) == 7 and c.startswith("#") for c in PALETTE)
    assert "#000000" not in PALETTE and "#ffffff" not in PALETTE
    many = assign_colors([f"label{i:03d}" for i in range(100)])
    assert len(set(many.values())) == 100 and not {"#000000", "#ffffff"} & set(many.values())


def test_mvtec_bench(bench: Path) -> None:
    ds = load(bench / "brick")
    assert ds.layout == "mvtec" and ds.root == bench / "brick"
    assert ds.labels == ("hole", "scratch", "stain") and ds.is_segmentation
    assert ds.colors == {"hole": PALETTE[0], "scratch": PALETTE[1], "stain": PALETTE[2]}
    train, test = ds.split("train"), ds.split("test")
    assert len(train.samples) == 4 and all(s.label == 0 and s.mask_path is None for s in train.samples)
    assert sorted(s.defect_type or "good" for s in test.samples) == ["good"] * 2 + sorted(
        ["hole", "scratch", "stain"] * 2
    )
    keys = [(s.split, s.image_path.as_posix()) for s in ds.samples]
    assert keys == sorted(keys)
    for sample in test.samples:
        masks = read_label_masks(sample)
        if sample.label == 0:
            assert masks == {}
        else:
            assert sample.defect_type is not None
            gt = bench / "brick" / "ground_truth" / sample.defect_type
            assert sample.mask_path == gt / f"{sample.image_path.stem}_mask.png"
            assert list(masks) == [sample.defect_type] and masks[sample.defect_type].shape == (64, 64)


def test_mvtec_suffixes_and_missing_masks(tmp_path: Path) -> None:
    save_png(tmp_path / "train" / "good" / "a.PNG", gray())
    save_png(tmp_path / "train" / "good" / "b.jpeg", gray())
    (tmp_path / "train" / "good" / "notes.txt").write_text("not an image")
    save_png(tmp_path / "train" / "good" / ".hidden.png", gray())
    save_png(tmp_path / "test" / "crack" / "c.JPG", gray())
    save_png(tmp_path / "test" / "crack" / "d.png", gray())
    mask = np.zeros((64, 64), np.uint8)
    mask[5:9, 5:9] = 1  # any nonzero value is the defect
    save_png(tmp_path / "ground_truth" / "crack" / "d_mask.png", mask)
    ds = load_mvtec(tmp_path)
    assert [s.image_path.name for s in ds.samples] == ["c.JPG", "d.png", "a.PNG", "b.jpeg"]
    c, d = ds.samples[:2]
    assert (c.label, c.defect_type, c.mask_path) == (1, "crack", None)
    assert int(read_label_masks(d)["crack"].sum()) == 16
    assert ds.labels == ("crack",) and ds.is_segmentation


def test_mvtec_without_normal_training_images(tmp_path: Path) -> None:
    (tmp_path / "train" / "good").mkdir(parents=True)
    save_png(tmp_path / "test" / "crack" / "c.png", gray())
    with pytest.raises(DatasetError, match=r"no normal images found under .*train.*good.*at least one"):
        load(tmp_path)


def test_folder_flat_with_masks(tmp_path: Path) -> None:
    for name in ("n1.png", "n2.jpg"):
        save_png(tmp_path / "normal" / name, gray())
    for name in ("a1.png", "a2.jpg", "a3.png"):
        save_png(tmp_path / "anomaly" / name, gray(200))
    mask = np.zeros((64, 64), np.uint8)
    mask[:4] = 255
    save_png(tmp_path / "anomaly" / "masks" / "a1.png", mask)
    save_png(tmp_path / "masks" / "a2.png", mask)  # the fallback folder beside anomaly/
    save_png(tmp_path / "masks" / "a1.png", np.zeros((64, 64), np.uint8))  # anomaly/masks/ wins
    ds = load(tmp_path)
    assert ds.layout == "folder" and {s.split for s in ds.samples} == {"train"}
    assert ds.labels == ("anomaly",) and ds.colors == {"anomaly": PALETTE[0]}
    by_name = {s.image_path.name: s for s in ds.samples}
    assert by_name["a1.png"].mask_path == tmp_path / "anomaly" / "masks" / "a1.png"
    assert by_name["a2.jpg"].mask_path == tmp_path / "masks" / "a2.png"
    assert by_name["a3.png"].mask_path is None and by_name["a3.png"].label == 1
    assert int(read_label_masks(by_name["a1.png"])["anomaly"].sum()) == 4 * 64
    assert by_name["n2.jpg"].label == 0


def test_folder_with_train_and_test(tmp_path: Path) -> None:
    save_png(tmp_path / "train" / "normal" / "n.png", gray())
    save_png(tmp_path / "test" / "normal" / "n.png", gray())
    save_png(tmp_path / "test" / "anomaly" / "a.png", gray())
    ds = load_folder(tmp_path)
    assert [(s.split, s.label) for s in ds.samples] == [("test", 1), ("test", 0), ("train", 0)]
    assert not ds.is_segmentation


@pytest.mark.parametrize("where", [".", "train"])
def test_folder_without_normal_images(tmp_path: Path, where: str) -> None:
    save_png(tmp_path / where / "anomaly" / "a.png", gray())
    with pytest.raises(DatasetError, match=r"no normal images found under .*training needs at least one"):
        load(tmp_path)


def test_detection_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset"):
        load(tmp_path / "missing")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match=r"MVTec AD .*normal/ and anomaly/.*manifest"):
        load(tmp_path / "stuff")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"\.manifest or \.jsonl"):
        load(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="layout"):
        load(tmp_path, layout="coco")
    with pytest.raises(DatasetError, match="train/good"):
        load(tmp_path / "stuff", layout="mvtec")


def test_folder_of_manifests_loads_both_splits(bench: Path, tmp_path: Path) -> None:
    ds = load(bench / "gravel")
    for split in ("train", "test"):
        write_manifest(ds, tmp_path / f"{split}.manifest", split=split)
    both = load(tmp_path)
    assert both.layout == "manifest" and both.root == tmp_path
    assert [len(both.split(s).samples) for s in ("train", "test")] == [4, 8]
    assert [s.image_path for s in both.samples] == [s.image_path for s in ds.samples]
    assert len(load(bench / "gravel", layout="manifest").samples) == 12
    assert {s.split for s in load(tmp_path / "test.manifest").samples} == {"test"}
    (tmp_path / "train.manifest").unlink()
    assert {s.split for s in load(tmp_path).samples} == {"test"}  # no train split, nothing to train on


def test_records_validate_and_split() -> None:
    with pytest.raises(ValueError, match="label 0 or 1"):
        Sample(Path("a.png"), 2, "train", None, None)
    with pytest.raises(ValueError, match="split"):
        Sample(Path("a.png"), 0, "validation", None, None)
    with pytest.raises(ValueError, match="normal sample"):
        Sample(Path("a.png"), 0, "train", "hole", None)
    with pytest.raises(ValueError, match="defect type"):
        Sample(Path("a.png"), 1, "test", None, None)
    ds = Dataset(Path("."), (), "folder", (), {})
    with pytest.raises(ValueError, match="split"):
        ds.split("val")


def test_mask_size_must_match_image(tmp_path: Path) -> None:
    image = save_png(tmp_path / "i.png", gray(size=64))
    mask = save_png(tmp_path / "m.png", np.zeros((32, 64), np.uint8))
    sample = Sample(image, 1, "test", "crack", mask)
    with pytest.raises(DatasetError, match="must have its image's size"):
        read_label_masks(sample)
    assert read_label_masks(sample, shape=(32, 64))["crack"].shape == (32, 64)
    broken = Sample(image, 1, "test", "crack", tmp_path / "nothing.png")
    with pytest.raises(DatasetError, match="cannot read mask"):
        read_label_masks(broken)


@pytest.mark.parametrize("mode", ["L", "P", "RGB", "RGBA", "1"])
def test_binary_masks_in_any_storage(tmp_path: Path, mode: str) -> None:
    image = save_png(tmp_path / "i.png", gray())
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[10:20, 30:40] = 255
    mask = save_png(tmp_path / "m.png", pixels, mode=mode)
    got = read_label_masks(Sample(image, 1, "test", "dent", mask))["dent"]
    assert got.dtype == np.bool_ and int(got.sum()) == 100 and got[10:20, 30:40].all()
