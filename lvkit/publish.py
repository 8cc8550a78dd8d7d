# mypy: disallow-untyped-calls=False
# (nbformat, nbconvert and IPython ship without type hints)
"""``lvkit report``: the notebooks executed at full size, rendered as HTML, indexed with their headline numbers.

Each notebook of ``notebooks/`` runs with papermill, which injects ``SMOKE`` and
``REPORT_DIR`` (and ``CLEANUP=True`` where the notebook has that parameter: a report keeps no
state) after the notebook's ``parameters`` cell; nbconvert renders the executed copy to
``<out>/<name>.html`` (figures embedded; the source of the cell tagged ``test`` left out); the
notebook itself records its headline numbers with :func:`save_headline` in
``<out>/<name>.json``; and ``<out>/index.md`` lists every report with those numbers, its
warnings, the machine (:func:`lvkit.eval.fingerprint`, taken inside the kernels) and when each
ran; a notebook re-run alone (``--only``) updates its own entry. Every notebook is seeded, so
two runs give the same headline numbers; the ``timings`` (latencies, throughput, training
time) are the exception and are listed apart.

Also here: :func:`sample_size_warning`, the warning every report shows when it is measured on
few images, and :func:`clean_notebook`, which strips outputs and normalises metadata the way
``notebooks/`` is committed (``tests/test_notebooks.py`` checks it).

(This module was ``lvkit.report``; it is not :mod:`lvkit.eval.report`, which builds the
evaluation tables.) papermill, nbconvert and IPython (the ``notebooks`` extra) are imported
inside the functions.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "KERNELSPEC",
    "MIN_IMAGES_PER_CLASS",
    "TEST_TAG",
    "clean_notebook",
    "find_notebooks",
    "machine_independent",
    "render_index",
    "run_reports",
    "sample_size_warning",
    "save_headline",
    "show_warning",
    "write_index",
]

#: the kernelspec every committed notebook carries
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}

#: the tag of a notebook's last cell, its assertions: collapsed in JupyterLab, left out of the HTML reports
TEST_TAG = "test"

#: A report warns when it is measured on fewer normal, or fewer anomalous, images than this.
#: Why 30: a model that makes no mistake on ``n`` images may still have an error rate up to
#: ``1 - 0.05 ** (1 / n)`` (the exact 95% upper bound; about ``3 / n``, the "rule of three"):
#: 10% at 30 images, 26% at 10. And a calibration error estimated from a few images per
#: confidence bin can be 0 by chance: on 10 normal and 10 anomalous images a "temperature"
#: recalibrator was chosen with ECE 0 and then served Confidence 1.0.
MIN_IMAGES_PER_CLASS = 30


def _plain(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars to Python numbers, mappings and sequences recursively."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def save_headline(report_dir: str | os.PathLike[str] | None, name: str, headline: Mapping[str, Any], *,
                  timings: Mapping[str, float] | None = None,
                  parameters: Mapping[str, Any] | None = None,
                  warnings: Iterable[str | None] = (),
                  tables: Mapping[str, str] | None = None) -> Path | None:
    """Record a notebook's headline numbers for ``lvkit report``: ``<report_dir>/<name>.json``.

    A notebook calls this with its ``REPORT_DIR`` parameter; when that is empty (the notebook
    runs in JupyterLab or under pytest) nothing is written.

    Parameters
    ----------
    report_dir : path-like or None
        Where ``lvkit report`` collects the numbers; empty or None writes nothing.
    name : str
        The notebook's name without ``.ipynb``.
    headline : mapping of str to number, str or bool
        The seeded numbers: the same on every run.
    timings : mapping of str to float, optional
        Numbers that vary run to run (latencies, throughput, seconds); listed apart.
    parameters : mapping, optional
        The settings the numbers were made with.
    warnings : iterable of str or None
        What a reader must know about the numbers (:func:`sample_size_warning`); None entries
        are skipped. ``index.md`` shows each under the report's numbers.
    tables : mapping of str to str, optional
        Markdown tables (a leaderboard) by title; ``index.md`` shows each after the numbers.

    Returns
    -------
    Path or None
        The file written.

    Examples
    --------
    >>> import tempfile
    >>> path = save_headline(tempfile.mkdtemp(), "01_quickstart", {"image AUROC": 0.98}, timings={"call (ms)": 41.0})
    >>> data = json.loads(path.read_text())
    >>> data["headline"], data["timings"], sorted(data["fingerprint"])[:2]
    ({'image AUROC': 0.98}, {'call (ms)': 41.0}, ['anomalib', 'cores'])
    >>> save_headline("", "01_quickstart", {"image AUROC": 0.98}) is None
    True
    """
    if not report_dir:
        return None
    from lvkit.eval.throughput import fingerprint

    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"notebook": name, "headline": _plain(headline), "timings": _plain(timings or {}),
            "parameters": _plain(parameters or {}), "warnings": [str(w) for w in warnings if w],
            "tables": {str(k): str(v) for k, v in (tables or {}).items()}, "fingerprint": fingerprint()}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def sample_size_warning(samples: Any, *, minimum: int = MIN_IMAGES_PER_CLASS, what: str = "held-out test images",
                        show: bool = True) -> str | None:
    """The warning a report shows when it is measured on few images, or None when there are enough.

    Fewer than ``minimum`` normal or fewer than ``minimum`` anomalous images make every rate,
    interval and calibration error of the report rough; see :data:`MIN_IMAGES_PER_CLASS` for
    why 30. A notebook calls this on the images it scores, right where it chooses them, and
    passes the result to :func:`save_headline` (``warnings=``).

    Parameters
    ----------
    samples : Dataset, iterable of Sample, or DataFrame
        The scored images: records with a ``label`` (0 normal, 1 anomalous), or a run table
        (:func:`lvkit.eval.run`) with a ``label`` column.
    minimum : int, default :data:`MIN_IMAGES_PER_CLASS`
        The fewest images of each class that need no warning.
    what : str, default "held-out test images"
        What the images are, for the message.
    show : bool, default True
        Also display the warning (:func:`show_warning`) when there is one.

    Returns
    -------
    str or None

    Examples
    --------
    >>> from types import SimpleNamespace as S
    >>> print(sample_size_warning([S(label=0)] * 10 + [S(label=1)] * 40, show=False))
    Small sample: 10 normal and 40 anomalous held-out test images (fewer than 30 of each). ...
    >>> sample_size_warning([S(label=0)] * 30 + [S(label=1)] * 30, show=False) is None
    True
    """
    if hasattr(samples, "columns"):  # a run table
        labels = [int(v) for v in samples["label"]]
    else:
        labels = [int(s.label) for s in getattr(samples, "samples", samples)]
    n_anomalous = sum(labels)
    n_normal = len(labels) - n_anomalous
    if min(n_normal, n_anomalous) >= minimum:
        return None
    smaller = max(1, min(n_normal, n_anomalous))
    text = (f"Small sample: {n_normal} normal and {n_anomalous} anomalous {what} (fewer than {minimum} of each). "
            f"Read every number of this report as a rough indication: no mistake on {smaller} images still "
            f"allows an error rate of up to {1 - 0.05 ** (1 / smaller):.0%} (95% bound), intervals are wide, and a "
            "calibration error measured on so few images can be 0 by chance (a recalibrator chosen on it may "
            "serve Confidence 1.0). Use more test images for numbers to rely on.")
    if show:
        show_warning(text)
    return text


class _Warning:
    """A warning as a notebook displays it: a coloured box in HTML, the text elsewhere."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Warning: {self.text}"

    def _repr_html_(self) -> str:
        return ('<div class="lvkit-warning" role="alert" style="border-left: 6px solid #e0a800; '
                'background-color: #fff8e1; color: #4d3800; padding: 8px 12px; margin: 4px 0;">'
                f"<strong>&#9888; Warning:</strong> {html.escape(self.text)}</div>")


def show_warning(text: str | None) -> None:
    """Display ``text`` as a warning box in Jupyter (and in the HTML report); print it elsewhere.

    None shows nothing. Not :func:`warnings.warn`: that would be a red stderr box, once per session.
    """
    if not text:
        return
    shell = sys.modules.get("IPython")
    if shell is not None and shell.get_ipython() is not None:
        from IPython.display import display

        display(_Warning(text))
    else:
        print(f"Warning: {text}")


def find_notebooks(folder: str | os.PathLike[str], only: Sequence[str] | None = None) -> list[Path]:
    """The ``*.ipynb`` of ``folder`` in name order; ``only`` keeps those whose name starts with one of them.

    Raises
    ------
    FileNotFoundError
        If nothing matches.
    """
    paths = sorted(Path(folder).glob("*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.stem.startswith(o) or p.name == o for o in only)]
    if not paths:
        raise FileNotFoundError(f"no notebooks in {folder}" + (f" matching {list(only)}" if only else ""))
    return paths


def clean_notebook(path: str | os.PathLike[str]) -> bool:
    """Strip a notebook as ``notebooks/`` is committed; returns whether the file changed.

    Outputs and execution counts are removed, cell metadata is cut to its ``tags``, the
    notebook metadata to :data:`KERNELSPEC`, ``language_info.name`` and an ``lvkit`` entry
    (see ``notebooks/conftest.py``). A cell tagged :data:`TEST_TAG` (the assertions) gets
    ``jupyter.source_hidden``, so that JupyterLab shows it collapsed.
    """
    import nbformat

    path = Path(path)
    before = path.read_text(encoding="utf-8")
    nb = nbformat.reads(before, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags")
        meta: dict[str, Any] = {"tags": list(tags)} if tags else {}
        if tags and TEST_TAG in tags:
            meta["jupyter"] = {"source_hidden": True}
        cell["metadata"] = nbformat.NotebookNode(meta)
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    meta = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    if "lvkit" in nb.metadata:
        meta["lvkit"] = nb.metadata["lvkit"]
    nb.metadata = nbformat.NotebookNode(meta)
    after = str(nbformat.writes(nb)) + "\n"
    if after != before:
        path.write_text(after, encoding="utf-8")
    return after != before


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"`{value}`" if isinstance(value, str) else str(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e6):
        return str(int(value))
    return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.3g}"


def render_index(results: Sequence[Mapping[str, Any]], *, fingerprint: Mapping[str, Any]) -> str:
    """The markdown of ``index.md``.

    Parameters
    ----------
    results : sequence of mapping
        Per notebook, in order: ``name`` and ``data``, what :func:`save_headline` and
        :func:`run_reports` wrote to ``<name>.json`` (``headline``, ``timings``,
        ``parameters``, ``seconds``, ``error``, ``ran_at``, ``smoke``), or None when the
        notebook has not run.
    fingerprint : mapping
        The machine (:func:`lvkit.eval.fingerprint`).

    Examples
    --------
    >>> md = render_index([{"name": "01_quickstart", "data": {"headline": {"image AUROC": 0.98765},
    ...                     "seconds": 12.0, "error": None, "ran_at": "2025-01-02T03:04:05+00:00"}},
    ...                    {"name": "02_calibration", "data": None}],
    ...                   fingerprint={"cpu": "Some CPU", "cores": 2, "gpu": None})
    >>> "| image AUROC | 0.9877 |" in md, "| [01_quickstart](01_quickstart.html) | ok | 2025-01-02 03:04 | 0.2 |" in md
    (True, True)
    >>> "| 02_calibration | not run |" in md
    True
    >>> "> **Warning:** Small sample" in render_index([{"name": "x", "data": {"warnings": ["Small sample"]}}],
    ...                                               fingerprint={})
    True
    >>> md = render_index([{"name": "x", "data": {"headline": {"a": 1}, "tables": {"Leaderboard": "| m |\\n| p |"}}}],
    ...                   fingerprint={})
    >>> "**Leaderboard**\\n\\n| m |\\n| p |" in md
    True
    """
    fp = dict(fingerprint)
    machine = f"{fp.get('cpu')}, {fp.get('cores')} cores, GPU {fp.get('gpu') or 'none'}"
    versions = ", ".join(f"{k} {fp[k]}" for k in ("python", "torch", "anomalib", "numpy", "lvkit") if fp.get(k))
    ran = [r["data"] for r in results if r.get("data")]
    dates = sorted(str(d["ran_at"])[:16].replace("T", " ") for d in ran if d.get("ran_at"))
    when = "-" if not dates else f"{dates[0]} UTC" if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]} UTC"
    minutes = sum(float(d.get("seconds", 0.0)) for d in ran) / 60
    smoke = [r["name"] for r in results if r.get("data") and r["data"].get("smoke")]
    lines = [
        "# lvkit reports",
        "",
        f"Made by `lvkit report`: {when}, {minutes:.1f} minutes of notebooks, "
        + (f"**SMOKE sizes** for {', '.join(smoke)} (the tiny CI benchmark; not the published numbers)." if smoke
           else "full size (each notebook's own parameters, listed below)."),
        "",
        f"- Machine: {machine}; {fp.get('platform', '')}",
        f"- Versions: {versions}",
        "- Data: the bundled synthetic benchmark (`lvkit.datasets.generate`), generated by each notebook.",
        "- Reproducible: every notebook is seeded; running `lvkit report` again gives the same headline",
        "  numbers. The timings vary from run to run and machine to machine.",
        "- Remake: `lvkit report --out reports` from the repository root (`--only 02` for one notebook,",
        "  `--smoke` for the CI sizes). The notebooks are in `notebooks/`; each HTML report is one executed",
        "  notebook.",
        "",
        "| Report | Status | Ran (UTC) | Minutes |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        data = r.get("data")
        if not data:
            lines.append(f"| {r['name']} | not run | | |")
            continue
        status = "ok" if data.get("error") is None else "**failed**"
        ran_at = str(data.get("ran_at", ""))[:16].replace("T", " ")
        took = float(data.get("seconds", 0.0)) / 60
        lines.append(f"| [{r['name']}]({r['name']}.html) | {status} | {ran_at} | {took:.1f} |")
    for r in results:
        data = r.get("data")
        if not data:
            continue
        lines += ["", f"## [{r['name']}]({r['name']}.html)", ""]
        if data.get("error") is not None:
            lines += [f"Failed: `{str(data['error']).splitlines()[0][:300]}`", ""]
        for warning in data.get("warnings") or ():
            lines += [f"> **Warning:** {warning}", ""]
        if not data.get("headline"):
            lines.append("No headline numbers recorded.")
            continue
        lines += ["| Headline | Value |", "| --- | --- |"]
        lines += [f"| {k} | {_format(v)} |" for k, v in data["headline"].items()]
        if data.get("timings"):
            lines += ["", "| Timing (varies run to run) | Value |", "| --- | --- |"]
            lines += [f"| {k} | {_format(v)} |" for k, v in data["timings"].items()]
        for title, table in (data.get("tables") or {}).items():
            lines += ["", f"**{title}**", "", str(table).strip()]
        if data.get("parameters"):
            params = ", ".join(f"`{k}={v!r}`" for k, v in data["parameters"].items())
            lines += ["", f"Parameters: {params}"]
    return "\n".join(lines) + "\n"


def machine_independent(text: str, *, out: str | os.PathLike[str]) -> str:
    """``text`` without this machine's paths: the report folder becomes its name, the temporary
    folder ``$TMPDIR``, the working folder ``.`` and the home folder ``~``.

    >>> import tempfile
    >>> machine_independent(f"{tempfile.gettempdir()}/lvkit-01-x1/a.png in /srv/r", out="/srv/r")
    '$TMPDIR/lvkit-01-x1/a.png in r'
    """
    replacements = {str(Path(out).resolve()): Path(out).resolve().name, tempfile.gettempdir(): "$TMPDIR",
                    str(Path.cwd()): ".", str(Path.home()): "~"}
    for path in sorted(replacements, key=len, reverse=True):  # the longest first: a report folder under cwd
        if len(path) > 1:
            text = re.sub(re.escape(path) + r"(?=[/\s\"'<&,:)\]]|$)", replacements[path].replace("\\", "\\\\"), text)
    return text


def _html(nb: Any) -> str:
    """The HTML of an executed notebook; the source of the cell tagged :data:`TEST_TAG` is left out."""
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = {TEST_TAG}
    body, _ = HTMLExporter(config=config, template_name="lab").from_notebook_node(nb)
    return str(body)


def run_reports(
    out: str | os.PathLike[str] = "reports",
    *,
    notebooks: str | os.PathLike[str] = "notebooks",
    only: Sequence[str] | None = None,
    smoke: bool = False,
    log: Callable[[str], None] = print,
    progress_bar: bool = False,
    kernel_name: str = "python3",
) -> list[dict[str, Any]]:
    """Execute the notebooks, write ``<out>/<name>.html``, ``<out>/<name>.json`` and ``<out>/index.md``.

    A notebook that fails is rendered as far as it ran, marked failed in the index, and the
    run goes on with the next one.

    Parameters
    ----------
    out : path-like, default "reports"
        The output folder (created).
    notebooks : path-like, default "notebooks"
        Where the notebooks are.
    only : sequence of str, optional
        Names or name prefixes (``"02"``) of the notebooks to run; default all.
    smoke : bool, default False
        Run at the CI sizes (``SMOKE=True``). Without it, ``LVKIT_SMOKE`` is removed from the
        kernels' environment so that the notebooks run at full size.
    log : callable, default print
        Receives one line as each notebook starts and ends.
    progress_bar : bool, default False
        papermill's per-cell progress bar.
    kernel_name : str, default "python3"
        The Jupyter kernel (``python3`` is the running interpreter's).

    Returns
    -------
    list of dict
        Per notebook run: ``name``, ``seconds``, ``error`` (None or the message), ``data``
        (the recorded headline, plus ``seconds``, ``error``, ``ran_at`` and ``smoke``) and
        ``html`` (the path).
    """
    import nbformat
    import papermill

    paths = find_notebooks(notebooks, only)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    saved_env = os.environ.pop("LVKIT_SMOKE", None) if not smoke else None
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="lvkit-report-") as tmp:
            for i, path in enumerate(paths, start=1):
                name = path.stem
                json_path = folder / f"{name}.json"
                json_path.unlink(missing_ok=True)  # never index stale numbers
                log(f"[{i}/{len(paths)}] {name}: running ({'smoke' if smoke else 'full size'})")
                ran_at, t0 = datetime.now(timezone.utc), time.perf_counter()
                executed = Path(tmp) / path.name
                error = None
                parameters: dict[str, Any] = {"SMOKE": smoke, "REPORT_DIR": str(folder.resolve())}
                if "CLEANUP" in papermill.inspect_notebook(str(path)):
                    parameters["CLEANUP"] = True  # a report keeps no data, state or model
                try:
                    papermill.execute_notebook(
                        str(path), str(executed), parameters=parameters,
                        kernel_name=kernel_name, progress_bar=progress_bar, cwd=str(path.parent))
                except Exception as exc:  # noqa: BLE001  (reported in the index; the next notebook still runs)
                    error = f"{type(exc).__name__}: {exc}"
                seconds = time.perf_counter() - t0
                html = folder / f"{name}.html"
                if executed.exists():
                    html.write_text(machine_independent(_html(nbformat.read(executed, as_version=4)), out=folder),
                                    encoding="utf-8")
                data = json.loads(json_path.read_text(encoding="utf-8")) if json_path.exists() else {"notebook": name}
                data |= {"seconds": seconds, "error": error, "ran_at": ran_at.isoformat(timespec="seconds"),
                         "smoke": smoke}
                json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
                results.append({"name": name, "seconds": seconds, "error": error, "data": data, "html": html})
                log(f"[{i}/{len(paths)}] {name}: {'FAILED' if error else 'done'} in {seconds:.0f} s -> {html}")
    finally:
        if saved_env is not None:
            os.environ["LVKIT_SMOKE"] = saved_env
    write_index(folder, notebooks=notebooks)
    log(f"wrote {folder / 'index.md'} ({len(results)} run, {sum(r['error'] is not None for r in results)} failed)")
    return results


def write_index(out: str | os.PathLike[str] = "reports", *, notebooks: str | os.PathLike[str] = "notebooks") -> Path:
    """(Re)write ``<out>/index.md`` from the ``<out>/<name>.json`` of every notebook in ``notebooks``.

    A notebook run on its own (``--only``) updates its entry; the others keep theirs.
    """
    folder = Path(out)
    results: list[dict[str, Any]] = []
    for path in find_notebooks(notebooks):
        json_path = folder / f"{path.stem}.json"
        data = json.loads(json_path.read_text(encoding="utf-8")) if json_path.exists() else None
        results.append({"name": path.stem, "data": data})
    prints: list[dict[str, Any]] = [r["data"]["fingerprint"] for r in results
                                     if r["data"] and r["data"].get("fingerprint")]
    if prints:  # taken inside the kernels, where torch is loaded: a GPU is named if there is one
        fingerprint = next((fp for fp in prints if fp.get("gpu")), prints[0])
    else:
        from lvkit.eval.throughput import fingerprint as machine

        fingerprint = machine()
    index = folder / "index.md"
    index.write_text(render_index(results, fingerprint=fingerprint), encoding="utf-8")
    return index
