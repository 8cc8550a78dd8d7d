"""The embedded benchmark: determinism, disjoint splits, exact masks, area bounds, file layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lvkit.datasets import load, load_manifest, read_label_masks
from lvkit.datasets._defects import AREA_RANGE, CHANNEL_RANGE
from lvkit.datasets._texture import CATEGORIES, resize, tint
from lvkit.datasets.synthetic import (
    DEFECT_COLORS,
    DEFECT_TYPES,
    SOURCE_SHA256,
    WINDOW,
    apply_defect,
    generate,
    main,
    pixel_hash,
    plan,
    render,
    render_clean,
    source,
)

from .conftest import SMALL

#: pixel_hash of generate(root, **SMALL): a change means numpy, scikit-image or the recipe drifted.
#: Update it (and datasets/README.md) only for a deliberate recipe change.
SMALL_HASH = "5756395829db00cc47e32d2f2230b10736f65f3cc5fc93ba4489407eeebdb2eb"
LOW, HIGH = (n / d for n, d in AREA_RANGE)


def test_pinned_pixel_hash(bench: Path) -> None:
    assert pixel_hash(bench) == SMALL_HASH


def test_generation_is_deterministic_and_regenerates_in_place(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {
        "categories": ("gravel",),
        "n_train": 2,
        "n_test_good": 1,
        "n_test_defect_per_type": 1,
    }
    a, b = generate(tmp_path / "a", **kwargs), generate(tmp_path / "b", **kwargs)
    assert pixel_hash(a) == pixel_hash(b)
    (a / "gravel" / "test" / "good" / "stale.png").write_bytes(b"left over")
    assert pixel_hash(generate(a, **kwargs)) == pixel_hash(b)  # stale files are removed


def test_smaller_counts_give_a_prefix_of_the_same_images() -> None:
    big = plan("grass", n_train=5, n_test_good=3, n_test_defect_per_type=4)
    small = plan("grass", n_train=2, n_test_good=1, n_test_defect_per_type=2)
    assert set(small) <= set(big)
    assert plan("grass", n_train=2, n_test_good=1, n_test_defect_per_type=2, seed=1) != small


def test_source_textures_are_the_recorded_ones() -> None:
    for category in CATEGORIES:
        assert hashlib.sha256(source(category).tobytes()).hexdigest() == SOURCE_SHA256[category]


def test_train_and_test_windows_are_disjoint_by_construction() -> None:
    for category in CATEGORIES:
        crops = plan(category)
        for crop in crops:
            start, stop = crop.rows
            assert (start >= 0 and stop <= 256) if crop.split == "train" else (start >= 256 and stop <= 512)
            assert 0 <= crop.left <= 512 - WINDOW and 0 <= crop.transform <= 7
        assert len({(c.split, c.defect_type, c.name) for c in crops}) == len(crops)


def test_written_images_are_the_rendered_crops(bench: Path) -> None:
    for crop in plan("brick", **{k: v for k, v in SMALL.items() if k != "image_size"}):
        image, mask = render(crop, image_size=SMALL["image_size"])
        kind = crop.defect_type or "good"
        on_disk = np.asarray(Image.open(bench / "brick" / crop.split / kind / f"{crop.name}.png"))
        assert np.array_equal(on_disk, image)
        if mask is not None:
            gt = np.asarray(Image.open(bench / "brick" / "ground_truth" / kind / f"{crop.name}_mask.png"))
            assert np.array_equal(gt > 0, mask) and set(np.unique(gt)) == {0, 255}


@pytest.mark.parametrize("image_size", [64, 97, 128, 300])
def test_mask_is_exactly_the_changed_pixels(image_size: int) -> None:
    texture = {c: source(c) for c in CATEGORIES}
    for category in CATEGORIES:
        for crop in plan(category, n_train=1, n_test_good=0, n_test_defect_per_type=3)[1:]:
            clean = render_clean(crop, image_size=image_size, texture=texture[category])
            lo, hi = CHANNEL_RANGE
            assert lo <= clean.min() and clean.max() <= hi
            image, mask = render(crop, image_size=image_size, texture=texture[category])
            assert mask is not None and mask.any()
            assert np.array_equal((image != clean).any(axis=2), mask)
            assert LOW <= mask.mean() <= HIGH


def test_area_fractions_within_bounds_on_disk(bench: Path) -> None:
    seen = set()
    for category in CATEGORIES:
        for sample in load(bench / category).split("test").samples:
            for label, mask in read_label_masks(sample).items():
                seen.add(label)
                assert LOW <= mask.mean() <= HIGH, (sample.image_path, mask.mean())
    assert seen == set(DEFECT_TYPES)


def test_apply_defect_on_extreme_images_still_marks_every_change() -> None:
    lo, hi = CHANNEL_RANGE
    for value in (lo, hi):
        clean = np.full((80, 80, 3), value, np.uint8)
        for defect in DEFECT_TYPES:
            for seed in range(5):
                image, mask = apply_defect(clean, defect, seed=seed)
                assert np.array_equal((image != clean).any(axis=2), mask)
    with pytest.raises(ValueError, match="defect_type"):
        apply_defect(clean, "crack", seed=0)
    with pytest.raises(ValueError, match="square uint8 RGB"):
        apply_defect(np.zeros((8, 9, 3), np.uint8), "hole", seed=0)


def test_resize_and_tint_are_exact_integer_maps() -> None:
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(resize(ramp, 16), ramp)
    half = resize(ramp, 8)
    assert half[0, 0] == (0 + 1 + 16 + 17 + 2) // 4  # 2x2 block mean, rounded half up
    dark, light = CATEGORIES["brick"]
    assert tint(np.array([[0, 255]], np.uint8), "brick").tolist() == [[list(dark), list(light)]]


def test_layout_and_manifests(bench: Path) -> None:
    folder = bench / "brick"
    recipe = json.loads((folder / "recipe.json").read_text())
    assert recipe["image_size"] == 64 and recipe["source"] == "skimage.data.brick()"
    test = load_manifest(folder / "test.manifest", split="test")
    assert test.colors == DEFECT_COLORS and test.labels == DEFECT_TYPES
    assert len(test.samples) == 2 + 3 * 2
    assert len(load_manifest(folder / "train.manifest").samples) == 4
    for sample in test.samples:
        assert (sample.mask_path is None) == (sample.label == 0)
        if sample.mask_path is not None:
            assert sample.defect_type is not None
            rgb = np.asarray(Image.open(sample.mask_path))
            assert rgb.shape == (64, 64, 3)
            assert sample.mask_colors == ((DEFECT_COLORS[sample.defect_type], sample.defect_type),)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 63}, "image_size"),
        ({"image_size": 513}, "image_size"),
        ({"image_size": 64.0}, "image_size"),
        ({"categories": ("marble",)}, "category"),
        ({"n_train": 0}, "n_train"),
        ({"n_test_good": -1}, "test counts"),
        ({"seed": -1}, "seed"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "brick").mkdir()
    (tmp_path / "brick" / "precious.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not written by lvkit"):
        generate(tmp_path, categories=("brick",), n_train=1, n_test_good=0, n_test_defect_per_type=0)
    assert (tmp_path / "brick" / "precious.txt").read_text() == "mine"


def test_progress_and_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[int, int]] = []
    generate(
        tmp_path / "p",
        categories=("grass",),
        n_train=2,
        n_test_good=1,
        n_test_defect_per_type=0,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert (
        main(
            [
                str(tmp_path / "cli"),
                "--categories",
                "grass",
                "--n-train",
                "1",
                "--n-test-good",
                "0",
                "--n-test-defect-per-type",
                "1",
                "--image-size",
                "64",
            ]
        )
        == 0
    )
    assert pixel_hash(tmp_path / "cli") in capsys.readouterr().out
