"""Make the extension icon (128 x 128 PNG) from a brain phantom slice: the left half as acquired (T1),
the right half the T1ce the product synthesizes, in a heat colour map.

Run: python scripts/make_icon.py  (writes Resources/Icons/MRISynthesis.png and the module's copy)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from MRISynthesisLib.phantom.brain import sample_brain

ROOT = Path(__file__).resolve().parents[1]


def icon_array(seed: int = 2) -> np.ndarray:
    subject = sample_brain(seed, resolution=1.0, n_lesions=1, misalign=False, native_grids=False, bias_field=False)
    z = int(np.argwhere(subject.labels.array == 3)[:, 0].mean())
    def cut(name: str) -> np.ndarray:
        image = subject.sequences[name].array[z][::-1, ::-1]  # anterior up, patient right on the left
        rows, cols = np.nonzero(image > np.percentile(image, 60))
        image = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        return np.clip(image / np.percentile(image, 99.5), 0, 1)
    t1, t1ce = cut("T1"), cut("T1ce")
    half = t1.shape[1] // 2
    gray = np.repeat(t1[..., None], 3, -1)
    heat = colormaps["inferno"](t1ce)[..., :3]
    rgb = np.concatenate([gray[:, :half], heat[:, half:]], axis=1)
    size = max(rgb.shape[:2])
    canvas = np.zeros((size, size, 3))
    top, left = (size - rgb.shape[0]) // 2, (size - rgb.shape[1]) // 2
    canvas[top:top + rgb.shape[0], left:left + rgb.shape[1]] = rgb
    return (canvas * 255).astype(np.uint8)


def main() -> None:
    target = ROOT / "Resources" / "Icons" / "MRISynthesis.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(icon_array()).resize((128, 128), Image.LANCZOS).save(target)
    module_copy = ROOT / "MRISynthesis" / "Resources" / "Icons" / "MRISynthesis.png"
    module_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(target, module_copy)
    print(target, module_copy)


if __name__ == "__main__":
    main()
