"""Building blocks shared by the five models (2D or 3D by a ``dims`` argument), so no model file
re-implements a convolution-normalisation-activation, a residual block, an up-sampling or a pix2pix
U-Net level. Layer choices are passed by name, as MONAI's networks do.
"""

from __future__ import annotations

import torch
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INSTANCE = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_BATCH = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}


def _check_dims(dims: int) -> None:
    if dims not in (2, 3):
        raise ValueError(f"`dims` must be 2 or 3, not {dims}")


def conv(dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
         padding: int | None = None, padding_mode: str = "zeros", bias: bool = True) -> nn.Module:
    """A 2D or 3D convolution; ``padding`` defaults to 'same' for odd kernels at stride 1."""
    _check_dims(dims)
    if padding is None:
        padding = (kernel_size - 1) // 2
    return _CONV[dims](in_channels, out_channels, kernel_size, stride, padding, padding_mode=padding_mode, bias=bias)


def conv_transpose(dims: int, in_channels: int, out_channels: int, kernel_size: int = 4, stride: int = 2,
                   padding: int = 1, bias: bool = True) -> nn.Module:
    _check_dims(dims)
    return _CONV_T[dims](in_channels, out_channels, kernel_size, stride, padding, bias=bias)


def norm(kind: str, dims: int, channels: int) -> nn.Module:
    """``instance`` (no affine, as pix2pix and Seq2Seq use it), ``instance_affine``, ``batch`` or ``none``."""
    _check_dims(dims)
    if kind == "instance":
        return _INSTANCE[dims](channels, affine=False)
    if kind == "instance_affine":
        return _INSTANCE[dims](channels, affine=True)
    if kind == "batch":
        return _BATCH[dims](channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation '{kind}'; use instance, instance_affine, batch or none")


def activation(kind: str, slope: float = 0.2) -> nn.Module:
    """``relu``, ``leaky`` (LeakyReLU with ``slope``), ``tanh``, ``sigmoid`` or ``none``."""
    table = {"relu": lambda: nn.ReLU(inplace=False), "leaky": lambda: nn.LeakyReLU(slope),
             "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}
    if kind not in table:
        raise ValueError(f"unknown activation '{kind}'; use one of {', '.join(table)}")
    return table[kind]()


class ConvNormAct(nn.Sequential):
    """Convolution, normalisation, activation: the unit most of the papers' diagrams are drawn with."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 norm_kind: str = "instance", act: str = "leaky", slope: float = 0.2, padding: int | None = None,
                 padding_mode: str = "zeros") -> None:
        # a bias before any normalisation is cancelled by its mean subtraction: a dead parameter
        super().__init__(
            conv(dims, in_channels, out_channels, kernel_size, stride, padding, padding_mode,
                 bias=norm_kind == "none"),
            norm(norm_kind, dims, out_channels),
            activation(act, slope),
        )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with normalisation, the first activated, added to the input (CycleGAN/Seq2Seq)."""

    def __init__(self, dims: int, channels: int, norm_kind: str = "instance", act: str = "leaky",
                 padding_mode: str = "reflect") -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(dims, channels, channels, 3, norm_kind=norm_kind, act=act, padding_mode=padding_mode),
            ConvNormAct(dims, channels, channels, 3, norm_kind=norm_kind, act="none", padding_mode=padding_mode),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResizeConv(nn.Sequential):
    """Up-sampling by interpolation then convolution: the "better up-convolution" of Odena et al. 2016
    that avoids the checkerboard artefacts of transposed convolutions (MP-GAN, Seq2Seq's decoder)."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, scale: int = 2, mode: str = "nearest",
                 kernel_size: int = 3, norm_kind: str = "instance", act: str = "relu",
                 padding_mode: str = "zeros") -> None:
        align = None if mode == "nearest" else False
        super().__init__(
            nn.Upsample(scale_factor=scale, mode=mode, align_corners=align),
            ConvNormAct(dims, in_channels, out_channels, kernel_size, norm_kind=norm_kind, act=act,
                        padding_mode=padding_mode),
        )


class UNetDown(nn.Sequential):
    """pix2pix encoder level: 4x4 stride-2 convolution, normalisation, LeakyReLU(0.2)."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, norm_kind: str = "instance") -> None:
        super().__init__(ConvNormAct(dims, in_channels, out_channels, 4, 2, norm_kind=norm_kind, act="leaky",
                                     padding=1))


class UNetUp(nn.Module):
    """pix2pix decoder level: 4x4 stride-2 transposed convolution, normalisation, ReLU, optional dropout,
    then concatenation with the skip connection."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, norm_kind: str = "instance",
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers = [conv_transpose(dims, in_channels, out_channels, bias=norm_kind == "none"),
                  norm(norm_kind, dims, out_channels), nn.ReLU()]
        if dropout:
            layers.append(_DROPOUT[dims](dropout))
        self.up = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        return x if skip is None else torch.cat([x, skip], dim=1)


class ChannelAttention(nn.Module):
    """Shared fully connected layers on average- and max-pooled features, summed, sigmoid (CBAM, Woo et
    al. 2018): one weight in (0, 1) per channel. Returns the weights; the caller multiplies."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(range(2, x.ndim))
        avg, mx = x.mean(dim=spatial), x.amax(dim=spatial)
        weights = torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        return weights.view(*weights.shape, *([1] * len(spatial)))


def require_positive(**values: int) -> None:
    """Constructor check: every named size argument is at least 1, or a ValueError naming it."""
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"`{name}` must be at least 1, not {value}")


def require_input(x: torch.Tensor, *, channels: int, dims: int, min_size: int, multiple: int = 1,
                  name: str = "input") -> None:
    """A clear error for a wrong input before it reaches a layer that would fail with a shape trace."""
    expected_ndim = dims + 2
    if x.ndim != expected_ndim:
        raise ValueError(f"{name} must be {expected_ndim}D (batch, channels, {'z, ' if dims == 3 else ''}y, x), "
                         f"but it is {x.ndim}D with shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s), but it has {x.shape[1]}")
    spatial = tuple(x.shape[2:])
    if min(spatial) < min_size:
        raise ValueError(f"{name} spatial size {spatial} is too small: at least {min_size} per axis is needed")
    if multiple > 1 and any(s % multiple for s in spatial):
        raise ValueError(f"{name} spatial size {spatial} must be a multiple of {multiple} per axis "
                         "(pad it with preprocess.crop_or_pad)")
