"""One cell of a model matrix: what it is (:class:`Cell`), running it (:func:`run_cell`), its files.

A cell trains one version (``lvkit.train``, into a store of its own: ``<home>/<cell id>``, made
afresh each time the cell runs), hosts it in process and scores it through the contract:
``lvkit.eval.run`` on the version's held-out images (:func:`~lvkit.eval.heldout`) over
``lvkit.client()``, after one untimed warm-up call. It returns everything as a plain dict
(what a Ray task sends back), and errors are part of it: a cell that fails returns its error's
type, message and traceback tail instead of raising.

Per image it keeps the answer (verdict, Confidence, anomaly score, latency) and, for a dataset
with masks, the pixel counts of the AnomalyMask against the true mask (every label together)
and the :func:`~lvkit.eval._maps.aupro_rows` of the raw anomaly map on a threshold grid chosen
from the cell's maps (:func:`~lvkit.eval._maps.aupro_thresholds`), so every metric of
``lvkit.eval.leaderboard`` can be recomputed on any resample of the images without the masks.

Files, under ``<results>/<cell id>/``: ``cell.json`` (the cell, its status, error, timings,
version and where it ran), ``images.csv`` (one row per held-out image), ``aupro.npz`` (rows and
thresholds) and ``done``, written last. The folder is written under a temporary name and
renamed into place, so a folder with ``done`` is complete and a crash leaves no half result.

Imports ``lvkit.shapes``/``lvkit.errors`` only at module level (through its siblings); lvkit's
training, client and datasets, pandas and torch are imported inside :func:`run_cell`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.eval._maps import aupro_rows, aupro_thresholds
from lvkit.eval.base import pair_stats
from lvkit.eval.leaderboard import FPR_LIMIT

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TRAIN_OPTIONS", "Cell", "read_result", "run_cell", "write_result"]

#: the ``lvkit.train`` options a cell may set
TRAIN_OPTIONS = ("backbone", "layers", "image_size", "model_kwargs", "epochs", "resize", "device")
PROJECT = "bench"
DONE = "done"
#: per-image columns kept in ``images.csv``
IMAGE_COLUMNS = ["path", "defect_type", "label", "is_anomalous", "confidence", "anomaly_score", "latency_s", "error",
                 "mask_inter", "mask_union", "mask_true", "mask_pred"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


@dataclass(frozen=True)
class Cell:
    """One model, one dataset, one seed: a version to train and score.

    Parameters
    ----------
    name : str
        The model's name in the tables (e.g. ``"patchcore"`` or ``"patchcore@384"``).
    model : str or None
        The anomalib model ``lvkit.train`` trains; None when ``trainer`` is given.
    dataset : str
        Path of the dataset (any layout ``lvkit.datasets.load`` reads).
    dataset_name : str
        Its name in the tables.
    seed : int
        Seeds the splits and the model (``lvkit.train(seed=...)``).
    options : mapping
        ``lvkit.train`` options (:data:`TRAIN_OPTIONS`).
    trainer : object, optional
        A :class:`lvkit.training.Trainer` to train with instead of ``model`` and ``options``.

    Examples
    --------
    >>> cell = Cell("padim", "padim", "/data/brick", "brick", 0, {"image_size": 64})
    >>> cell.id.startswith("brick--padim--seed0--"), len(cell.id.rsplit("--", 1)[1])
    (True, 8)
    """

    name: str
    model: str | None
    dataset: str
    dataset_name: str
    seed: int
    options: Mapping[str, Any] = field(default_factory=dict)
    trainer: Any = None

    def spec(self) -> dict[str, Any]:
        """The cell as JSON-able data (what its id hashes)."""
        trainer = None if self.trainer is None else f"{type(self.trainer).__module__}.{type(self.trainer).__qualname__}"
        return {"name": self.name, "model": self.model, "dataset": self.dataset, "dataset_name": self.dataset_name,
                "seed": self.seed, "options": dict(self.options), "trainer": trainer}

    @property
    def id(self) -> str:
        """``<dataset folder>--<name>--seed<seed>--<hash>``: readable, and a new id when what the cell
        trains changes (name, model, dataset path, seed, options, trainer), not its display name."""
        spec = {k: v for k, v in self.spec().items() if k != "dataset_name"}
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:8]
        return f"{_slug(Path(self.dataset).name)}--{_slug(self.name)}--seed{self.seed}--{digest}"


@contextmanager
def cpu_share(n: int) -> Iterator[None]:
    """OpenMP/MKL threads (inherited by the training child) and torch's threads set to ``n``; restored after."""
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    os.environ.update(dict.fromkeys(keys, str(n)))
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(torch_threads or n)


def run_cell(cell: Cell, *, home_root: str, num_cpus: float = 1, num_gpus: float = 0) -> dict[str, Any]:
    """Train and score one cell; a dict with ``status`` ``"ok"`` or ``"failed"`` (and ``error``), never raises.

    ``num_cpus`` sets the threads (:func:`cpu_share`); with ``num_gpus`` 0 a ``device="auto"``
    cell trains and serves on the CPU.
    """
    out: dict[str, Any] = {"id": cell.id, "cell": cell.spec(), "status": "ok", "error": None, "pid": os.getpid(),
                           "host": socket.gethostname(), "started_at": time.time(), "fit_s": None, "eval_s": None}
    home = Path(home_root) / cell.id
    try:
        with cpu_share(max(1, int(num_cpus))):
            shutil.rmtree(home, ignore_errors=True)  # a rerun starts from nothing
            options = dict(cell.options)
            if not num_gpus and options.get("device", "auto") == "auto":
                options["device"] = "cpu"
            out.update(home=str(home), project=PROJECT)
            t0 = time.perf_counter()
            version = _train(cell, home, options)
            out.update(version=version, fit_s=time.perf_counter() - t0)
            t0 = time.perf_counter()
            out.update(_evaluate(cell, home, version, device=options.get("device", "auto")))
            out["eval_s"] = time.perf_counter() - t0
    except Exception as exc:  # recorded in the result: a failing cell must not stop the matrix
        out.update(status="failed", error=error_record(exc))
    out["finished_at"] = time.time()
    return out


def error_record(exc: BaseException) -> dict[str, str]:
    """``{"type", "message", "traceback"}`` (the traceback's last 30 lines)."""
    lines = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).splitlines()
    return {"type": type(exc).__name__, "message": str(exc), "traceback": "\n".join(lines[-30:])}


def _train(cell: Cell, home: Path, options: dict[str, Any]) -> str:
    from lvkit.training import train

    if cell.trainer is not None:
        return train(PROJECT, cell.dataset, seed=cell.seed, home=home, progress=False, trainer=cell.trainer)
    return train(PROJECT, cell.dataset, model=str(cell.model), seed=cell.seed, home=home, progress=False, **options)


def _evaluate(cell: Cell, home: Path, version: str, *, device: str) -> dict[str, Any]:
    """Host the version in process, score its held-out images; the per-image rows and AU-PRO rows."""
    from lvkit.client import client
    from lvkit.datasets import load
    from lvkit.eval.run import detect_one, heldout, run
    from lvkit.shapes import SUFFIX_TYPES

    lv = client(home, device=device)
    try:
        lv.start_model(ProjectName=PROJECT, ModelVersion=version, MinInferenceUnits=1)
        ds = load(cell.dataset)
        test = heldout(lv, ds.samples, project=PROJECT, version=version)
        first = Path(test[0].image_path)
        detect_one(lv, first.read_bytes(), SUFFIX_TYPES.get(first.suffix.lower(), "image/png"), project=PROJECT,
                   version=version)  # warm-up, untimed
        try:
            table = run(lv, test, project=PROJECT, version=version, raw=True, progress=False, on_error="ignore")
        except ValueError:  # a backend without raw maps: no AU-PRO
            table = run(lv, test, project=PROJECT, version=version, progress=False, on_error="ignore")
        rows, grid = _pixel_columns(table, test, segmentation=ds.is_segmentation)
        lv.stop_model(ProjectName=PROJECT, ModelVersion=version)
    finally:
        lv.service.close()
    images = table.reindex(columns=IMAGE_COLUMNS)
    return {"images": json.loads(images.to_json(orient="records")), "n_images": len(images),
            "n_failed_images": int(images["error"].notna().sum()), "aupro_rows": rows, "aupro_thresholds": grid}


def _pixel_columns(table: pd.DataFrame, samples: list[Any], *, segmentation: bool) -> tuple[Any, Any]:
    """Add ``mask_*`` counts to ``table`` (in place); AU-PRO rows and grid of its raw maps (or None, None)."""
    from lvkit.datasets import read_label_masks, union_mask
    from lvkit.eval.report_masks import predicted_label_masks

    if not segmentation:
        return None, None
    by_path = {str(s.image_path): s for s in samples}
    ok = table["error"].isna()
    has_masks = "anomaly_mask" in table.columns and any(isinstance(v, bytes) for v in table["anomaly_mask"])
    has_maps = "anomaly_map" in table.columns
    stats = np.full((len(table), 4), np.nan)
    truths, maps, where = [], [], []
    for i, (_, r) in enumerate(table.iterrows()):
        if not ok.iloc[i]:
            continue
        sample = by_path[r["path"]]
        if has_masks:
            png = r["anomaly_mask"] if isinstance(r["anomaly_mask"], bytes) else None
            pred = predicted_label_masks(png, r["anomalies"] if isinstance(r["anomalies"], dict) else {})
            shape = next(iter(pred.values())).shape if pred else _image_shape(sample)
            stats[i] = pair_stats(union_mask(read_label_masks(sample, shape=shape), shape), union_mask(pred, shape))
        amap = r["anomaly_map"] if has_maps else None
        if isinstance(amap, np.ndarray) and amap.ndim == 2:
            truths.append(union_mask(read_label_masks(sample, shape=amap.shape), amap.shape))
            maps.append(amap.astype(np.float64))
            where.append(i)
    if has_masks:
        for j, name in enumerate(("mask_inter", "mask_union", "mask_true", "mask_pred")):
            table[name] = stats[:, j]
    if not maps:
        return None, None
    grid = aupro_thresholds(truths, maps, fpr_limit=FPR_LIMIT)
    rows = np.zeros((len(table), 2 + 2 * grid.size))
    rows[where] = aupro_rows(truths, maps, thresholds=grid)
    return rows, grid


def _image_shape(sample: Any) -> tuple[int, int]:
    from lvkit.datasets import image_shape

    return image_shape(sample.image_path)


# --- files ------------------------------------------------------------------------------------------


def write_result(results: Path, payload: Mapping[str, Any]) -> Path:
    """Write one cell's result to ``results/<id>/`` atomically (temporary folder, ``done``, rename)."""
    import pandas as pd

    results.mkdir(parents=True, exist_ok=True)
    cell_id = str(payload["id"])
    target = results / cell_id
    tmp = Path(tempfile.mkdtemp(prefix=f".{cell_id}.", dir=results))
    meta = {k: v for k, v in payload.items() if k not in ("images", "aupro_rows", "aupro_thresholds")}
    (tmp / "cell.json").write_text(json.dumps(meta, indent=2, default=str))
    if payload.get("images") is not None:
        pd.DataFrame(payload["images"]).reindex(columns=IMAGE_COLUMNS).to_csv(tmp / "images.csv", index=False)
    if payload.get("aupro_rows") is not None:
        np.savez(tmp / "aupro.npz", rows=payload["aupro_rows"], thresholds=payload["aupro_thresholds"])
    (tmp / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
    old = None
    if target.exists():
        old = results / f".{cell_id}.old-{os.getpid()}-{time.monotonic_ns()}"
        target.rename(old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_result(folder: Path) -> dict[str, Any] | None:
    """A finished cell's ``cell.json`` plus ``images`` (DataFrame or None) and ``aupro_rows``; None if not done."""
    import pandas as pd

    if not (folder / DONE).is_file():
        return None
    meta: dict[str, Any] = json.loads((folder / "cell.json").read_text())
    csv = folder / "images.csv"
    meta["images"] = pd.read_csv(csv, dtype={"path": str, "defect_type": str, "error": str}) if csv.is_file() else None
    npz = folder / "aupro.npz"
    if npz.is_file():
        with np.load(npz) as z:
            meta["aupro_rows"], meta["aupro_thresholds"] = z["rows"], z["thresholds"]
    else:
        meta["aupro_rows"] = meta["aupro_thresholds"] = None
    return meta
