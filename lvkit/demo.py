"""``lvkit demo``: the whole product on the bundled benchmark, offline, in a few minutes.

Generates one category of the synthetic benchmark, trains the default model (PatchCore on the
offline EfficientNet-Lite0 weights) as a new version of project ``demo-<category>``, hosts
it, runs DetectAnomalies through ``lvkit.client()`` on every test image, prints the table and
the summary, stops the model, and writes ``results.csv``, ``summary.json``,
``mask_iou.csv`` and ``sheet.png`` into the output folder.

The mask IoUs are printed under the names of ``lvkit.eval.report_masks.IOU_NAMES``
("IoU (any label)", "IoU (own label)", "IoU (per label)"), the names the README quotes.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

__all__ = ["mask_summary", "run_demo", "sheet_title"]


def mask_summary(masks: Any) -> str:
    """The demo's mask table: :func:`lvkit.eval.mask_report` columns under their IoU names, and what each means.

    Examples
    --------
    >>> import pandas as pd
    >>> masks = pd.DataFrame({"n_images": [2], "iou_any": [0.5], "iou_any_low": [0.4], "iou_any_high": [0.6],
    ...                       "iou_label": [0.5], "iou_console": [0.45], "dice_any": [0.6]}, index=["hole"])
    >>> print(mask_summary(masks).splitlines()[0])
          images  IoU (any label)  95% low  95% high  IoU (own label)  IoU (per label)  Dice (any label)
    """
    import pandas as pd

    from lvkit.eval.report_masks import IOU_MEANINGS, IOU_NAMES

    columns = {"n_images": "images", "iou_any": IOU_NAMES["iou_any"], "iou_any_low": "95% low",
               "iou_any_high": "95% high", "iou_label": IOU_NAMES["iou_label"],
               "iou_console": IOU_NAMES["iou_console"], "dice_any": "Dice (any label)"}
    table = masks[list(columns)].drop(index=["normal"], errors="ignore").rename(columns=columns)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 200):
        text = table.to_string()
    return "\n".join([text, *(f"  {IOU_NAMES[k]}: {IOU_MEANINGS[k]}" for k in IOU_NAMES)])


def sheet_title(truth: str, is_anomalous: bool, confidence: float, mask_empty: bool) -> str:
    r"""Caption of one row of ``sheet.png``; says why an anomalous image can have an empty mask.

    Examples
    --------
    >>> sheet_title("hole", True, 0.79, True)
    'hole: anomalous (0.79)\nno pixel above the pixel threshold'
    """
    title = f"{truth}: {'anomalous' if is_anomalous else 'normal'} ({confidence:.2f})"
    if is_anomalous and mask_empty:  # the verdict is the image score's, the mask the pixels'
        title += "\nno pixel above the pixel threshold"
    return title


def run_demo(out: Path, *, category: str = "brick", model: str = "patchcore", device: str = "auto",
             image_size: int = 256, home: str | os.PathLike[str] | None = None,
             print_fn: Any = print) -> dict[str, Any]:
    """Run the demo; returns the summary (also written to ``out/summary.json``)."""
    import pandas as pd
    from PIL import Image

    import lvkit
    from lvkit import eval as lve
    from lvkit.datasets import read_label_masks, union_mask
    from lvkit.datasets.synthetic import generate

    started = time.perf_counter()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(desc=f"generate {category}", unit="img")

    def advance(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    data = generate(out / "data", categories=(category,), progress=advance)
    bar.close()
    ds = lvkit.datasets.load(data / category)
    project = f"demo-{category}"
    version = lvkit.train(project, ds, model=model, image_size=image_size, device=device, home=home)
    lv = lvkit.client(home, device=device)
    print_fn(f"trained {project} version {version}; starting it")
    lv.start_model(ProjectName=project, ModelVersion=version, MinInferenceUnits=1)
    try:
        test = ds.split("test")
        df = lve.run(lv, test.samples, project=project, version=version)
    finally:
        lv.stop_model(ProjectName=project, ModelVersion=version)

    manifest = json.loads((lv.service.store.artifact_dir(project, int(version)) / "lvkit.json").read_text())
    held_out = set(manifest["splits"]["evaluation"])
    df["role"] = np.where(df["path"].isin(held_out), "held-out", "threshold")
    df["image"] = [str(Path(p).relative_to(ds.root)) for p in df["path"]]
    df["truth"] = df["defect_type"].fillna("normal")
    table = df[["image", "truth", "role", "is_anomalous", "confidence", "anomalous_area", "latency_s"]]
    with pd.option_context("display.max_rows", None, "display.width", 120, "display.float_format", "{:.3f}".format):
        print_fn(table.rename(columns={"is_anomalous": "IsAnomalous", "confidence": "Confidence",
                                       "anomalous_area": "area"}).to_string(index=False))
    evaluation = df[df["role"] == "held-out"]
    metrics = lve.image_metrics(evaluation)
    masks = lve.mask_report(evaluation, test)
    summary = {
        "project": project, "version": version, "model": model, "category": category,
        "n_test_images": len(df), "n_held_out": len(evaluation),
        "image": {k: metrics[k] for k in ("auroc", "average_precision", "precision", "recall", "f1")},
        "mask_iou_per_defect_type": masks["iou_any"].drop(index=["all", "normal"], errors="ignore").to_dict(),
        "mask_iou_label_per_defect_type": masks["iou_label"].drop(index=["all", "normal"], errors="ignore").to_dict(),
        "mask_iou_per_label": masks["iou_console"].drop(index=["all", "normal"], errors="ignore").to_dict(),
        "mean_latency_ms": 1000 * float(df["latency_s"].mean()),
        "seconds": time.perf_counter() - started,
    }
    print_fn(f"\nsummary on the {len(evaluation)} held-out test images (the others chose the thresholds):")
    print_fn(f"  image AUROC {metrics['auroc']:.3f}   AP {metrics['average_precision']:.3f}   at the model's decision: "
             f"precision {metrics['precision']:.3f}  recall {metrics['recall']:.3f}  F1 {metrics['f1']:.3f}")
    print_fn("  mask IoU per defect type:")
    print_fn(mask_summary(masks))
    df.drop(columns=["anomaly_mask", "anomalies"]).to_csv(out / "results.csv", index=False)
    masks.to_csv(out / "mask_iou.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    picks = [df.index[df["truth"] == t][0] for t in sorted(df["truth"].unique())]
    by_path = {str(s.image_path): s for s in test.samples}
    images = [np.asarray(Image.open(df.at[i, "path"]).convert("RGB")) for i in picks]
    truths = [union_mask(read_label_masks(by_path[df.at[i, "path"]]), images[k].shape[:2]) for k, i in enumerate(picks)]
    preds = [np.asarray(Image.open(io.BytesIO(df.at[i, "anomaly_mask"])).convert("RGB")) for i in picks]
    titles = [sheet_title(df.at[i, "truth"], bool(df.at[i, "is_anomalous"]), float(df.at[i, "confidence"]),
                          not preds[k].any()) for k, i in enumerate(picks)]
    colors: dict[str, str] = {}
    for i in picks:
        colors.update(df.at[i, "anomalies"] if isinstance(df.at[i, "anomalies"], dict) else {})
    lve.plots.mask_sheet(images, truths, preds, titles, labels=dict(sorted(colors.items()))).savefig(
        out / "sheet.png", dpi=110)
    print_fn(f"\nwrote {out}/results.csv, mask_iou.csv, summary.json, sheet.png ({summary['seconds']:.0f} s)")
    return summary

