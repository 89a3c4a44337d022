"""MP-GAN: class-conditional DCGAN and WGAN that synthesise multiparametric breast MR patches de novo.

Follows Haarburger et al., "Multiparametric Magnetic Resonance Image Synthesis using Generative
Adversarial Networks" (``multiparametric-gan-dcgan-wgan.txt``; no public code): §2-3 (axial 64 x 64 patches
of T2 and a T1 DCE series, one pre-contrast and four post-contrast phases), §3.1 (DCGAN: a discriminator
of four strided convolutions with batch norm and LeakyReLU and a fully connected layer; a generator of
four up-convolutions with batch norm and ReLU and a final up-convolution with tanh, the up-convolutions
replaced by Odena et al.'s "better upconvolution", i.e. resize then convolve; seven output channels; a
Gaussian noise vector z), §3.2 (WGAN with weight clipping, five critic updates per generator update,
RMSProp, batch 64; the condition y in {benign, malignant, no findings} one-hot and concatenated to z).

Networks:

* :class:`Generator` ``G(z, class_index)``: ``[z, onehot(y)]`` -> fully connected "project and reshape" to
  ``8f x 4 x 4`` + batch norm + ReLU -> three resize-convolutions (nearest x2, 3x3 conv, batch norm, ReLU)
  to ``4f``, ``2f``, ``f`` at 8, 16, 32 -> a last resize-convolution to 7 channels at 64 with tanh.
  Four up-sampling layers with batch norm and ReLU and a final up-sampling layer with tanh, as §3.1
  counts them (the DCGAN reference's first 1x1 -> 4x4 transposed convolution is a fully connected layer,
  and a resize-convolution of a 1x1 map would give a constant one, so it stays fully connected).
* :class:`Discriminator` ``D(x, class_index)`` (DCGAN) and :class:`Critic` (WGAN): ``[x, onehot(y)]``
  (the one-hot tiled over the patch as three extra channels) -> four 4x4 stride-2 convolutions
  (``f``, ``2f``, ``4f``, ``8f``; 64 -> 4) with LeakyReLU(0.2) -> fully connected to one number. The
  discriminator returns logits (use ``BCEWithLogitsLoss``), the critic an unbounded score.

Where the paper is vague, our choices and why:

* Output channels (:data:`CHANNELS`): T2, T1 pre, T1 post 1-4 and the subtraction T1 post1 - T1 pre.
  The paper's data are T2 plus five DCE phases (six images) yet it says "seven channels, one for each MR
  contrast or DCE time point"; its Figure 1 shows exactly these seven "contrasts" (Sub defined there), so
  we read the seventh channel as the subtraction. :func:`stack_channels` builds the seven from a T2 patch
  and a DCE series scaled to [-1, 1].
* Conditioning: the paper only says y is concatenated to z. Following Mirza & Osindero (the paper's
  [MO14]), the discriminator and critic also see y, as three constant channels beside the image, the
  usual way for a convolutional discriminator. Class order is the paper's: 0 benign, 1 malignant,
  2 healthy ("no findings", also accepted by that name).
* Sizes from DCGAN (Radford et al., the paper's [RMC15]): latent size 100, widths ``f = 64`` (512, 256,
  128, 64 in the generator; 64, 128, 256, 512 in the discriminator), weights N(0, 0.02), batch-norm
  scale N(1, 0.02), no batch norm on the discriminator's first layer and on the generator's output.
  Resize-convolution: nearest-neighbour x2 then a 3x3 convolution (Odena et al.'s recommendation).
* The critic has no batch norm: the paper says to set the WGAN's hyperparameters "as suggested in
  [GAA*17]", which removes batch norm from the critic (a sample's score must not depend on its batch).
  The paper trains the WGAN with weight clipping (it rejected the gradient penalty), hence
  :meth:`Critic.clip_weights_`; clip value 0.01 and RMSProp 5e-5 from Arjovsky et al., which the paper
  follows for the update ratio of 5 (see :data:`TRAINING`).
* The generator is the same for both variants; ``build(config, variant=...)`` records the variant on it
  (``model.variant``) and :data:`ADVERSARY` names the matching network in ``SPEC.extras``.
* Lite configuration: ``f = 32`` (0.81 M generator parameters). The patch size may be any multiple of
  16 (tests use 32); the paper's is 64.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from . import blocks
from .spec import ModelSpec

#: The condition y, in the paper's order (§3.2); index = position.
CLASSES = ("benign", "malignant", "healthy")
#: the classes whose enhancement curves must wash out (malignant) or persist (benign) as real ones do
LESION_CLASSES = ("benign", "malignant")
_CLASS_ALIASES = {"no findings": "healthy", "no-findings": "healthy", "no_findings": "healthy",
                  "nofindings": "healthy", "normal": "healthy"}
#: Output channels, one per MR contrast or DCE time point (see the module docstring for the seventh).
CHANNELS = ("T2", "T1_pre", "T1_post1", "T1_post2", "T1_post3", "T1_post4", "Sub")
#: Patch size of the paper (axial 64 x 64).
PATCH_SIZE = 64
#: Variant -> the name of its adversary in ``SPEC.extras``.
ADVERSARY = {"dcgan": "discriminator", "wgan": "critic"}
#: Training settings from §3.1-3.2 (DCGAN's Adam settings from [RMC15]; WGAN's RMSProp and clip value from
#: Arjovsky et al., as the paper uses their weight clipping and 5 critic updates per generator update).
TRAINING = {
    "dcgan": {"batch": 64, "optimizer": "adam", "lr": 2e-4, "betas": (0.5, 0.999), "critic_steps": 1},
    "wgan": {"batch": 64, "optimizer": "rmsprop", "lr": 5e-5, "clip": 0.01, "critic_steps": 5},
}

ClassArg = Union[int, str, Sequence[Union[int, str]], torch.Tensor]

_CONFIGS: dict[str, dict] = {
    "paper": {"latent_size": 100, "base_filters": 64},
    "lite": {"latent_size": 100, "base_filters": 32},
}


def class_names() -> str:
    """'0=benign, 1=malignant, 2=healthy' for error messages and help texts."""
    return ", ".join(f"{i}={name}" for i, name in enumerate(CLASSES))


def _one_class(value: int | str) -> int:
    if isinstance(value, str):
        key = value.strip().lower()
        key = _CLASS_ALIASES.get(key, key)
        if key not in CLASSES:
            raise InputError(f"unknown class '{value}'; use one of {', '.join(CLASSES)}")
        return CLASSES.index(key)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"a class must be a name or an index, not {type(value).__name__} {value!r}")
    if not 0 <= value < len(CLASSES):
        raise InputError(f"unknown class index {value}; classes are {class_names()}")
    return int(value)


def class_indices(value: ClassArg, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The condition as a (batch,) int64 tensor, from one class (name or index) or one per sample.

    Raises:
        InputError (a ValueError): an unknown name or index, or a count that is not ``batch``.
    """
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise InputError(f"class indices must be an integer tensor, not {value.dtype}")
        if value.ndim == 0:
            value = value.reshape(1).expand(batch)
        if value.ndim != 1 or value.shape[0] != batch:
            raise InputError(f"class indices must have shape ({batch},), not {tuple(value.shape)}")
        if value.device.type != "meta" and value.numel():  # meta tensors (size counting) have no values
            low, high = int(value.min()), int(value.max())
            if low < 0 or high >= len(CLASSES):
                raise InputError(f"unknown class index {low if low < 0 else high}; classes are {class_names()}")
        return value.to(device=device if device is not None else value.device, dtype=torch.long)
    if isinstance(value, (str, int, np.integer)):
        return torch.full((batch,), _one_class(value), dtype=torch.long, device=device)
    values = [_one_class(v) for v in value]
    if len(values) != batch:
        raise InputError(f"{len(values)} classes given for a batch of {batch}")
    return torch.tensor(values, dtype=torch.long, device=device)


def one_hot(index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 3) one-hot rows; built by scatter so that it also works on the ``meta`` device."""
    out = torch.zeros(index.shape[0], len(CLASSES), dtype=dtype, device=index.device)
    return out.scatter_(1, index[:, None], 1.0)


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: weights N(0, 0.02), batch-norm scale N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _check_patch_size(patch_size: int) -> None:
    if patch_size < 16 or patch_size % 16:
        raise ValueError(f"`patch_size` must be a multiple of 16 (four halvings), not {patch_size}")


class Generator(nn.Module):
    """Noise and class -> a seven-channel patch in [-1, 1] (§3.1, with resize-convolutions).

    Args:
        latent_size: length of z (100).
        base_filters: width ``f`` of the last hidden layer; the others are 2f, 4f, 8f (64).
        out_channels: one per contrast or time point (7, see :data:`CHANNELS`).
        patch_size: output size, a multiple of 16 (64).
        upsample_mode: interpolation of the resize-convolutions (``nearest``).
        variant: ``dcgan`` or ``wgan``, recorded for the trainer (the network is the same).

    Example:
        >>> g = Generator(base_filters=8, patch_size=32).eval()
        >>> g(torch.randn(2, 100), torch.tensor([0, 2])).shape
        torch.Size([2, 7, 32, 32])
    """

    def __init__(self, latent_size: int = 100, base_filters: int = 64, out_channels: int = len(CHANNELS),
                 patch_size: int = PATCH_SIZE, upsample_mode: str = "nearest", variant: str = "dcgan") -> None:
        super().__init__()
        if latent_size < 1 or base_filters < 1 or out_channels < 1:
            raise ValueError("`latent_size`, `base_filters` and `out_channels` must be at least 1, not "
                             f"{latent_size}, {base_filters}, {out_channels}")
        _check_patch_size(patch_size)
        if variant not in ADVERSARY:
            raise ValueError(f"unknown `variant` '{variant}'; use one of {', '.join(ADVERSARY)}")
        self.latent_size, self.out_channels, self.patch_size = latent_size, out_channels, patch_size
        self.variant = variant
        self.num_classes = len(CLASSES)
        self.start = patch_size // 16
        widths = [base_filters * 8, base_filters * 4, base_filters * 2, base_filters]
        self.project = nn.Linear(latent_size + self.num_classes, widths[0] * self.start ** 2, bias=False)
        self.project_act = nn.Sequential(blocks.norm("batch", 2, widths[0]), blocks.activation("relu"))
        self.up = nn.Sequential(*[blocks.ResizeConv(2, cin, cout, mode=upsample_mode, norm_kind="batch", act="relu")
                                  for cin, cout in zip(widths[:-1], widths[1:])])
        self.last = blocks.ResizeConv(2, widths[-1], out_channels, mode=upsample_mode, norm_kind="none", act="tanh")
        _dcgan_init(self)

    def forward(self, z: torch.Tensor, class_index: ClassArg) -> torch.Tensor:
        """(batch, 7, patch, patch) in [-1, 1] from z (batch, latent_size) and one class per sample.

        ``class_index``: an int64 tensor (batch,), or a class name or index (or a list of them).
        z may also be (batch, latent_size, 1, 1), DCGAN's usual shape.
        """
        if z.ndim == 4 and z.shape[2:] == (1, 1):
            z = z.flatten(1)
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise InputError(f"z must have shape (batch, {self.latent_size}), not {tuple(z.shape)}")
        if not z.dtype.is_floating_point:
            raise InputError(f"z must be a float tensor, not {z.dtype}")
        y = one_hot(class_indices(class_index, z.shape[0], z.device), z.dtype)
        x = self.project(torch.cat([z, y], dim=1))
        x = self.project_act(x.view(z.shape[0], -1, self.start, self.start))
        return self.last(self.up(x))

    def sample(self, n: int, class_name: ClassArg, seed: int | None = None) -> torch.Tensor:
        """``n`` patches of one class (or one class per patch), in eval mode without gradients.

        The same ``seed`` gives the same patches on the same device (z drawn on the CPU); None uses
        torch's global generator.
        """
        if int(n) < 1:
            raise InputError(f"the number of patches must be at least 1, not {n}")
        index = class_indices(class_name, int(n))
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        parameter = next(self.parameters())
        z = torch.randn(int(n), self.latent_size, generator=generator).to(parameter.device, parameter.dtype)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self(z, index.to(parameter.device))
        finally:
            self.train(was_training)


class Discriminator(nn.Module):
    """DCGAN discriminator conditioned on the class: (batch, 7, p, p) and y -> (batch, 1) real/fake logits.

    Args:
        in_channels: channels of the patch (7).
        base_filters: width of the first convolution, doubled three times (64).
        patch_size: the patch size it judges, a multiple of 16 (64).
        norm_kind: normalisation after convolutions 2-4 (``batch``; the critic uses ``none``).
        slope: LeakyReLU slope (0.2, DCGAN).
    """

    def __init__(self, in_channels: int = len(CHANNELS), base_filters: int = 64, patch_size: int = PATCH_SIZE,
                 norm_kind: str = "batch", slope: float = 0.2) -> None:
        super().__init__()
        _check_patch_size(patch_size)
        self.in_channels, self.patch_size, self.num_classes = in_channels, patch_size, len(CLASSES)
        widths = [base_filters, base_filters * 2, base_filters * 4, base_filters * 8]
        layers, previous = [], in_channels + self.num_classes
        for i, width in enumerate(widths):
            layers.append(blocks.ConvNormAct(2, previous, width, 4, 2, norm_kind="none" if i == 0 else norm_kind,
                                             act="leaky", slope=slope, padding=1))
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1] * (patch_size // 16) ** 2, 1)
        _dcgan_init(self)

    def forward(self, x: torch.Tensor, class_index: ClassArg) -> torch.Tensor:
        """One score per patch, shape (batch, 1): logits here, an unbounded Wasserstein score for the critic."""
        blocks.require_input(x, channels=self.in_channels, dims=2, min_size=self.patch_size, name="patch")
        if tuple(x.shape[2:]) != (self.patch_size, self.patch_size):
            raise InputError(f"patch must be {self.patch_size} x {self.patch_size}, not {tuple(x.shape[2:])}")
        y = one_hot(class_indices(class_index, x.shape[0], x.device), x.dtype)
        y = y[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.head(self.features(torch.cat([x, y], dim=1)).flatten(1))


class Critic(Discriminator):
    """WGAN critic: the discriminator without batch norm, an unbounded score, and weight clipping."""

    def __init__(self, in_channels: int = len(CHANNELS), base_filters: int = 64, patch_size: int = PATCH_SIZE,
                 norm_kind: str = "none", slope: float = 0.2) -> None:
        super().__init__(in_channels, base_filters, patch_size, norm_kind, slope)

    @torch.no_grad()
    def clip_weights_(self, value: float = TRAINING["wgan"]["clip"]) -> None:
        """Clamp every parameter to [-value, value] (Arjovsky et al.), after each critic update."""
        if value <= 0:
            raise ValueError(f"clip value must be positive, not {value}")
        for parameter in self.parameters():
            parameter.clamp_(-value, value)


def stack_channels(t2, dce):
    """The seven channels of :data:`CHANNELS` from a T2 patch (y, x) and a DCE series (t >= 5, y, x).

    Inputs are scaled to [-1, 1] (numpy arrays or torch tensors). The subtraction is computed on the
    [0, 1] scale, ``(post1 - pre) / 2``, so it stays in [-1, 1].
    """
    if dce.shape[0] < 5 or tuple(dce.shape[1:]) != tuple(t2.shape):
        raise InputError(f"need T2 (y, x) and DCE (t >= 5, y, x) on one grid, not {tuple(t2.shape)} and "
                         f"{tuple(dce.shape)}")
    planes = [t2, *[dce[k] for k in range(5)], (dce[1] - dce[0]) / 2]
    return torch.stack(planes) if isinstance(t2, torch.Tensor) else np.stack(planes)


def _settings(config: str, overrides: dict) -> dict:
    if config not in _CONFIGS:
        raise ValueError(f"unknown configuration '{config}'; use one of {', '.join(_CONFIGS)}")
    return {**_CONFIGS[config], **overrides}


def build(config: str = "paper", variant: str = "dcgan", **overrides) -> Generator:
    """The generator of ``variant`` (``dcgan`` or ``wgan``) in configuration ``paper`` or ``lite``."""
    return Generator(variant=variant, **_settings(config, overrides))


def build_discriminator(config: str = "paper", **overrides) -> Discriminator:
    """The DCGAN discriminator matching ``build(config)``."""
    settings = _settings(config, overrides)
    settings.pop("latent_size")
    return Discriminator(**settings)


def build_critic(config: str = "paper", **overrides) -> Critic:
    """The WGAN critic matching ``build(config, variant="wgan")``."""
    settings = _settings(config, overrides)
    settings.pop("latent_size")
    return Critic(**settings)


def example_inputs(model: Generator, config: str, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic z (a ramp in [-2, 2]) and classes cycling benign, malignant, healthy."""
    device = next(model.parameters()).device
    z = torch.linspace(-2.0, 2.0, batch * model.latent_size, device=device).reshape(batch, model.latent_size)
    return z, torch.arange(batch, device=device) % len(CLASSES)


SPEC = ModelSpec(
    name="mp-gan",
    title="MP-GAN (conditional DCGAN / WGAN)",
    paper="multiparametric-gan-dcgan-wgan.txt",
    inputs="noise z + class (benign, malignant, healthy)",
    outputs="multiparametric breast patch (T2, T1 pre, T1 post 1-4, subtraction)",
    form="noise -> 2D",
    input_size={"lite": (PATCH_SIZE, PATCH_SIZE), "paper": (PATCH_SIZE, PATCH_SIZE)},
    build=build,
    example_inputs=example_inputs,
    paper_parameters_m=None,  # the paper reports neither parameters nor MACs
    paper_macs_g=None,
    extras={"discriminator": build_discriminator, "critic": build_critic},
)
