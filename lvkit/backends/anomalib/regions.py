"""Which anomaly label a predicted region is: a nearest-centroid classifier on region shape and colour.

The anomaly map says *where* an image is anomalous, not *what* the anomaly is. A model trained
on data with several named anomaly types (scratch, hole, stain, ...) labels each connected
predicted region with the type whose training regions it most resembles. Features per region:
log of its area fraction, eccentricity, solidity, and its mean colour minus the image's median
colour (RGB, in [−1, 1]). They are standardised with the training regions' mean and spread and
the region takes the label of the nearest class centroid. With one label, every region takes it.

This is deliberately simple (it needs only a handful of labelled regions per type) and is stored
as plain JSON with the model version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from skimage.measure import label as connected_components
from skimage.measure import regionprops

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["RegionLabeler", "predicted_regions", "region_features"]


def region_features(rgb: npt.NDArray[np.uint8], region_mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """The feature vector (6,) of one connected region of an image."""
    props = regionprops(region_mask.astype(np.uint8))[0]
    area = float(region_mask.sum()) / region_mask.size
    median = np.median(rgb.reshape(-1, 3), axis=0)
    mean = rgb[region_mask].mean(axis=0)
    return np.array([np.log(area + 1e-9), props.eccentricity, props.solidity,
                     *((mean - median) / 255.0)], dtype=np.float64)


def predicted_regions(pred_mask: npt.NDArray[np.bool_],
                      true_masks: dict[str, npt.NDArray[np.bool_]]) -> dict[str, npt.NDArray[np.bool_]]:
    """Label the connected regions of a predicted mask by the true label they overlap most.

    Regions that overlap no true anomaly are left out. Fitting the labeller on these (rather
    than on the true regions) trains it on what it will see: the model's own, blurrier regions.
    """
    out: dict[str, npt.NDArray[np.bool_]] = {}
    comps = connected_components(pred_mask, connectivity=2)
    for k in range(1, int(comps.max()) + 1):
        region = comps == k
        overlap = {name: int((region & m).sum()) for name, m in true_masks.items()}
        if overlap and max(overlap.values()) > 0:
            name = max(overlap, key=lambda n: overlap[n])
            out[name] = out.get(name, np.zeros_like(pred_mask)) | region
    return out


@dataclass
class RegionLabeler:
    """Nearest-centroid labelling of predicted regions (see module docstring)."""

    labels: list[str]
    centroids: npt.NDArray[np.float64]  # (n_labels, 6), standardised
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]

    @classmethod
    def fit(
        cls,
        labels: Sequence[str],
        examples: Sequence[tuple[npt.NDArray[np.uint8], dict[str, npt.NDArray[np.bool_]]]],
    ) -> RegionLabeler:
        """Fit on ``(rgb, {label: bool mask})`` examples; every connected component is a region."""
        feats: list[npt.NDArray[np.float64]] = []
        ys: list[int] = []
        for rgb, masks in examples:
            for name, mask in masks.items():
                if name not in labels:
                    continue
                comps = connected_components(mask, connectivity=2)
                for k in range(1, int(comps.max()) + 1):
                    feats.append(region_features(rgb, comps == k))
                    ys.append(list(labels).index(name))
        n = len(labels)
        if not feats:
            return cls(list(labels), np.zeros((n, 6)), np.zeros(6), np.ones(6))
        x, y = np.stack(feats), np.asarray(ys)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-6] = 1.0
        z = (x - mean) / scale
        # a label without examples gets an unreachable centroid
        centroids = np.stack([z[y == k].mean(axis=0) if np.any(y == k) else np.full(6, 1e6) for k in range(n)])
        return cls(list(labels), centroids, mean, scale)

    def label_map(self, rgb: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
        """Label each connected region of the binary ``mask``: 0 background, k = labels[k-1]."""
        out = np.zeros(mask.shape, np.int64)
        if not mask.any():
            return out
        if len(self.labels) == 1:
            out[mask] = 1
            return out
        comps = connected_components(mask, connectivity=2)
        for k in range(1, int(comps.max()) + 1):
            region = comps == k
            z = (region_features(rgb, region) - self.mean) / self.scale
            out[region] = int(np.argmin(((self.centroids - z) ** 2).sum(axis=1))) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "centroids": self.centroids.tolist(), "mean": self.mean.tolist(),
                "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegionLabeler:
        return cls(list(d["labels"]), np.asarray(d["centroids"]), np.asarray(d["mean"]), np.asarray(d["scale"]))
