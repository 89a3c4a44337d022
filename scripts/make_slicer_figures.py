"""Render the Slicer panel's outputs, from a real run of the pipeline, the way Slicer's slice views show them.

Runs ``MRISynthesisLib.pipeline.synthesize`` with the bundled U-Net cT1 weights on the held-out brain
phantom subject of seed 7 (T1, T2, FLAIR in; T1ce out; its acquired T1ce as the real target), as the
module's self-test and Sample Data case do, then draws what the red (axial), yellow (sagittal) and
green (coronal) views display:

- ``docs/images/slicer-synthesized.png``: the output node "T1ce synthesized by unet-ct1" as background;
- ``docs/images/slicer-error-overlay.png``: the module's display after a run with a real target: the real
  T1ce as background, the error map node as foreground through the module's own colour table (the same
  colours as ``nodes.error_color_table``: jet, window 0 .. the map's maximum) at the panel's default
  opacity (0.5, the errorOpacity parameter), blended as Slicer blends layers.

Slicer reslices every volume in RAS and shows the axial view anterior up with the patient's right on the
left, the sagittal view anterior left, the coronal view the patient's right on the left; this script
resamples onto an RAS-aligned grid with SimpleITK and cuts it the same way. Background window: the
0.1 .. 99.9th percentiles, close to Slicer's automatic window/level.

Run: python scripts/make_slicer_figures.py [--out docs/images] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEED, MODEL, TARGET, OPACITY = 7, "unet-ct1", "T1ce", 0.5
VIEWS = (("Red", "axial", "#c0392b"), ("Yellow", "sagittal", "#d4ac0d"), ("Green", "coronal", "#27ae60"))


def run_pipeline(device: str):
    """The synthesis the panel runs on the Sample Data brain case, and the case's tumour labels."""
    from MRISynthesisLib.phantom import sample
    from MRISynthesisLib.pipeline import synthesize
    from MRISynthesisLib.weights import find

    entry = find(MODEL, TARGET, "brain", None)
    subject = sample("brain", SEED, resolution=entry.voxel_size_mm)
    inputs = {seq: subject.sequences[seq] for seq in ("T1", "T2", "FLAIR")}
    result = synthesize(inputs, TARGET, MODEL, register="rigid", real=subject.sequences[TARGET], device=device,
                        anatomy="brain")
    return result, subject.labels


def to_ras_grid(volume, spacing: float):
    """``volume`` resampled (linearly, as Slicer interpolates its views) onto an RAS-aligned grid; the array
    is indexed [S, A, R], each index increasing towards superior, anterior, right."""
    import SimpleITK as sitk

    image = volume.to_sitk()
    corners = [image.TransformContinuousIndexToPhysicalPoint([c * (n - 1) for c, n in zip(corner, image.GetSize())])
               for corner in np.ndindex(2, 2, 2)]
    lps = np.array(corners)
    ras_direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # index axes along +R, +A, +S
    origin = (lps[:, 0].max(), lps[:, 1].max(), lps[:, 2].min())
    extent = lps.max(0) - lps.min(0)
    size = [int(np.ceil(e / spacing)) + 1 for e in extent]
    resampled = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, origin, (spacing,) * 3, ras_direction,
                              0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled), resampled


def ras_index(grid, lps_point) -> tuple[int, int, int]:
    """[S, A, R] array index of a physical (LPS) point on a grid made by :func:`to_ras_grid`."""
    i, j, k = grid.TransformPhysicalPointToIndex(tuple(float(c) for c in lps_point))
    return k, j, i


def cuts(array: np.ndarray, at: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, sagittal and coronal images as Slicer's views orient them (rows top to bottom)."""
    s, a, r = at
    return [array[s, ::-1, ::-1],   # axial: anterior up, patient right on the left
            array[::-1, ::-1, r],   # sagittal: superior up, anterior on the left
            array[::-1, a, ::-1]]   # coronal: superior up, patient right on the left


def grey(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Background layer: linear window, grey RGB."""
    g = np.clip((image - low) / (high - low), 0.0, 1.0)
    return np.repeat(g[..., None], 3, -1)


def overlay(background: np.ndarray, errors: np.ndarray, max_error: float, inside: np.ndarray) -> np.ndarray:
    """Slicer's layer blend: (1 - opacity) background + opacity foreground wherever the foreground volume
    has voxels; the foreground through the module's error colour table (jet over 0 .. max_error)."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(errors / max_error, 0.0, 1.0))[..., :3]
    blended = (1.0 - OPACITY) * background + OPACITY * colours
    return np.where(inside[..., None], blended, background)


def lesion_point(labels) -> np.ndarray:
    """The physical (LPS) centre of the enhancing tumour (label 3), where the views are centred."""
    voxels = np.argwhere(labels.array == 3)[:, ::-1].mean(0)  # (x, y, z) index
    matrix = np.reshape(labels.direction, (3, 3)) @ np.diag(labels.spacing)
    return np.asarray(labels.origin) + matrix @ voxels


def figure(panels: list[np.ndarray], title: str, path: Path, colourbar: tuple[float, str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), facecolor="black",
                             gridspec_kw={"width_ratios": [p.shape[1] / p.shape[0] for p in panels]})
    for ax, image, (colour, view, bar) in zip(axes, panels, VIEWS):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(f"{colour} ({view})", color="white", backgroundcolor=bar, fontsize=10, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, (left, right, top) in zip(axes, (("R", "L", "A"), ("A", "P", "S"), ("R", "L", "S"))):
        ax.text(0.02, 0.5, left, color="yellow", transform=ax.transAxes, va="center", fontsize=9)
        ax.text(0.98, 0.5, right, color="yellow", transform=ax.transAxes, va="center", ha="right", fontsize=9)
        ax.text(0.5, 0.97, top, color="yellow", transform=ax.transAxes, va="top", ha="center", fontsize=9)
    if colourbar is not None:
        top, label = colourbar
        bar = fig.colorbar(ScalarMappable(Normalize(0, top), colormaps["jet"]), ax=list(axes), fraction=0.02, pad=0.01)
        bar.set_label(label, color="white")
        bar.ax.tick_params(colors="white")
    fig.suptitle(title, color="white", fontsize=11)
    fig.savefig(path, dpi=90, facecolor="black", bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    result, labels = run_pipeline(args.device)
    spacing = float(min(result.volume.spacing))
    synth, grid = to_ras_grid(result.volume, spacing)
    real, _ = to_ras_grid(result.real, spacing)
    errors, _ = to_ras_grid(result.error_map.volume, spacing)
    inside, _ = to_ras_grid(result.error_map.volume.with_array(np.ones(result.error_map.volume.shape, np.float32)),
                            spacing)
    at = ras_index(grid, lesion_point(labels))
    name = f"{TARGET} synthesized by {MODEL}"

    low, high = np.percentile(synth[synth > 0], (0.1, 99.9))
    figure([grey(c, low, high) for c in cuts(synth, at)], f"'{name}' (background)", out / "slicer-synthesized.png")

    low, high = np.percentile(real[real > 0], (0.1, 99.9))
    max_error = float(result.error_map.max_error)
    panels = [overlay(grey(b, low, high), e, max_error, m > 0.5)
              for b, e, m in zip(cuts(real, at), cuts(errors, at), cuts(inside, at))]
    figure(panels, f"real {TARGET} (background) + '{TARGET} error map ({MODEL})' (foreground, opacity {OPACITY})",
           out / "slicer-error-overlay.png", (max_error, "|real - synthesized| (z-score units)"))
    metrics = result.metrics["metrics"]
    print(f"{name}: SSIM {metrics['ssim']['volume']:.3f}, PSNR {metrics['psnr']['volume']:.2f} dB, "
          f"max error shown {max_error:.2f}; views at [S, A, R] index {at}")
    for png in ("slicer-synthesized.png", "slicer-error-overlay.png"):
        print(out / png, f"{(out / png).stat().st_size // 1024} KB")


if __name__ == "__main__":
    sys.exit(main())
