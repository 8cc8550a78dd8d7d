"""``lvkit bench CONFIG``: a model matrix from a YAML (or JSON) file, its leaderboard printed and saved.

The config's keys (paths relative to the config's folder)::

    models: [padim, dfm, {name: patchcore@384, model: patchcore, image_size: 384}]
    datasets: [data/brick]          # dataset folders or manifests
    benchmark:                      # and/or the bundled benchmark, into <results>/data-<hash of these>
      categories: [brick]           # (lvkit.datasets.generate's arguments)
      image_size: 64
    seeds: [0, 1, 2]                # default [0]
    options: {image_size: 128}      # lvkit.train options of every cell
    resources: {num_cpus: 1, num_gpus: 0}
    results: bench-results          # default <config name>-results beside the config
    home: null                      # default <results>/homes
    address: null                   # a Ray cluster; default Ray on this machine
    backend: ray                    # or local
    n_resamples: 1000
    confidence_level: 0.95

The results folder gets ``leaderboard.csv``, ``leaderboard.md`` and ``cells.csv`` (one row per
cell and metric). The exit status is 1 when a cell failed (each is listed on stderr, its
error in ``<results>/<cell id>/cell.json``), after everything is written.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from lvkit.errors import BackendUnavailableError

__all__ = ["bench", "benchmark_root", "load_config"]

KEYS = {"models", "datasets", "benchmark", "seeds", "options", "resources", "results", "home", "address", "backend",
        "n_resamples", "confidence_level"}


def load_config(path: str | Path) -> dict[str, Any]:
    """The config as a dict with paths resolved against its folder; ``click.UsageError`` if malformed."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        try:
            import yaml
        except ImportError as exc:
            raise BackendUnavailableError(f"reading a YAML config needs PyYAML: pip install 'lvkit[bench]' ({exc})") \
                from exc
        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise click.UsageError(f"{path}: expected a mapping of {sorted(KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise click.UsageError(f"{path}: unknown keys {unknown}; expected some of {sorted(KEYS)}")
    if not data.get("models") or not (data.get("datasets") or data.get("benchmark")):
        raise click.UsageError(f"{path}: expected 'models' and 'datasets' (or 'benchmark')")
    base = path.resolve().parent
    data["datasets"] = [str(base / Path(d).expanduser()) for d in data.get("datasets") or []]
    data["results"] = str(base / Path(data["results"]).expanduser()) if data.get("results") else str(
        base / f"{path.stem}-results")
    if data.get("home"):
        data["home"] = str(base / Path(data["home"]).expanduser())
    return data


def benchmark_root(results: Path, spec: dict[str, Any]) -> Path:
    """``<results>/data-<hash of spec>``: a cell's id names its dataset's path, so a benchmark made
    with other settings must get another path (else its cells would be read as finished)."""
    return results / f"data-{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]}"


@click.command("bench")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--results", default=None, type=click.Path(file_okay=False),
              help="Results folder (overrides the config's).")
@click.option("--address", default=None, help="Ray cluster to run on (overrides the config's).")
@click.option("--backend", default=None, type=click.Choice(["ray", "local"]),
              help="ray (default) or local: one cell after another in this process.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def bench(config: str, results: str | None, address: str | None, backend: str | None, progress: bool) -> None:
    """Train and score every model on every dataset with every seed; print the leaderboard.

    Finished cells are kept under the results folder: running the same config again skips them.
    """
    from lvkit.eval.leaderboard import leaderboard_text
    from lvkit.eval.matrix import matrix

    cfg = load_config(config)
    out = Path(results).resolve() if results else Path(cfg["results"])
    datasets = list(cfg["datasets"])
    if cfg.get("benchmark"):
        from lvkit.datasets.synthetic import generate

        spec = dict(cfg["benchmark"])
        categories = list(spec.pop("categories", ["brick", "gravel", "grass"]))
        root = generate(benchmark_root(out, spec), categories=categories, **spec)
        datasets += [str(root / c) for c in categories]
    result = matrix(cfg["models"], datasets, [int(s) for s in cfg.get("seeds") or [0]], results=out,
                    home=cfg.get("home"), options=cfg.get("options"), resources=cfg.get("resources"),
                    address=address or cfg.get("address"), backend=backend or cfg.get("backend") or "ray",
                    progress=progress, n_resamples=int(cfg.get("n_resamples") or 1000),
                    confidence_level=float(cfg.get("confidence_level") or 0.95))
    board = result.leaderboard()
    board.to_csv(out / "leaderboard.csv")
    (out / "leaderboard.md").write_text(leaderboard_text(board, markdown=True) + "\n")
    result.cells.to_csv(out / "cells.csv", index=False)
    click.echo(leaderboard_text(board))
    click.echo(f"{len(result.ran)} cells run, {len(result.skipped)} finished before; results in {out}")
    failed = result.runs[result.runs["status"] != "ok"]
    for row in failed.itertuples():
        click.echo(f"failed: {row.cell_id}: {row.error}", err=True)
    if len(failed):
        sys.exit(1)
