"""How good generated multiparametric patches are (Haarburger et al., section 4): 1-NN, FID, DCE kinetics.

* :func:`one_nn_accuracy`: the leave-one-out 1-nearest-neighbour two-sample test (Lopez-Paz & Oquab; the
  paper's Table 2): pool real and generated patches, label each by its origin, classify each by its
  nearest other patch (Euclidean, on the flattened channels). 0.5 means the sets cannot be told apart,
  1.0 that they are disjoint. Needs no pretrained network, so it is always reported.
* :func:`fid`: the Fréchet Inception Distance as the paper computes it: the RGB image made of T2, T1 pre
  and T1 post 1, through pytorch-fid's Inception (pool3 features). Its weights
  (``pt_inception-2015-12-05-6726825d.pth``) are never downloaded here: without the file the result is
  unavailable and names the file and the folder to put it in, never a number from random weights.
* :func:`dce_statistics`: per patch, the mean enhancement curve of the patch centre; time to peak (the
  post-contrast phase of maximum enhancement) and whether it washes out (it enhances by at least
  :data:`MIN_ENHANCEMENT` and its last phase falls below 90 % of the peak; without the threshold the
  noise of unenhancing fat would "wash out" half the time), summarised per set, to check that generated
  kinetics follow their class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .models.mp_gan import CHANNELS

#: the channels the paper maps to R, G, B for the Inception network
FID_CHANNELS = ("T2", "T1_pre", "T1_post1")
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
#: the least peak enhancement (post - pre, on the [-1, 1] scale, i.e. 5 % of the range) that counts as enhancing
MIN_ENHANCEMENT = 0.1


def _flat(patches: np.ndarray, name: str) -> np.ndarray:
    patches = np.asarray(patches, np.float32)
    if patches.ndim != 4 or patches.shape[1] != len(CHANNELS):
        raise InputError(f"{name} patches must be (N, {len(CHANNELS)}, S, S), not {patches.shape}")
    if not np.isfinite(patches).all():
        raise InputError(f"{name} patches contain NaN or Inf")
    return patches.reshape(len(patches), -1)


def one_nn_accuracy(real: np.ndarray, generated: np.ndarray) -> float:
    """Leave-one-out 1-NN accuracy of telling real from generated (0.5 ideal, 1.0 fully separable)."""
    from sklearn.neighbors import NearestNeighbors

    a, b = _flat(real, "real"), _flat(generated, "generated")
    if len(a) < 2 or len(b) < 2:
        raise InputError(f"1-NN accuracy needs at least 2 patches per set, got {len(a)} real and {len(b)} generated")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"real and generated patches differ in size: {real.shape[1:]} vs {generated.shape[1:]}")
    pooled = np.concatenate([a, b])
    origin = np.r_[np.zeros(len(a), int), np.ones(len(b), int)]
    _, index = NearestNeighbors(n_neighbors=2).fit(pooled).kneighbors(pooled)
    # the first neighbour of each point is itself (distance 0) unless duplicates exist: take the other one
    nearest = np.where(index[:, 0] == np.arange(len(pooled)), index[:, 1], index[:, 0])
    return float(np.mean(origin[nearest] == origin))


@dataclass(frozen=True)
class Kinetics:
    """Summary of the centre enhancement curves of a set of patches."""

    n: int
    washout_fraction: float
    mean_time_to_peak: float  # post-contrast phase index, 1-based
    mean_curve: tuple[float, ...]  # pre and post 1-4, mean over patches

    def to_dict(self) -> dict:
        return {"n": self.n, "washout_fraction": self.washout_fraction, "mean_time_to_peak": self.mean_time_to_peak,
                "mean_curve": list(self.mean_curve)}


def centre_curves(patches: np.ndarray, half: int = 4) -> np.ndarray:
    """(N, 5): mean of the central (2 half)^2 pixels of T1 pre and post 1-4 of each patch."""
    _flat(patches, "the")
    s = patches.shape[-1] // 2
    first = CHANNELS.index("T1_pre")
    return patches[:, first:first + 5, s - half:s + half, s - half:s + half].mean(axis=(2, 3))


def dce_statistics(patches: np.ndarray) -> Kinetics:
    curves = centre_curves(patches)
    enhancement = curves[:, 1:] - curves[:, :1]
    peak = enhancement.max(axis=1)
    washout = (peak >= MIN_ENHANCEMENT) & (enhancement[:, -1] < 0.9 * peak)
    return Kinetics(len(patches), float(washout.mean()), float((enhancement.argmax(axis=1) + 1).mean()),
                    tuple(float(v) for v in curves.mean(axis=0)))


@dataclass(frozen=True)
class FIDResult:
    value: float | None
    message: str = ""

    @property
    def available(self) -> bool:
        return self.value is not None


def fid_weights_path() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def _rgb(patches: np.ndarray) -> "np.ndarray":
    """The paper's RGB image (T2, T1 pre, T1 post 1) in [0, 1], as pytorch-fid expects."""
    channels = [CHANNELS.index(c) for c in FID_CHANNELS]
    return np.clip((np.asarray(patches, np.float32)[:, channels] + 1) / 2, 0, 1)


def fid(real: np.ndarray, generated: np.ndarray, *, device: str = "cpu", batch_size: int = 50) -> FIDResult:
    """FID between two patch sets, or unavailable with the missing weight file named."""
    _flat(real, "real"), _flat(generated, "generated")
    path = fid_weights_path()
    if not path.is_file():
        return FIDResult(None, f"the FID Inception weights are not on this machine: put '{FID_WEIGHTS_FILE}' "
                               f"(from pytorch-fid's release page) in '{path.parent}'")
    if min(len(real), len(generated)) < 2:
        raise InputError("FID needs at least 2 patches per set")
    import torch
    from pytorch_fid.fid_score import calculate_frechet_distance
    from pytorch_fid.inception import InceptionV3

    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()

    def features(patches: np.ndarray) -> np.ndarray:
        rgb, out = _rgb(patches), []
        with torch.no_grad():
            for start in range(0, len(rgb), batch_size):
                pooled = model(torch.from_numpy(rgb[start:start + batch_size]).to(device))[0]
                out.append(pooled.flatten(1).cpu().numpy().astype(np.float64))
        return np.concatenate(out)

    a, b = features(real), features(generated)
    value = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    return FIDResult(float(value))
