"""Deep-feature distances on axial slices: LPIPS (Seq2Seq's metric) and IMPORTANT-Net's VGG19 L_P.

Both stand on ImageNet-trained torchvision backbones, which torchvision downloads on first use into
``torch.hub.get_dir()/checkpoints``. A metric must neither download behind the user's back (offline
hospitals, CI) nor report a number from a network without its weights, so before building a network we
look for its checkpoint file (:func:`missing_weights_message`, shared by both metrics). When it is
missing and ``allow_download`` is False (the default) the result is *unavailable*: a
:class:`PerceptualResult` without a value whose message names the missing file and the folder to put it
in. ``backbone="random"`` builds the same network with seeded random weights, so tests run the whole
code path offline; its numbers mean nothing.

Slices: the foreground axial slices of the real volume (:func:`metrics.foreground_slices`), each mapped
to [0, 1] by the real volume's minimum and the data range (values outside clipped, so both images see
one scale), replicated to 3 channels. CPU and ``torch.no_grad`` by default.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlparse

import numpy as np

from .errors import InputError
from .metrics import Image, _range, _summary, foreground_slices, prepare_pair

if TYPE_CHECKING:
    import torch

#: The smallest in-plane size AlexNet (LPIPS) and VGG's five poolings accept.
MIN_SLICE = 32
#: IMPORTANT-Net section 4.2: weights of the five VGG19 max-pool outputs, shallow to deep.
VGG19_POOL_WEIGHTS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = ("imagenet", "random")


@dataclass(frozen=True)
class PerceptualResult:
    """A deep-feature distance: mean and SD over slices, or unavailable (``value`` None) with a reason."""

    metric: str
    value: float | None = None
    sd: float | None = None
    n_slices: int = 0
    message: str = ""

    @property
    def available(self) -> bool:
        return self.value is not None

    def __str__(self) -> str:
        if not self.available:
            return f"unavailable: {self.message}"
        return f"{self.value:.4g} ± {self.sd:.2g} over {self.n_slices} slices"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "available": self.available, "value": self.value, "sd": self.sd,
                "n_slices": self.n_slices, "message": self.message}


# --------------------------------------------------------------------- checkpoint availability
def checkpoint_path(weights: Any) -> Path:
    """Where torch.hub keeps (or would download) a torchvision checkpoint (``weights``: a Weights enum member)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def missing_weights_message(weights: Any, label: str, *, allow_download: bool) -> str | None:
    """None when ``weights`` can be used (file present, or downloading allowed); else what to do about it."""
    path = checkpoint_path(weights)
    if allow_download or path.is_file():
        return None
    return (f"the ImageNet weights of {label} are not on this machine: put '{path.name}' (from {weights.url}) "
            f"in the folder '{path.parent}', or allow downloads")


# --------------------------------------------------------------------- networks
@dataclass(frozen=True)
class _Network:
    """One deep metric: its name, backbone, how to build it and how to compare two batches of slices."""

    metric: str
    label: str
    weights_name: str  # torchvision.models attribute holding the ImageNet weights enum
    build: Callable[[bool], "torch.nn.Module"]  # pretrained -> module
    distance: Callable[["torch.nn.Module", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]  # [0,1] -> (N,)

    def weights(self) -> Any:
        import torchvision.models

        return getattr(torchvision.models, self.weights_name).IMAGENET1K_V1


def _build_lpips(net: str) -> Callable[[bool], "torch.nn.Module"]:
    def build(pretrained: bool) -> "torch.nn.Module":
        import lpips

        # The calibration (linear) layers ship inside the lpips wheel; only the trunk needs torchvision's file.
        return lpips.LPIPS(net=net, pnet_rand=not pretrained, verbose=False)
    return build


def _build_vgg19(pretrained: bool) -> "torch.nn.Module":
    import torchvision.models as tvm

    return tvm.vgg19(weights=tvm.VGG19_Weights.IMAGENET1K_V1 if pretrained else None).features


def _lpips_distance(net: "torch.nn.Module", a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    return net(a * 2 - 1, b * 2 - 1).flatten()  # LPIPS expects [-1, 1]


def _vgg19_distance(features: "torch.nn.Module", a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=a.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=a.device).view(1, 3, 1, 1)
    x = (torch.cat([a, b]) - mean) / std  # both images through the network in one batch
    n, weights, total = a.shape[0], iter(VGG19_POOL_WEIGHTS), torch.zeros(a.shape[0], device=a.device)
    for layer in features:
        x = layer(x)
        if isinstance(layer, torch.nn.MaxPool2d):  # L1 per layer, normalised by C*H*W (eq. 5)
            total += next(weights) * (x[:n] - x[n:]).abs().mean(dim=(1, 2, 3))
    return total


_NETWORKS = {
    "lpips-alex": _Network("LPIPS", "AlexNet", "AlexNet_Weights", _build_lpips("alex"), _lpips_distance),
    "lpips-vgg": _Network("LPIPS", "VGG16", "VGG16_Weights", _build_lpips("vgg"), _lpips_distance),
    "vgg19": _Network("VGG19 perceptual (IMPORTANT-Net L_P)", "VGG19", "VGG19_Weights", _build_vgg19, _vgg19_distance),
}


@lru_cache(maxsize=2)
def _module(key: str, backbone: str, device: str) -> "torch.nn.Module":
    """The network, built once per process; random weights are seeded so results repeat."""
    import torch

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(0)
        # lpips still passes torchvision's deprecated `pretrained=`; that is lpips' business, not the user's.
        warnings.filterwarnings("ignore", message="(The parameter 'pretrained'|Arguments other than a weight enum)")
        module = _NETWORKS[key].build(backbone == "imagenet")
    return module.to(device).eval()


# --------------------------------------------------------------------- the driver shared by both metrics
def _slices(array: np.ndarray, indices: list[int], low: float, data_range: float, device: str) -> "torch.Tensor":
    import torch

    scaled = np.clip((array[indices] - low) / data_range, 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(scaled)[:, None].expand(-1, 3, -1, -1).to(device)


def _slice_distance(key: str, real: Image, synth: Image, *, backbone: str, allow_download: bool,
                    data_range: float | None, device: str, batch_size: int) -> PerceptualResult:
    network = _NETWORKS[key]
    real, synth, _ = prepare_pair(real, synth)
    if real.ndim != 3:
        raise InputError(f"{network.metric} needs 3D volumes (z, y, x), but real is {real.ndim}D")
    if backbone not in BACKBONES:
        raise InputError(f"unknown backbone '{backbone}'; use one of {', '.join(BACKBONES)}")
    if batch_size < 1:
        raise InputError(f"`batch_size` must be at least 1, not {batch_size}")
    scale = _range(real, data_range)
    label = f"{network.label}{' (random weights)' if backbone == 'random' else ''}"
    name = f"{network.metric} ({label})"
    message = missing_weights_message(network.weights(), network.label, allow_download=allow_download) \
        if backbone == "imagenet" else None
    if message is None and min(real.shape[1:]) < MIN_SLICE:
        message = (f"axial slices of {real.shape[1]}x{real.shape[2]} voxels are smaller than the "
                   f"{MIN_SLICE}x{MIN_SLICE} that {network.label} needs")
    if message is not None:
        return PerceptualResult(name, message=message)

    import torch

    indices = list(foreground_slices(real))
    module, low, values = _module(key, backbone, device), float(real.min()), []
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            batch = indices[start:start + batch_size]
            a, b = (_slices(x, batch, low, scale, device) for x in (real, synth))
            values.extend(float(v) for v in network.distance(module, a, b).cpu())
    mean, sd = _summary(values)
    return PerceptualResult(name, mean, sd, len(indices))


def lpips_distance(real: Image, synth: Image, *, net: str = "alex", backbone: str = "imagenet",
                   allow_download: bool = False, data_range: float | None = None, device: str = "cpu",
                   batch_size: int = 8) -> PerceptualResult:
    """LPIPS (Zhang et al. 2018) on axial slices, mean over foreground slices, as Seq2Seq reports it.

    Args:
        net: ``alex`` (the default, Seq2Seq's choice) or ``vgg`` (VGG16).
        backbone: ``imagenet`` (the real metric) or ``random`` (seeded random trunk; for tests only).
        allow_download: let torchvision download the ImageNet trunk when it is missing. When False and
            the file is missing, the result is unavailable and names the file and folder.
        data_range: maps slices to [0, 1] (from the real volume's minimum), then to LPIPS' [-1, 1];
            default the real's max - min.
    """
    if net not in ("alex", "vgg"):
        raise InputError(f"unknown LPIPS network '{net}'; use 'alex' or 'vgg'")
    return _slice_distance(f"lpips-{net}", real, synth, backbone=backbone, allow_download=allow_download,
                           data_range=data_range, device=device, batch_size=batch_size)


def vgg19_perceptual(real: Image, synth: Image, *, backbone: str = "imagenet", allow_download: bool = False,
                     data_range: float | None = None, device: str = "cpu", batch_size: int = 8) -> PerceptualResult:
    """IMPORTANT-Net's perceptual distance L_P (eq. 5-6) on axial slices, mean over foreground slices.

    Sum over the outputs of VGG19's five max-pool layers of alpha_j x mean |phi_j(y) - phi_j(G)| (L1
    normalised by C_j H_j W_j), alpha = 1/16, 1/8, 1/4, 1/2, 1 (section 4.2). Input scaling (the paper
    does not say): slices to [0, 1] by the data range, 3 channels, then ImageNet mean/std, the
    normalisation VGG19's weights were trained with. ``backbone``, ``allow_download``, ``data_range``:
    as :func:`lpips_distance`.
    """
    return _slice_distance("vgg19", real, synth, backbone=backbone, allow_download=allow_download,
                           data_range=data_range, device=device, batch_size=batch_size)
