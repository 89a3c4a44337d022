"""Make the extension icon (128 x 128 PNG) from a brain phantom slice: the left half as acquired (T1),
the right half the T1ce the product synthesizes, in a heat colour map; and the Sample Data thumbnails
(192 x 128, Sample Data's 3:2 buttons) of the brain and breast phantom cases the module registers.

Run: python scripts/make_icon.py  (writes Resources/Icons/MRISynthesis.png, the module's copy and the
thumbnails MRISynthesis/Resources/Icons/MRISynthesis{Brain,Breast}Phantom.png)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from MRISynthesisLib.phantom.brain import sample_brain

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MRISynthesis"))  # MRISynthesisSlicerLib.sampledata names the thumbnails


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


def _axial(volume, z: int) -> np.ndarray:
    """Axial slice as Slicer shows it (anterior up, patient right on the left), for an axis-aligned grid."""
    signs = np.sign(np.diag(np.reshape(volume.direction, (3, 3))))  # LPS: +x left, +y posterior
    image = volume.array[z]
    return image[:: int(signs[1]), :: int(signs[0])]


def _fit(image: np.ndarray, size=(128, 192)) -> np.ndarray:
    """Grey RGB of ``image`` scaled to its 99.5th percentile, centred on a black canvas of ``size``."""
    image = np.clip(image / np.percentile(image, 99.5), 0, 1)
    scale = min(size[0] / image.shape[0], size[1] / image.shape[1])
    shape = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    small = np.asarray(Image.fromarray((image * 255).astype(np.uint8)).resize(shape, Image.LANCZOS))
    canvas = np.zeros(size, dtype=np.uint8)
    top, left = (size[0] - small.shape[0]) // 2, (size[1] - small.shape[1]) // 2
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.repeat(canvas[..., None], 3, -1)


def thumbnail_array(anatomy: str, seed: int) -> np.ndarray:
    """The case's contrast-enhanced slice through its lesion: T1ce for the brain, the first post-contrast
    DCE phase for the breast."""
    from MRISynthesisLib.phantom import sample

    subject = sample(anatomy, seed, resolution=1.0 if anatomy == "brain" else 1.25, misalign=False,
                     native_grids=False, bias_field=False)
    z = int(np.argwhere(subject.labels.array > 0)[:, 0].mean())
    volume = subject.sequences["T1ce"] if anatomy == "brain" else subject.sequences["DCE"].frame(1)
    return _fit(_axial(volume, z))


def main() -> None:
    target = ROOT / "Resources" / "Icons" / "MRISynthesis.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(icon_array()).resize((128, 128), Image.LANCZOS).save(target)
    module_copy = ROOT / "MRISynthesis" / "Resources" / "Icons" / "MRISynthesis.png"
    module_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(target, module_copy)
    print(target, module_copy)
    from MRISynthesisSlicerLib.sampledata import SAMPLES

    for s in SAMPLES:
        thumbnail = module_copy.parent / s.thumbnail
        Image.fromarray(thumbnail_array(s.anatomy, s.seed)).save(thumbnail, optimize=True)
        print(thumbnail)


if __name__ == "__main__":
    main()
