"""PNG montage of a subject: one column per sequence, axial / coronal / sagittal rows.

Each sequence is resampled onto the reference grid (identity transform, so residual misalignment stays
visible) and cut through the largest lesion's centre, or the middle of the volume when there is none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..preprocess import resample_to
from ..volume import Volume
from .subject import PhantomSubject


def _views(array: np.ndarray, center: tuple[int, int, int], direction: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal, sagittal cuts in radiological display: anterior and superior up, patient's right
    on the viewer's left (LPS: +x left, +y posterior, +z superior). Assumes a near axis-aligned grid."""
    sx, sy, sz = (np.sign(direction[i, i]) or 1 for i in range(3))
    z, y, x = center
    col_x = slice(None, None, 1 if sx > 0 else -1)  # increasing L to the right
    row_y = slice(None, None, 1 if sy > 0 else -1)  # anterior (small y) on top
    row_z = slice(None, None, -1 if sz > 0 else 1)  # superior on top
    col_y = slice(None, None, 1 if sy > 0 else -1)  # anterior on the left
    return [array[z][row_y, col_x], array[:, y][row_z, col_x], array[:, :, x][row_z, col_y]]


def _display(volume: Volume) -> Volume:
    if not volume.is_series:
        return volume
    return volume.frame(int(np.argmax([volume.frame(i).array.mean() for i in range(volume.shape[0])])))


def write_montage(subject: PhantomSubject, path: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = subject.labels
    labels = reference.array
    if labels.any():
        center = tuple(int(round(c)) for c in np.argwhere(labels > 0).mean(0))
    else:
        center = tuple(n // 2 for n in labels.shape)
    names = list(subject.sequences)
    aspect = [reference.spacing[1] / reference.spacing[0], reference.spacing[2] / reference.spacing[0],
              reference.spacing[2] / reference.spacing[1]]
    fig, axes = plt.subplots(3, len(names) + 1, figsize=(2.2 * (len(names) + 1), 6.6), facecolor="black")
    for col, name in enumerate(names + ["labels"]):
        if name == "labels":
            vol, cmap, vmax = reference, "viridis", max(float(labels.max()), 1.0)
        else:
            vol = resample_to(_display(subject.sequences[name]), reference)
            cmap, vmax = "gray", float(np.percentile(vol.array, 99.5)) or 1.0
        for row, (view, ratio) in enumerate(zip(_views(vol.array, center, reference.direction_matrix), aspect)):
            ax = axes[row, col]
            ax.imshow(view, cmap=cmap, vmin=0, vmax=vmax, aspect=ratio, interpolation="nearest")
            ax.set_axis_off()
        axes[0, col].set_title(name, color="white", fontsize=10)
    fig.suptitle(f"{subject.anatomy} phantom, seed {subject.seed} — research use only", color="white", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80, facecolor="black")
    plt.close(fig)
    return path
