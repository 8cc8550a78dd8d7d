"""The embedded benchmark: seeded, pixel-deterministic texture datasets with exact defect masks.

Each category is a crop series from one CC0 texture bundled with scikit-image (``brick``,
``gravel``, ``grass``; 512x512 grey), tinted to a fixed per-category colour ramp. Training crops
come from the top half of the texture and test crops from the bottom half, so no test pixel was
ever seen in training. Defective test images get one ``scratch``, ``hole`` or ``stain``
(:func:`lvkit.datasets._defects.apply_defect`) and a pixel-exact mask. The generator writes the
MVTec AD layout plus Lookout for Vision ``train.manifest``/``test.manifest`` (colour masks),
so every loader in :mod:`lvkit.datasets` reads it. ``datasets/README.md`` documents the recipe,
the licences and the expected :func:`pixel_hash`.

Determinism: randomness comes only from ``np.random.RandomState`` (frozen by NEP 19), one
stream per (seed, category, split/defect folder), so asking for fewer images gives a prefix of
the same images; geometry and colour are integer arithmetic. Run ``python -m
lvkit.datasets.synthetic OUTDIR`` to regenerate.

This module imports numpy, PIL, scikit-image (its data only, through ``_texture.source``), the
standard library, ``lvkit.errors`` and its sibling dataset modules only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from lvkit.datasets._defects import DEFECT_TYPES, apply_defect, defect_mask
from lvkit.datasets._plan import WINDOW, Crop, check_size, plan, render, render_clean
from lvkit.datasets._records import IMAGE_SUFFIXES, PALETTE
from lvkit.datasets._texture import CATEGORIES, SOURCE_SHA256, check_category, source
from lvkit.datasets.folder import load_mvtec
from lvkit.datasets.manifest import write_manifest

__all__ = [
    "apply_defect",
    "CATEGORIES",
    "Crop",
    "DEFECT_COLORS",
    "defect_mask",
    "DEFECT_TYPES",
    "generate",
    "pixel_hash",
    "plan",
    "render",
    "render_clean",
    "source",
    "SOURCE_SHA256",
    "WINDOW",
]

#: each defect type's colour in the manifests' colour masks: PALETTE in sorted-type order
DEFECT_COLORS: dict[str, str] = {t: PALETTE[i] for i, t in enumerate(sorted(DEFECT_TYPES))}
_MARKER = "recipe.json"
_GENERATED = ("train", "test", "ground_truth", "masks", "train.manifest", "test.manifest")


def _claim(folder: Path) -> None:
    """Make ``folder`` ready for a fresh generation, refusing folders the generator did not write."""
    if folder.is_dir() and any(folder.iterdir()):
        if not (folder / _MARKER).is_file():
            raise FileExistsError(
                f"{folder} exists, is not empty and was not written by lvkit's generator; "
                "remove it or pick another root"
            )
        for name in _GENERATED:
            target = folder / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def generate(
    root: str | os.PathLike[str],
    *,
    categories: Sequence[str] = ("brick", "gravel", "grass"),
    n_train: int = 40,
    n_test_good: int = 24,
    n_test_defect_per_type: int = 12,
    image_size: int = 128,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the synthetic benchmark: per category an MVTec AD folder plus LFV manifests.

    For each category, ``root/<category>/`` gets ``train/good/``, ``test/good/``,
    ``test/<defect>/`` and ``ground_truth/<defect>/<stem>_mask.png`` (binary 0/255 masks), then
    ``train.manifest`` and ``test.manifest`` whose defective lines point at colour masks under
    ``masks/`` (white background, :data:`DEFECT_COLORS`), and ``recipe.json`` with the settings.
    A category folder this function wrote before is regenerated in place; any other non-empty
    folder is refused.

    Parameters
    ----------
    root : str or path-like
        Output folder (created).
    categories : sequence of str, default ("brick", "gravel", "grass")
        Which textures; see :data:`CATEGORIES`.
    n_train : int, default 40
        Normal training images per category (at least 1).
    n_test_good : int, default 24
        Normal test images per category.
    n_test_defect_per_type : int, default 12
        Test images of each defect type per category.
    image_size : int, default 128
        Image side in pixels, 64 to 512.
    seed : int, default 0
        Benchmark seed.
    progress : callable (done, total) -> None, optional
        Called after each image is written.

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    ValueError
        For an unknown category, a count out of range, or ``image_size`` outside 64..512.
    FileExistsError
        If a category folder exists, is not empty and was not written by this function.

    See Also
    --------
    pixel_hash : proves two generations equal.

    Examples
    --------
    >>> import tempfile
    >>> from lvkit.datasets import load
    >>> root = generate(tempfile.mkdtemp(), categories=("brick",), n_train=3, n_test_good=1,
    ...                 n_test_defect_per_type=1, image_size=64)
    >>> sorted(p.name for p in (root / "brick").iterdir())
    ['ground_truth', 'masks', 'recipe.json', 'test', 'test.manifest', 'train', 'train.manifest']
    >>> len(load(root / "brick").split("test").samples)
    4
    """
    check_size(image_size)
    for category in categories:
        check_category(category)
    root = Path(root)
    plans = {
        c: plan(
            c,
            n_train=n_train,
            n_test_good=n_test_good,
            n_test_defect_per_type=n_test_defect_per_type,
            seed=seed,
        )
        for c in categories
    }
    total, done = sum(len(p) for p in plans.values()), 0
    for category, crops in plans.items():
        folder = root / category
        _claim(folder)
        recipe = {
            "generator": "lvkit.datasets.synthetic",
            "category": category,
            "source": f"skimage.data.{category}()",
            "seed": seed,
            "n_train": n_train,
            "n_test_good": n_test_good,
            "n_test_defect_per_type": n_test_defect_per_type,
            "image_size": image_size,
            "window": WINDOW,
        }
        (folder / _MARKER).write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
        texture = source(category)
        for crop in crops:
            image, mask = render(crop, image_size=image_size, texture=texture)
            kind = crop.defect_type or "good"
            _save(image, folder / crop.split / kind / f"{crop.name}.png")
            if mask is not None:
                _save(mask.astype(np.uint8) * 255, folder / "ground_truth" / kind / f"{crop.name}_mask.png")
            done += 1
            if progress is not None:
                progress(done, total)
        dataset = load_mvtec(folder)
        for split in ("train", "test"):
            write_manifest(dataset, folder / f"{split}.manifest", split=split, mask_dir=folder / "masks")
    return root


def _save(pixels: npt.NDArray[np.uint8], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def pixel_hash(root: str | os.PathLike[str]) -> str:
    """SHA-256 over the decoded pixels of every image and mask under ``root``.

    Files are taken in sorted relative-path order; each contributes its relative path, PIL mode,
    size and raw pixel bytes. File bytes are not hashed, so PNG encoder differences do not count.

    Parameters
    ----------
    root : str or path-like
        A folder, e.g. the output of :func:`generate`.

    Returns
    -------
    str
        64 hex digits.

    Examples
    --------
    >>> import tempfile
    >>> small = dict(categories=["gravel"], n_train=1, n_test_good=0, n_test_defect_per_type=1, image_size=64)
    >>> pixel_hash(generate(tempfile.mkdtemp(), **small)) == pixel_hash(generate(tempfile.mkdtemp(), **small))
    True
    """
    base = Path(root)
    files = sorted(
        (p.relative_to(base).as_posix(), p)
        for p in base.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    digest = hashlib.sha256()
    for relative, path in files:
        with Image.open(path) as img:
            digest.update(f"{relative}\0{img.mode}\0{img.width}x{img.height}\0".encode())
            digest.update(img.tobytes())
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m lvkit.datasets.synthetic OUTDIR [--image-size N] [--seed S] ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m lvkit.datasets.synthetic", description="Write the synthetic anomaly benchmark."
    )
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=list(CATEGORIES))
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-test-good", type=int, default=24)
    parser.add_argument("--n-test-defect-per-type", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = generate(
        args.outdir,
        categories=args.categories,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_test_defect_per_type=args.n_test_defect_per_type,
        image_size=args.image_size,
        seed=args.seed,
    )
    print(f"wrote {root} in {time.perf_counter() - start:.1f} s; pixel hash {pixel_hash(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
