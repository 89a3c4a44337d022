"""``mri-synthesis compare``: drop each sequence of complete cases in turn, synthesize it with every model
able to, and report the models side by side.

Per (case, target, model): SSIM, PSNR, NMSE and MAE inside the foreground on z-scored volumes (exactly
the pipeline's comparison, so the numbers match ``evaluate-models`` for the same subjects and models),
LPIPS when its AlexNet weights are on the machine (else ``null`` and a note), and the BraSyn pair (SSIM
inside and outside the tumour, volumes clipped to their 0.5-99.5 percentiles and scaled to [0, 1]) when
the case has a segmentation. Outputs in ``--out``: ``compare.csv``, ``compare.json`` (rows, means per
target and model, the best model per target by mean PSNR) and ``report.html``, self-contained (images
inlined), with the summary table and per case a montage: real | each model | each model's error map.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from .batch import list_cases
from .selection import EXPECTED, eligible
from .errors import InputError
from .sequences import SEGMENTATION
from .volume import Volume, discard_if_failed, output_folder, refuse_inside, upright

HEADLINE = ("ssim", "psnr", "nmse", "mae")


def _lpips(real: Volume, synth: Volume, available: bool) -> float | None:
    if not available:
        return None
    from .perceptual import lpips_distance

    return lpips_distance(real, synth).value


def lpips_available() -> tuple[bool, str]:
    import torchvision.models

    from .perceptual import missing_weights_message

    message = missing_weights_message(torchvision.models.AlexNet_Weights.IMAGENET1K_V1, "AlexNet (LPIPS)",
                                      allow_download=False)
    return message is None, message or ""


def compare_case(case: str, volumes: Mapping[str, Volume], seg: Volume | None, *, anatomy: str = "brain",
                 models: tuple[str, ...] | None = None, register: str = "none", device: str = "auto",
                 weights_folder=None, lpips: bool = False,
                 progress: Callable[[float, str], object] | None = None) -> tuple[list[dict], dict]:
    """Rows of metrics and, per target, the images for the montage ({target: {"real": .., model: (synth, error)}});
    ``progress(fraction, message)`` before each model's synthesis."""
    from .metrics import brasyn_ssim
    from .pipeline import synthesize
    from .preprocess import resample_to

    plan = [(target, entry) for target in EXPECTED[anatomy] if target in volumes
            for entry in eligible(target, set(volumes) - {target}, anatomy, weights_folder)
            if not models or entry.model in models]
    rows, images = [], {}
    for step, (target, entry) in enumerate(plan):
        if progress is not None:
            progress(step / len(plan), f"{case}: {entry.model} -> {target}")
        usable = {k: v for k, v in volumes.items() if k != target and k in entry.inputs}
        result = synthesize(usable, target, entry.model, anatomy=anatomy, register=register, real=volumes[target],
                            device=device, weights_folder=weights_folder, check_alignment=False)
        metrics = result.metrics["metrics"]
        row = {"case": case, "target": target, "model": entry.model, "weights": entry.file,
               **{k: float(metrics[k]["volume"]) for k in HEADLINE},
               "lpips": _lpips(result.real, result.volume, lpips)}
        if seg is not None:
            brasyn = brasyn_ssim(result.real, result.volume, resample_to(seg, result.volume, interpolation="nearest"))
            row.update({"brasyn_ssim_tumour": brasyn.tumour, "brasyn_ssim_non_tumour": brasyn.non_tumour})
        rows.append(row)
        shown = images.setdefault(target, {"real": result.real})
        shown[entry.model] = (result.volume, result.error_map)
    return rows, images


def summarise(rows: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """Mean per (target, model) and the best model per target by mean PSNR."""
    keys = sorted({(r["target"], r["model"]) for r in rows})
    means = []
    for target, model in keys:
        mine = [r for r in rows if r["target"] == target and r["model"] == model]
        mean = {"target": target, "model": model, "cases": len(mine)}
        for k in (*HEADLINE, "lpips", "brasyn_ssim_tumour", "brasyn_ssim_non_tumour"):
            values = [r[k] for r in mine if r.get(k) is not None]
            mean[k] = float(np.mean(values)) if values else None
        means.append(mean)
    best = {}
    for target in sorted({m["target"] for m in means}):
        best[target] = max((m for m in means if m["target"] == target), key=lambda m: m["psnr"])["model"]
    return means, best


def _montage_png(case: str, target: str, shown: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .phantom.montage import _views  # the radiological axial display the other figures use

    def axial(volume, z: int) -> np.ndarray:  # upright: axial whatever plane the case was acquired in
        turned = upright(volume)
        return _views(turned.array, (z, 0, 0), turned.direction_matrix)[0]

    real = upright(shown["real"])
    models = [k for k in shown if k != "real"]
    z = int(np.argmax((real.array > np.percentile(real.array, 50)).sum(axis=(1, 2))))
    fig, axes = plt.subplots(2, len(models) + 1, figsize=(2.4 * (len(models) + 1), 4.8), squeeze=False)
    real_slice = axial(real, z)  # turning an upright volume again changes nothing
    low, high = np.percentile(real_slice, [0.5, 99.5])
    axes[0, 0].imshow(real_slice, cmap="gray", vmin=low, vmax=high)
    axes[0, 0].set_title(f"real {target}", fontsize=8)
    axes[1, 0].set_axis_off()
    for k, model in enumerate(models, start=1):
        synth, error = shown[model]
        axes[0, k].imshow(axial(synth, z), cmap="gray", vmin=low, vmax=high)
        axes[0, k].set_title(model, fontsize=8)
        axes[1, k].imshow(axial(error.volume, z), cmap="jet", vmin=0, vmax=error.max_error)
        axes[1, k].set_title(f"|error| {model}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{case}: {target} (slice {z})", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=70)
    plt.close(fig)
    return buffer.getvalue()


def _html_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else html.escape(str(v)))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out: Path, rows: list[dict], means: list[dict], best: dict, montages: list[tuple[str, str, bytes]],
                 notes: list[str]) -> Path:
    columns = ["target", "model", "cases", *HEADLINE, "lpips", "brasyn_ssim_tumour", "brasyn_ssim_non_tumour"]
    parts = ["<!doctype html><meta charset='utf-8'><title>MRISynthesis model comparison</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style>",
             "<h1>Model comparison</h1><p><b>Research use only.</b> Metrics inside the foreground on z-scored "
             "volumes; BraSyn SSIM on volumes clipped to their 0.5–99.5 percentiles and scaled to [0, 1].</p>",
             "".join(f"<p>note: {html.escape(n)}</p>" for n in notes),
             "<h2>Best model per target (mean PSNR)</h2><ul>",
             "".join(f"<li>{html.escape(t)}: {html.escape(m)}</li>" for t, m in best.items()), "</ul>",
             "<h2>Summary</h2>", _html_table(means, columns), "<h2>Cases</h2>",
             _html_table(rows, ["case", "target", "model", *HEADLINE, "lpips", "brasyn_ssim_tumour",
                                "brasyn_ssim_non_tumour"])]
    for case, target, png in montages:
        parts.append(f"<h3>{html.escape(case)}: {html.escape(target)}</h3>"
                     f"<img alt='{html.escape(case)} {html.escape(target)}' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    path = out / "report.html"
    path.write_text("".join(parts))
    return path


def run_compare(data: str | Path, out: str | Path, *, models: tuple[str, ...] | None = None, anatomy: str = "brain",
                register: str = "none", device: str = "auto", weights_folder=None, progress: bool = True,
                on_step: Callable[[float, str], object] | None = None, say: Callable[[str], None] = print) -> dict:
    """Every eligible model on every complete case; ``on_step(fraction of the whole, message)`` before each
    synthesis (the Slicer panel's progress)."""
    refuse_inside(out, data)
    cases = list_cases(data)
    with discard_if_failed(out):  # refused for its data: no empty report folder left behind
        return _compare_cases(cases, output_folder(out), models=models, anatomy=anatomy, register=register,
                              device=device, weights_folder=weights_folder, progress=progress, on_step=on_step,
                              say=say)


def _compare_cases(cases: Mapping[str, Mapping[str, Path]], out: Path, *, models, anatomy: str, register: str,
                   device: str, weights_folder, progress: bool, on_step, say: Callable[[str], None]) -> dict:
    from tqdm import tqdm

    from .inputs import load_case
    from .pipeline import MISALIGNED_IN_CASE, case_alignment_warnings
    from .volume import read_volume

    use_lpips, lpips_note = lpips_available()
    notes = [] if use_lpips else [f"LPIPS unavailable: {lpips_note}"]
    rows, montages, failures, skipped = [], [], [], []
    for index, (case, files) in enumerate(tqdm(cases.items(), desc="compare", unit="case", disable=not progress)):
        if "error" in files:  # its files cannot be told apart: a failure, as batch counts it
            say(f"{case}: FAILED: {files['error']}")
            failures.append(f"{case}: {files['error']}")
            continue
        missing = [s for s in EXPECTED[anatomy] if s not in files]
        if missing:  # nothing to compare against: left out, and said so in every output
            say(f"{case}: skipped: not complete (missing {', '.join(missing)}); compare needs every sequence")
            skipped.append(f"{case}: missing {', '.join(missing)}")
            continue
        try:
            volumes = load_case({k: v for k, v in files.items() if k != SEGMENTATION})
            seg = read_volume(files[SEGMENTATION]) if SEGMENTATION in files else None
            within = None if on_step is None else (
                lambda fraction, message, i=index: on_step((i + fraction) / len(cases), message))
            if register == "none":  # once per case (compare_case does not check it per model and target)
                for warning in case_alignment_warnings({k: v for k, v in volumes.items() if k in EXPECTED[anatomy]},
                                                       consequence=MISALIGNED_IN_CASE):
                    say(f"{case}: warning: {warning}")
                    notes.append(f"{case}: {warning}")
            case_rows, images = compare_case(case, volumes, seg, anatomy=anatomy, models=models, register=register,
                                             device=device, weights_folder=weights_folder, lpips=use_lpips,
                                             progress=within)
        except InputError as err:
            say(f"{case}: FAILED: {err}")
            failures.append(f"{case}: {err}")
            continue
        rows += case_rows
        montages += [(case, target, _montage_png(case, target, shown)) for target, shown in images.items()]
    if not rows:
        raise InputError("no complete case could be compared (every case missing a sequence or failing)" +
                         (f"; {failures[0]}" if failures else ""))
    means, best = summarise(rows)
    with (out / "compare.csv").open("w", newline="") as handle:
        # every row's columns: a case with a segmentation adds tumour-region metrics the others lack
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    notes = notes + [f"failed, left out: {failure}" for failure in failures]  # in the JSON and the report too
    notes += [f"not complete, left out: {case}" for case in skipped]
    (out / "compare.json").write_text(json.dumps({"rows": rows, "means": means, "best": best, "notes": notes,
                                                  "failures": failures}, indent=1))
    write_report(out, rows, means, best, montages, notes)
    for target, model in best.items():
        say(f"best for {target}: {model}")
    return {"rows": rows, "means": means, "best": best, "notes": notes, "failures": failures}
