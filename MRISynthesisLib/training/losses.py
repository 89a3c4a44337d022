"""Loss terms shared by several recipes: the frozen VGG19 perceptual loss and the gradient penalty.

The perceptual term stands on torchvision's ImageNet VGG19. Training must not download it behind the
user's back nor train with a random network while calling it "perceptual", so the policy is explicit
(``perceptual=``): ``imagenet`` (default) needs the checkpoint file and raises a clear error naming it
when absent; ``off`` trains without the term, which the user asks for with ``--without-perceptual``
and the trainer announces at start; ``random`` builds the same network with seeded random weights, so
tests exercise the whole code path offline (its values mean nothing).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from ..perceptual import IMAGENET_MEAN, IMAGENET_STD, VGG19_POOL_WEIGHTS, missing_weights_message

PERCEPTUAL_CHOICES = ("imagenet", "random", "off")
WITHOUT_FLAG = "--without-perceptual"


def check_perceptual_choice(choice: str) -> str:
    if choice not in PERCEPTUAL_CHOICES:
        raise InputError(f"unknown perceptual backbone '{choice}'; use one of {', '.join(PERCEPTUAL_CHOICES)}")
    return choice


class VGG19Perceptual(nn.Module):
    """Weighted L1 distance between VGG19 feature maps of two images in [-1, 1].

    ``after`` and ``weights``: the outputs of the first ``len(weights)`` layers of type ``after`` are
    compared, each weighted: IMPORTANT-Net compares the five max-pool outputs with weights 1/16 ... 1
    (Eq. 5-6, the default); Seq2Seq's code the first 13 ReLU outputs (up to relu5_1) with equal weights.
    ``distance``: ``l1`` (IMPORTANT-Net) or ``mse`` (Seq2Seq's code).
    Every channel of a multi-channel image is compared on its own (replicated to RGB), then averaged.
    The network is frozen and kept out of checkpoints (it is rebuilt from torchvision's file).
    """

    def __init__(self, backbone: str = "imagenet", *, after: type[nn.Module] = nn.MaxPool2d,
                 weights: Sequence[float] = VGG19_POOL_WEIGHTS, distance: str = "l1") -> None:
        super().__init__()
        import torchvision.models as tvm

        check_perceptual_choice(backbone)
        if backbone == "off":
            raise InputError("VGG19Perceptual: backbone 'off' means no perceptual term; do not build one")
        if backbone == "imagenet":
            message = missing_weights_message(tvm.VGG19_Weights.IMAGENET1K_V1, "VGG19", allow_download=False)
            if message:
                raise InputError(f"the perceptual loss needs VGG19: {message}; or pass {WITHOUT_FLAG} to "
                                 "train without the perceptual term")
        if distance not in ("l1", "mse"):
            raise InputError(f"unknown perceptual distance '{distance}'; use 'l1' or 'mse'")
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(0)
            features = tvm.vgg19(weights=tvm.VGG19_Weights.IMAGENET1K_V1 if backbone == "imagenet" else None).features
        taps = [i for i, layer in enumerate(features) if isinstance(layer, after)]
        if not 1 <= len(weights) <= len(taps):
            raise InputError(f"VGG19 has {len(taps)} {after.__name__} outputs; {len(weights)} weights were given")
        taps = taps[:len(weights)]
        self.features = features[:taps[-1] + 1].eval().requires_grad_(False)
        self.taps, self.weights, self.distance = taps, tuple(float(w) for w in weights), distance
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VGG19Perceptual":
        return super().train(False)  # frozen: always in evaluation mode

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.shape != target.shape or prediction.ndim != 4:
            raise InputError(f"perceptual loss needs two (B, C, H, W) tensors of one shape, got "
                             f"{tuple(prediction.shape)} and {tuple(target.shape)}")
        n = prediction.shape[0] * prediction.shape[1]
        both = torch.cat([prediction, target]).flatten(0, 1)[:, None].float()
        x = ((both + 1) / 2).expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        total, weights = prediction.new_zeros((), dtype=torch.float32), iter(self.weights)
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                diff = x[:n] - x[n:]
                total = total + next(weights) * (diff.abs().mean() if self.distance == "l1" else diff.pow(2).mean())
        return total


def gradient_penalty(score_of, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): mean of (||grad score_of(x_hat)||_2 - 1)^2 at random interpolates
    x_hat of ``real`` and ``fake``; ``score_of(x_hat)`` returns the critic's scores (wrap conditioned
    critics in a lambda)."""
    alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    grad, = torch.autograd.grad(score_of(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()
