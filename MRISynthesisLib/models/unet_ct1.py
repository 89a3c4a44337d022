"""U-Net cT1: a 3D pix2pix generator that synthesises post-contrast T1 from T1, T2 and FLAIR.

Follows the thesis "Generating synthetic post-contrast T1 images of gliomas" (``unet-synthetic-ct1.txt``):
§2.2 (MNI152-registered, skull-stripped volumes cropped to 160 x 192 x 160, z-scored and scaled to
[-1, 1]), §2.4 and Figure 3 ("Model 0", the baseline: "a modified version of the pix2pix generator
implemented by TensorFlow" with 3D convolutions, 3 input channels T1, T2, T2-FLAIR, 1 output channel and a
tanh at the end), §2.5 (Adam 2e-4, betas 0.5/0.99, at most 300 epochs, stop after 20 without improvement)
and §2.6 (the loss functions; the mixed loss of Eq. 4, L1 + SSIM (11^3 window) + enhancement-masked L1,
each weight 1, is the one the thesis concludes with).

Architecture (``UNetCT1``), TensorFlow's pix2pix generator with every 2D layer made 3D:

* encoder: ``levels`` levels of 4x4x4 stride-2 convolution, batch norm (none on the first level, as in
  TensorFlow), LeakyReLU; widths ``base_filters * 2**i`` capped at ``max_filters`` (64, 128, 256, 512, 512
  in the paper configuration);
* decoder: ``levels - 1`` levels of 4x4x4 stride-2 transposed convolution, batch norm, ReLU, dropout 0.5
  on the ``dropout_levels`` innermost levels (TensorFlow: the first three of its up-stack), each
  concatenated with the matching encoder output (:class:`.blocks.UNetUp`);
* output: a 4x4x4 stride-2 transposed convolution to one channel and tanh (§2.4).

Where the thesis is vague (it gives no filter counts, depth or parameter count in its text; Figure 3 is a
picture that did not survive), these are our choices and why:

* Depth: TensorFlow's generator has 8 levels for 256 x 256, which a 160 x 192 x 160 volume cannot take
  (160 = 2^5 x 5: a sixth halving gives odd sizes and the skip connections stop matching). The paper
  configuration uses 5 levels, the most the crop allows (bottleneck 5 x 6 x 5), with TensorFlow's widths
  64-128-256-512-512. Inputs must be a multiple of ``2**levels`` per axis (checked, with a clear error).
* LeakyReLU slope 0.3: the default of ``tf.keras.layers.LeakyReLU()`` that TensorFlow's pix2pix uses
  (the PyTorch pix2pix uses 0.2). Hence the encoder is built from :class:`.blocks.ConvNormAct`, which
  takes a slope, rather than :class:`.blocks.UNetDown`, which fixes 0.2; the layers are otherwise identical.
* Initialisation: normal(0, 0.02) for every convolution (§2.4, Model 1: "changed from normal
  initialization to Xavier"), batch-norm scale 1 and shift 0 (TensorFlow's defaults); ``init="xavier"``
  gives Model 1's choice.
* Dropout acts only in training mode (``model.eval()`` is deterministic); pix2pix's test-time dropout is
  not used, the thesis evaluates a single deterministic prediction.
* The first encoder convolution keeps its bias (TensorFlow omits it: 64 parameters, no effect on the
  function class).
* Batch norm needs more than one value per channel in training: with batch 1 the bottleneck must be
  larger than one voxel (at least ``2**(levels + 1)`` along one axis); checked with a clear error.
* No discriminator: the thesis trains the U-Net with voxel- and area-wise losses only and names a GAN as
  further work (§6), so :data:`SPEC` has no extras.
* Lite configuration: the same 5 levels at widths 12-24-48-96-96 (2.35 M parameters, 10.0 GMACs for a
  160 x 192 x 160 volume, about 1.2 s on 2 CPU cores); trainable on 64^3 phantom crops. The paper
  configuration counts 66.6 M parameters and 229 GMACs per volume (measured; the thesis gives neither).

The losses need no extra outputs; :func:`enhancement_mask` gives the mask of the enhancement-masked L1
(§2.6: cT1 - T1 > 0.3 on the [-1, 1] scale).
"""

from __future__ import annotations

import torch
from torch import nn

from . import blocks
from .spec import ModelSpec

#: Input channels in order (canonical names of :mod:`MRISynthesisLib.sequences`).
INPUT_SEQUENCES = ("T1", "T2", "FLAIR")
#: The synthesised sequence.
OUTPUT_SEQUENCE = "T1ce"
#: The thesis's crop of the MNI152 grid (z, y, x order as our volumes: 160 x 192 x 160 is symmetric).
PAPER_SIZE = (160, 192, 160)
#: §2.6: enhancement is cT1 - T1 above this, on intensities scaled to [-1, 1].
ENHANCEMENT_THRESHOLD = 0.3

_CONFIGS: dict[str, dict] = {
    "paper": {"base_filters": 64, "max_filters": 512, "levels": 5},
    "lite": {"base_filters": 12, "max_filters": 96, "levels": 5},
}


class UNetCT1(nn.Module):
    """3D pix2pix (TensorFlow interpretation) U-Net: (B, 3, z, y, x) T1/T2/FLAIR -> (B, 1, z, y, x) cT1.

    Args:
        in_channels: input sequences (3: T1, T2, FLAIR).
        out_channels: output sequences (1: post-contrast T1).
        base_filters: width of the first encoder level (64).
        max_filters: cap on the widths, doubled per level until reached (512).
        levels: number of stride-2 encoder levels; inputs must be a multiple of ``2**levels`` per axis (5).
        norm_kind: ``batch`` (pix2pix), or any name :func:`.blocks.norm` takes.
        dropout: dropout rate in the ``dropout_levels`` innermost decoder levels (0.5).
        dropout_levels: how many decoder levels, from the bottleneck out, have dropout (3, as TensorFlow).
        slope: LeakyReLU slope of the encoder (0.3, TensorFlow's default).
        init: ``normal`` (N(0, 0.02), Model 0) or ``xavier`` (Model 1).

    Example:
        >>> model = UNetCT1(base_filters=8, max_filters=32, levels=3).eval()
        >>> model(torch.zeros(1, 3, 16, 16, 16)).shape
        torch.Size([1, 1, 16, 16, 16])
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base_filters: int = 64,
                 max_filters: int = 512, levels: int = 5, norm_kind: str = "batch", dropout: float = 0.5,
                 dropout_levels: int = 3, slope: float = 0.3, init: str = "normal") -> None:
        super().__init__()
        blocks.require_positive(in_channels=in_channels, out_channels=out_channels, base_filters=base_filters,
                                max_filters=max_filters, levels=levels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), not {dropout}")
        if init not in ("normal", "xavier"):
            raise ValueError(f"unknown `init` '{init}'; use normal or xavier")
        self.in_channels, self.out_channels, self.levels = in_channels, out_channels, levels
        self.norm_kind = norm_kind
        widths = [min(base_filters * 2 ** i, max_filters) for i in range(levels)]
        self.widths = tuple(widths)

        self.down = nn.ModuleList()
        previous = in_channels
        for i, width in enumerate(widths):
            self.down.append(blocks.ConvNormAct(3, previous, width, 4, 2, norm_kind="none" if i == 0 else norm_kind,
                                                act="leaky", slope=slope, padding=1))
            previous = width
        self.up = nn.ModuleList()
        for j, width in enumerate(reversed(widths[:-1])):
            self.up.append(blocks.UNetUp(3, previous, width, norm_kind=norm_kind,
                                         dropout=dropout if j < dropout_levels else 0.0))
            previous = 2 * width  # concatenated with the skip of the same width
        self.last = nn.Sequential(blocks.conv_transpose(3, previous, out_channels), blocks.activation("tanh"))
        self.reset_parameters(init)

    @property
    def multiple(self) -> int:
        """Every spatial size must be a multiple of this (the total down-sampling factor)."""
        return 2 ** self.levels

    def reset_parameters(self, init: str = "normal") -> None:
        """Convolutions N(0, 0.02) (TensorFlow pix2pix) or Xavier-uniform (Model 1); biases 0; BN 1 and 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                if init == "xavier":
                    nn.init.xavier_uniform_(module.weight)
                else:
                    nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def check_input(self, x: torch.Tensor) -> None:
        """A clear ValueError for a wrong rank, channel count or size, before any layer runs."""
        blocks.require_input(x, channels=self.in_channels, dims=3, min_size=self.multiple, multiple=self.multiple,
                             name=f"input ({', '.join(INPUT_SEQUENCES)})" if self.in_channels == 3 else "input")
        if self.training and self.norm_kind == "batch":
            bottleneck = x.shape[0]
            for size in x.shape[2:]:
                bottleneck *= size // self.multiple
            if bottleneck < 2:
                raise ValueError(f"input {tuple(x.shape)} leaves a single bottleneck voxel per channel, which "
                                 "batch norm cannot normalise in training: use a batch of 2 or more or an input "
                                 f"of at least {2 * self.multiple} along one axis")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Synthetic cT1 in [-1, 1], same spatial size as ``x``."""
        self.check_input(x)
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        for layer, skip in zip(self.up, reversed(skips[:-1])):
            x = layer(x, skip)
        return self.last(x)


def enhancement_mask(t1: torch.Tensor, ct1: torch.Tensor, threshold: float = ENHANCEMENT_THRESHOLD) -> torch.Tensor:
    """Voxels that enhance (§2.6: registered cT1 minus T1 above 0.3), as a float mask for the masked L1.

    Both inputs are on the [-1, 1] scale the model sees, with the same shape.
    """
    if t1.shape != ct1.shape:
        raise ValueError(f"T1 {tuple(t1.shape)} and cT1 {tuple(ct1.shape)} must have the same shape")
    return (ct1 - t1 > threshold).to(ct1.dtype)


def build(config: str = "paper", **overrides) -> UNetCT1:
    """The generator in configuration ``paper`` or ``lite``; keyword ``overrides`` replace arguments."""
    if config not in _CONFIGS:
        raise ValueError(f"unknown configuration '{config}'; use one of {', '.join(_CONFIGS)}")
    return UNetCT1(**{**_CONFIGS[config], **overrides})


def example_inputs(model: UNetCT1, config: str, batch: int = 1) -> tuple[torch.Tensor]:
    """A deterministic ramp in [-1, 1] of the configuration's input size on the model's device."""
    size = SPEC.input_size[config]
    device = next(model.parameters()).device
    numel = batch * model.in_channels * size[0] * size[1] * size[2]
    x = torch.linspace(-1.0, 1.0, numel, device=device).reshape(batch, model.in_channels, *size)
    return (x,)


SPEC = ModelSpec(
    name="unet-ct1",
    title="U-Net cT1 (3D pix2pix generator)",
    paper="unet-synthetic-ct1.txt",
    inputs="T1 + T2 + FLAIR (registered, 3D)",
    outputs="post-contrast T1 (T1ce)",
    form="3D",
    input_size={"lite": PAPER_SIZE, "paper": PAPER_SIZE},
    build=build,
    example_inputs=example_inputs,
    paper_parameters_m=None,  # the thesis reports no parameter count or MACs
    paper_macs_g=None,
    extras={},
)
