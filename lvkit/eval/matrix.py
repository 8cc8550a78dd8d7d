"""``matrix``: models x datasets x seeds, one trained version per cell, on Ray; leaderboards of the results.

Each cell (``lvkit.eval.cells``) trains a version into its own store, scores it through the
contract on its held-out images and is stored under ``<results>/<cell id>/`` as soon as it
ends, so a rerun with the same arguments skips the cells that finished (after a crash, it
resumes) and runs again those that failed (``retry_failed``). A cell's id hashes what it
trains (model name and options, dataset path, seed), so changing an option makes new cells and
never reuses old results. The metrics and their intervals are ``lvkit.eval.leaderboard``'s.

On Ray (``backend="ray"``, the default; ``pip install 'lvkit[bench]'``) each cell is a task
with ``resources`` (``num_cpus``, ``num_gpus``), in a fresh worker process, with its
OpenMP/MKL/torch threads set to its CPU share; with no GPU requested it trains and serves on
the CPU. Without a running Ray, ``ray.init`` starts one on this machine (all its CPUs, no
dashboard, quiet logs) and leaves it running for the next matrix, as Ray's own libraries do
(it stops with the interpreter, or :func:`stop_ray`); a matrix whose cells all finished
before starts nothing. ``address`` joins an existing cluster instead: its workers need lvkit
installed and the dataset paths readable; results come back to this process, each version
stays in its worker's ``home``.

Measured with Ray 2.60 on a 2-core machine: ``ray.init`` takes 7.5 s on idle cores, 21-28 s
while other work keeps both busy, and there it once exceeded the 30 s Ray allows a node to
register (:func:`start_ray` retries). Padim and DFM at 64 px on the tiny benchmark: 30 s for
both cells side by side including the start. Cells that run side by side share the machine,
so ``latency_ms`` and ``fit_s`` compare only cells run with the same concurrency (set
``num_cpus`` to the machine's CPUs to run one cell at a time). ``backend="local"`` runs the
cells one after another in this process, without Ray (debugging).

Imports ``lvkit.errors`` and ``lvkit.eval`` siblings at module level; Ray, pandas and tqdm
inside functions.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvkit.errors import BackendUnavailableError
from lvkit.eval.cells import TRAIN_OPTIONS, Cell, error_record, read_result, run_cell, write_result
from lvkit.eval.leaderboard import METRICS, CellArrays, cell_report, leaderboard_frame

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MatrixResult", "matrix", "stop_ray"]

DEFAULT_RESOURCES = {"num_cpus": 1, "num_gpus": 0}


def _dataset_names(paths: Sequence[str]) -> dict[str, str]:
    """Short names: the folder name, or more of the path where two datasets share it."""
    names = {p: Path(p).name for p in paths}
    depth = 1
    while len(set(names.values())) < len(names) and depth < 8:
        depth += 1
        names = {p: "/".join(Path(p).parts[-depth:]) for p in paths}
    return names


def make_cells(models: Sequence[Any], datasets: Sequence[str | os.PathLike[str]], seeds: Sequence[int], *,
               options: Mapping[str, Any] | None = None) -> list[Cell]:
    """The cells of a matrix, dataset by dataset, model by model, seed by seed (see :func:`matrix`)."""
    shared = dict(options or {})
    _check_options(shared, "options")
    paths = [str(Path(d).expanduser().resolve()) for d in datasets]
    names = _dataset_names(paths)
    entries: list[tuple[str, str | None, dict[str, Any], Any]] = []
    for m in models:
        if isinstance(m, str):
            entries.append((m, m, {}, None))
        elif isinstance(m, Mapping):
            own = {k: v for k, v in m.items() if k not in ("name", "model")}
            _check_options(own, f"models entry {dict(m)!r}")
            if "model" not in m:
                raise ValueError(f"models: expected a 'model' key in {dict(m)!r}")
            entries.append((str(m.get("name", m["model"])), str(m["model"]), own, None))
        elif hasattr(m, "build") and hasattr(m, "check"):
            entries.append((str(getattr(m, "name", type(m).__name__)), None, {}, m))
        else:
            raise ValueError(f"models: expected model names, mappings or Trainers, got {m!r}")
    if len({e[0] for e in entries}) < len(entries):
        raise ValueError(f"models: expected distinct names, got {[e[0] for e in entries]!r} (give each a 'name')")
    if not entries or not paths or not seeds:
        raise ValueError("expected at least one model, one dataset and one seed")
    return [Cell(name, model, p, names[p], int(s), {**shared, **own}, trainer)
            for p in paths for name, model, own, trainer in entries for s in seeds]


def _check_options(options: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise ValueError(f"{where}: expected lvkit.train options among {list(TRAIN_OPTIONS)}, got {unknown}")


def matrix(
    models: Sequence[Any],
    datasets: Sequence[str | os.PathLike[str]],
    seeds: Sequence[int],
    *,
    results: str | os.PathLike[str],
    home: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
    resources: Mapping[str, float] | None = None,
    address: str | None = None,
    backend: str = "ray",
    retry_failed: bool = True,
    progress: bool = True,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
) -> MatrixResult:
    """Train and score every model on every dataset with every seed; resumable, on Ray.

    Parameters
    ----------
    models : sequence
        Model names (``"padim"``), mappings with ``model``, an optional ``name`` and their own
        ``lvkit.train`` options (``{"name": "patchcore@384", "model": "patchcore",
        "image_size": 384}``), or :class:`lvkit.training.Trainer` objects.
    datasets : sequence of path-like
        Dataset folders or manifests (``lvkit.datasets.load``).
    seeds : sequence of int
        Each cell's ``lvkit.train(seed=...)``: its splits and its model's initialisation.
    results : path-like
        Where each cell's result is stored (``<results>/<cell id>/``).
    home : path-like, optional
        Where each cell's store goes (``<home>/<cell id>``); default ``<results>/homes``.
    options : mapping, optional
        ``lvkit.train`` options for every cell (``backbone``, ``layers``, ``image_size``,
        ``model_kwargs``, ``epochs``, ``resize``, ``device``); a model's own options win.
    resources : mapping, optional
        Each cell's Ray request, default ``{"num_cpus": 1, "num_gpus": 0}``.
    address : str, optional
        A Ray cluster to join (``"auto"``, ``"ray://host:10001"``); default: this machine.
    backend : {"ray", "local"}, default "ray"
        ``"local"`` runs the cells one by one in this process.
    retry_failed : bool, default True
        Run again the cells whose stored result is a failure.
    progress : bool, default True
        One progress bar across cells.
    n_resamples, confidence_level
        Bootstrap settings of :attr:`MatrixResult.cells` and :meth:`MatrixResult.leaderboard`.

    Returns
    -------
    MatrixResult

    Raises
    ------
    ValueError
        If an option is unknown or Ray cannot satisfy ``resources``.
    BackendUnavailableError
        If Ray is not installed (``pip install 'lvkit[bench]'``).

    Examples
    --------
    >>> result = matrix(["padim", "dfm"], ["data/brick"], [0, 1], results="bench",
    ...                 options={"image_size": 128})                           # doctest: +SKIP
    >>> result.leaderboard()[["auroc", "auroc_low", "auroc_high", "auroc_worse"]]  # doctest: +SKIP
    """
    from tqdm import tqdm

    if backend not in ("ray", "local"):
        raise ValueError(f"backend: expected 'ray' or 'local', got {backend!r}")
    res = {**DEFAULT_RESOURCES, **dict(resources or {})}
    if set(res) - set(DEFAULT_RESOURCES):
        raise ValueError(f"resources: expected num_cpus and num_gpus, got {sorted(res)}")
    cells = make_cells(models, datasets, seeds, options=options)
    out = Path(results).expanduser().resolve()
    home_root = str(Path(home).expanduser().resolve()) if home is not None else str(out / "homes")
    out.mkdir(parents=True, exist_ok=True)
    todo = []
    for cell in cells:
        done = read_status(out / cell.id)
        if done is None or (done == "failed" and retry_failed):
            todo.append(cell)
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="matrix", unit="cell", disable=not progress)
    failed = 0

    def finished(payload: dict[str, Any]) -> None:
        nonlocal failed
        write_result(out, payload)
        failed += payload["status"] != "ok"
        bar.set_postfix(failed=failed, refresh=False)
        bar.update(1)

    try:
        if backend == "local":
            for cell in todo:
                finished(run_cell(cell, home_root=home_root, **res))
        elif todo:
            _run_on_ray(todo, home_root=home_root, resources=res, address=address, finished=finished)
    finally:
        bar.close()
    return MatrixResult(out, cells, ran=[c.id for c in todo], n_resamples=n_resamples,
                        confidence_level=confidence_level)


def read_status(folder: Path) -> str | None:
    """``"ok"``/``"failed"`` of a finished cell's folder, None if it has no finished result."""
    if not (folder / "done").is_file():
        return None
    return str(json.loads((folder / "cell.json").read_text()).get("status"))


def ray_module() -> Any:
    """``ray``, or :class:`~lvkit.errors.BackendUnavailableError` naming the extra."""
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError(f"the matrix runs its cells on Ray: pip install 'lvkit[bench]' ({exc}); "
                                      "or backend='local' to run them one by one in this process") from exc
    return ray


def start_ray(address: str | None, *, attempts: int = 3) -> bool:
    """``ray.init`` unless Ray is up (True if this call started it); a local start is retried.

    Ray gives a starting node a fixed 30 s to register (``ray._private.node``, not
    configurable); on a loaded 2-core machine its Python agents can take longer to import, and
    ``ray.init`` fails with "The current node timed out during startup" (measured: twice in a
    row while other test runs kept both cores busy). A retry, after ``ray.shutdown()`` cleans
    up the half-started node, finds the files in the page cache and starts faster.
    """
    ray = ray_module()
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is not None:
        ray.init(address=address, **quiet)
        return True
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=cpus, include_dashboard=False, **quiet)
            return True
        except Exception as exc:  # the startup timeout is a bare Exception
            ray.shutdown()
            if attempt == attempts or "timed out during startup" not in str(exc):
                raise
            logging.getLogger(__name__).warning("Ray did not start (%s); trying again (%d of %d)", exc,
                                                attempt + 1, attempts)
    return True


def stop_ray() -> bool:
    """``ray.shutdown()`` if Ray is up in this process (True if it was): the local Ray that
    :func:`matrix` started stops; joined to a cluster (``address``), this process disconnects.

    A Jupyter kernel that exits with Ray up is killed with it, and Ray's workers print a
    SIGTERM stack dump into the kernel's log; a notebook calls this at its end instead.
    Without Ray installed there is nothing to stop (False).

    Examples
    --------
    >>> stop_ray()  # nothing started in this process
    False
    """
    try:
        import ray
    except ImportError:
        return False
    if not ray.is_initialized():
        return False
    ray.shutdown()
    return True


def _run_on_ray(todo: list[Cell], *, home_root: str, resources: Mapping[str, float], address: str | None,
                finished: Callable[[dict[str, Any]], None]) -> None:
    """Each cell a Ray task (a fresh worker each); results handed to ``finished`` as they come."""
    ray = ray_module()
    start_ray(address)
    have = ray.cluster_resources()
    short = {k: v for k, v in resources.items() if v > have.get({"num_cpus": "CPU", "num_gpus": "GPU"}[k], 0.0)}
    if short and address is None:
        raise ValueError(f"resources: each cell asks for {dict(resources)}, more than this machine's Ray offers "
                         f"({ {k: v for k, v in have.items() if k in ('CPU', 'GPU')} })")
    task = ray.remote(num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"], max_retries=0,
                      max_calls=1)(run_cell)
    pending = {task.remote(c, home_root=home_root, **resources): c for c in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    payload = ray.get(ref)
                except Exception as exc:  # the worker died (memory, a signal): the cell failed
                    payload = {"id": cell.id, "cell": cell.spec(), "status": "failed", "error": error_record(exc)}
                finished(payload)
    except BaseException:  # interrupted: the cells still running are stopped, the finished ones are stored
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


class MatrixResult:
    """The stored results of a matrix's cells: per-cell metrics, per-image answers, leaderboards.

    Parameters
    ----------
    results : path-like
        The results folder.
    cells : sequence of Cell, optional
        The cells to read; default every finished cell in ``results``.
    ran : sequence of str, optional
        Ids of the cells the matrix call ran (the others were finished before).
    n_resamples, confidence_level, seed
        Bootstrap settings of :attr:`cells` and the default ones of :meth:`leaderboard`.

    Examples
    --------
    >>> result = MatrixResult("bench")                                   # doctest: +SKIP
    >>> result.runs[["model", "seed", "status", "fit_s"]]                # doctest: +SKIP
    """

    def __init__(self, results: str | os.PathLike[str], cells: Iterable[Cell] | None = None, *,
                 ran: Sequence[str] = (), n_resamples: int = 1000, confidence_level: float = 0.95,
                 seed: int = 0) -> None:
        self.results = Path(results)
        if cells is None:
            ids = sorted(p.name for p in self.results.iterdir() if (p / "done").is_file() and p.is_dir())
        else:
            cells = list(cells)
            ids = [c.id for c in cells]
        #: (dataset, model, seed) of each cell given: its names in the tables (else the stored ones)
        self._names = {c.id: (c.dataset_name, c.name, c.seed) for c in cells or ()}
        self.ids = list(dict.fromkeys(ids))
        self.ran = list(ran)
        self.n_resamples, self.confidence_level, self.seed = n_resamples, confidence_level, seed

    def __repr__(self) -> str:
        return f"MatrixResult({str(self.results)!r}: {len(self.ids)} cells, {len(self.failed)} failed)"

    @cached_property
    def _stored(self) -> dict[str, dict[str, Any]]:
        out = {}
        for i in self.ids:
            r = read_result(self.results / i)
            if r is not None:
                out[i] = r
        return out

    def _label(self, i: str) -> tuple[str, str, int]:
        c = self._stored[i]["cell"]
        return self._names.get(i, (c["dataset_name"], c["name"], int(c["seed"])))

    @property
    def skipped(self) -> list[str]:
        """Ids of the cells that were finished before the call (not run again)."""
        return [i for i in self.ids if i not in self.ran]

    @property
    def failed(self) -> list[str]:
        """Ids of the cells whose result is a failure."""
        return [i for i, r in self._stored.items() if r["status"] != "ok"]

    @cached_property
    def runs(self) -> pd.DataFrame:
        """One row per cell: ``cell_id, dataset, model, seed, status, error, fit_s, eval_s, n_images,
        version, home, pid, host, ran``."""
        import pandas as pd

        rows: list[dict[str, Any]] = []
        for i in self.ids:
            r = self._stored.get(i)
            if r is None:
                rows.append({"cell_id": i, "status": "missing"})
                continue
            (dataset, model, seed), err = self._label(i), r.get("error") or {}
            rows.append({"cell_id": i, "dataset": dataset, "model": model, "seed": seed,
                         "status": r["status"], "error": f"{err['type']}: {err['message']}" if err else None,
                         "fit_s": r.get("fit_s"), "eval_s": r.get("eval_s"), "n_images": r.get("n_images"),
                         "version": r.get("version"), "home": r.get("home"), "pid": r.get("pid"),
                         "host": r.get("host"), "ran": i in self.ran})
        return pd.DataFrame(rows)

    def _arrays(self, i: str) -> CellArrays | None:
        r = self._stored.get(i)
        if r is None or r["status"] != "ok" or r.get("images") is None:
            return None
        return CellArrays.from_frame(r["images"], aupro_rows=r["aupro_rows"], fit_s=float(r["fit_s"]))

    @cached_property
    def cells(self) -> pd.DataFrame:
        """Tidy: one row per cell and metric, ``cell_id, dataset, model, seed, metric, value, ci_low,
        ci_high, n_images, status, error`` (a failed cell's values are nan)."""
        import pandas as pd

        rows = []
        for run in self.runs.to_dict("records"):
            arrays = self._arrays(run["cell_id"])
            report = (cell_report(arrays, n_resamples=self.n_resamples, confidence_level=self.confidence_level,
                                  seed=self.seed) if arrays is not None else {})
            for metric in METRICS:
                value, low, high = report.get(metric, (float("nan"),) * 3)
                rows.append({"cell_id": run["cell_id"], "dataset": run.get("dataset"), "model": run.get("model"),
                             "seed": run.get("seed"), "metric": metric, "value": value, "ci_low": low,
                             "ci_high": high, "n_images": run.get("n_images"), "status": run["status"],
                             "error": run.get("error")})
        return pd.DataFrame(rows)

    @cached_property
    def images(self) -> pd.DataFrame:
        """Every finished cell's per-image answers with ``cell_id, dataset, model, seed`` and each image's
        mask ``iou`` (nan where both masks are empty or no mask was served)."""
        import numpy as np
        import pandas as pd

        parts = []
        for i, r in self._stored.items():
            if r["status"] == "ok" and r.get("images") is not None:
                df = r["images"].copy()
                dataset, model, seed = self._label(i)
                df.insert(0, "seed", seed)
                df.insert(0, "model", model)
                df.insert(0, "dataset", dataset)
                df.insert(0, "cell_id", i)
                union = df["mask_union"].astype(float)
                df["iou"] = np.where(union > 0, df["mask_inter"].astype(float) / union.where(union > 0, 1.0), np.nan)
                parts.append(df)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def leaderboard(self, *, n_resamples: int | None = None, confidence_level: float | None = None,
                    seed: int | None = None, sort_by: str = "auroc") -> pd.DataFrame:
        """One row per dataset and model over the finished cells: :func:`lvkit.eval.leaderboard.leaderboard_frame`."""
        runs: dict[str, dict[str, dict[int, CellArrays]]] = {}
        for i in self._stored:
            arrays = self._arrays(i)
            if arrays is not None:
                dataset, model, seed = self._label(i)
                runs.setdefault(dataset, {}).setdefault(model, {})[seed] = arrays
        return leaderboard_frame(runs, n_resamples=n_resamples or self.n_resamples,
                                 confidence_level=confidence_level or self.confidence_level,
                                 seed=self.seed if seed is None else seed, sort_by=sort_by)
