"""IMPORTANT-Net: any n >= 1 registered MRI sequences -> one missing sequence (2D slices).

Follows Zhang et al., "IMPORTANT-Net: Integrated MRI multi-parameter reinforcement fusion generator with
attention network for synthesizing absent data" (``shared/papers/important-net.txt``):

* Sec. 3.1, parameter reconstruction module: one encoder-decoder :class:`ParameterReconstructor` per input
  sequence; its reconstruction is supervised by Eq. 1 (``ImportantNetOutput.reconstructions``), its encoder
  features P_i^dn (four down-sampling levels) and decoder features P_i^um (four up-sampling levels) feed the
  fusion.
* Sec. 3.2 and Fig. 2, multi-parameter fusion with attention (:class:`MPFA`): the MAPS "interaction room"
  (:func:`maps_interaction`), concatenation of the features before and after the interaction (P_concat),
  the parameter attention of Eq. 2 (:class:`~MRISynthesisLib.models.blocks.ChannelAttention`), P_concat +
  P'_concat -> Conv1, concatenation with F'_{k-1} (the previous MPFA output, max-pooled or up-sampled),
  Conv2 -> F_k.
* Sec. 3.3 and Fig. 3, hierarchical V^- -shape generation (:class:`ImportantNet`): MPFA1-4 form the analysis
  path (max pooling between them), then two 3x3 convolutions with 1024 and 512 filters, then MPFA5-8 form the
  synthesis path, each also taking the analysis-path output of its scale (skip connection); a 3x3
  convolution to one channel and tanh end it.
* Sec. 3.4, the discriminator D(p_1..p_n, y) of Eq. 3 (:class:`ImportantNetDiscriminator`,
  ``SPEC.extras["discriminator"]``). The losses (adversarial, lambda_1 = 100 target L1, lambda_2 = 25
  reconstruction L1, lambda_3 = 200 VGG19 perceptual with pool weights 1/16 ... 1) live in ``training``.

Output of the generator (:class:`ImportantNetOutput`): ``synthesized`` (B, 1, H, W) in [-1, 1],
``reconstructions`` (B, n, H, W) in [-1, 1] (channel i reconstructs input i, for Eq. 1) and ``attention``,
the eight parameter-attention maps A_para (B, C_k, 1, 1) in (0, 1), analysis path first. The generator takes
one tensor (B, n, H, W) (the plain path for inference and MAC counting; :meth:`ImportantNet.synthesize`
returns just the synthesized tensor) or a list of n tensors (B, 1, H, W). H and W must be multiples of 32
(five stride-2 levels in each reconstruction branch), at least 32.

Choices where the paper is vague (the public Keras code, see ``shared/notes/papers-code.md``, is used where
it is sound; where it disagrees with the paper we follow the paper):

* Any n: the paper's text and code are written for three inputs and the code fuses every pair (sum,
  product, max, absolute difference of each pair, 4 n(n-1)/2 maps, quadratic in n). We fuse all n inputs at
  once so the width grows linearly and every n >= 1 works: element-wise **maximum** over the n inputs,
  element-wise **average** (the paper's "Average"; the code's sum is the same up to a factor),
  **product** = mean of the pairwise products x_i * x_j over i < j (degree two whatever n is, so its scale
  does not explode or vanish as n grows), **subtract** = mean absolute pairwise difference |x_i - x_j| over
  i < j (symmetric, so the order of the inputs does not matter). For n = 2 these are exactly the code's
  pairwise maps (average in place of sum). P_concat = [x_1 .. x_n, max, average, product, subtract], i.e.
  (n + 4) C channels.
* n = 1: there is nothing to interact with (no pairs), so the interaction room is skipped and P_concat is
  the single branch's features (C channels); attention, Conv1, Conv2 and the V^- -shape path are unchanged.
  The model is then a reconstruction branch plus an attention-refined U-shaped generator.
* Parameter attention: shared two-layer fully connected network C -> C/2 -> C (reduction 2 as in the code)
  on the average- and max-pooled P_concat, summed, sigmoid (Eq. 2, CBAM). The code puts a ReLU on the second
  dense layer, which makes every weight >= 0.5; we follow Eq. 2 (no activation before the sum).
* Widths (paper silent; from the code): branch encoder 64/128/256/512 (a 3x3 convolution then a 3x3 stride-2
  convolution per level, BatchNorm, LeakyReLU 0.2), a 3x3 stride-2 bottleneck convolution with ReLU and no
  normalisation, decoder 512/256/128/64 then 1 channel + tanh. MPFA Conv1 has the branch width C of its
  level; Conv2 gives 2C in the analysis path (128/256/512/1024) and C/2 in the synthesis path
  (256/128/64/32). The analysis path uses LeakyReLU 0.2, the synthesis path ReLU, the 1024/512 convolutions
  ReLU without normalisation, all as in the code.
* Up-sampling in the branch decoders: 4x4 stride-2 transposed convolutions (``blocks.UNetUp``, pix2pix)
  instead of the code's 3x3 ones, which in PyTorch need an ``output_padding`` and overlap unevenly
  (checkerboard artefacts). The synthesis path up-samples F_{k-1} by nearest-neighbour interpolation as the
  code's ``UpSampling2D`` does; the last MPFA output is up-sampled once more before the output convolution.
* MPFA1 has no previous MPFA output: Conv2 then takes Conv1's output alone (as in the code).
* Normalisation: BatchNorm (code; the paper trained with batch 16) by default, ``norm="instance"`` is
  available for small-batch training. Convolution weights start from N(0, 0.02) as in the code.
* Discriminator: conditional, as in Eq. 3 and the code (Eq. 4 writes D(y) without the inputs): the n inputs
  and the real or synthesized target concatenated, 3x3 stride-2 convolutions 64/128/256/512 (no norm on the
  first), a 3x3 512 convolution, a 3x3 convolution to one channel: a 14x14 patch map at 224x224. It returns
  logits; the code's sigmoid is folded into ``BCEWithLogitsLoss`` (numerically safe under autocast).
* ``lite``: the same structure with branch widths 16/32/48/64 and bottleneck 128/64 (discriminator
  16/32/48/64) at 128x128: about 3.3 M parameters (6.6 MB in fp16). The deep levels are narrowed more than
  the shallow ones because the (n + 4) C-wide Conv1 and attention layers of the deep levels hold most of the
  parameters while the shallow levels hold most of the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import torch
from torch import nn

from .blocks import ChannelAttention, ConvNormAct, UNetUp, conv, conv_transpose, require_input
from .spec import CONFIGS, ModelSpec

#: Each reconstruction branch halves the size five times (four levels and a bottleneck).
SIZE_MULTIPLE = 32

_GENERATOR_CONFIGS: dict[str, dict] = {
    "paper": {"features": (64, 128, 256, 512), "bottleneck_features": (1024, 512)},
    "lite": {"features": (16, 32, 48, 64), "bottleneck_features": (128, 64)},
}
_DISCRIMINATOR_CONFIGS: dict[str, dict] = {
    "paper": {"features": (64, 128, 256, 512)},
    "lite": {"features": (16, 32, 48, 64)},
}
_INPUT_SIZE = {"paper": (224, 224), "lite": (128, 128)}


def _check_widths(name: str, values: Sequence[int], length: int) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != length or any(not isinstance(v, int) or v < 2 for v in values):
        raise ValueError(f"`{name}` must be {length} integers >= 2, not {values}")
    return values


def _check_n_inputs(n_inputs: int) -> int:
    if not isinstance(n_inputs, int) or isinstance(n_inputs, bool) or n_inputs < 1:
        raise ValueError(f"`n_inputs` must be an integer >= 1, not {n_inputs!r}")
    return n_inputs


def _init_weights(module: nn.Module) -> None:
    """N(0, 0.02) convolution weights and zero biases, as the public code initialises them."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def maps_interaction(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """The MAPS "interaction room" (Sec. 3.2): the inputs and their Max, Average, Product and Subtract.

    Args:
        features: n tensors of the same shape (B, C, H, W), one per input sequence.

    Returns:
        P_concat: (B, (n + 4) C, H, W) = [x_1 .. x_n, max_i x_i, mean_i x_i, mean_{i<j} x_i x_j,
        mean_{i<j} |x_i - x_j|] for n >= 2; the single input (B, C, H, W) unchanged for n = 1 (no pairs to
        interact). See the module docstring for why pairwise means.
    """
    features = list(features)
    n = len(features)
    if n == 0:
        raise ValueError("maps_interaction needs at least one feature map")
    if n == 1:
        return features[0]
    stacked = torch.stack(features, dim=0)
    pairs = list(combinations(range(n), 2))
    product = sum(features[i] * features[j] for i, j in pairs) / len(pairs)
    subtract = sum((features[i] - features[j]).abs() for i, j in pairs) / len(pairs)
    return torch.cat([*features, stacked.amax(dim=0), stacked.mean(dim=0), product, subtract], dim=1)


class ParameterReconstructor(nn.Module):
    """Encoder-decoder of one input sequence (Sec. 3.1), without skips so that its features must carry the
    whole image; they are the P_i^dn and P_i^um the MPFA modules fuse.

    Args:
        features: widths of the four encoder levels (decoder mirrors them); default the paper's.
        norm: ``batch``, ``instance``, ``instance_affine`` or ``none``.
    """

    def __init__(self, features: Sequence[int] = (64, 128, 256, 512), norm: str = "batch") -> None:
        super().__init__()
        features = _check_widths("features", features, 4)
        levels, previous = [], 1
        for width in features:
            levels.append(nn.Sequential(
                ConvNormAct(2, previous, width, 3, 1, norm_kind=norm, act="leaky"),
                ConvNormAct(2, width, width, 3, 2, norm_kind=norm, act="leaky"),
            ))
            previous = width
        self.encoder = nn.ModuleList(levels)
        self.bottleneck = nn.Sequential(conv(2, features[-1], features[-1], 3, stride=2), nn.ReLU())
        widths = list(reversed(features))  # 512, 256, 128, 64
        self.decoder = nn.ModuleList(UNetUp(2, w_in, w_out, norm_kind=norm)
                                     for w_in, w_out in zip([features[-1], *widths[:-1]], widths))
        self.head = nn.Sequential(conv_transpose(2, features[0], 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(reconstruction (B, 1, H, W), encoder features at H/2..H/16, decoder features at H/16..H/2)."""
        down = []
        for level in self.encoder:
            x = level(x)
            down.append(x)
        x = self.bottleneck(x)
        up = []
        for level in self.decoder:
            x = level(x)
            up.append(x)
        return self.head(x), down, up


class MPFA(nn.Module):
    """Multi-parameter fusion with attention (Sec. 3.2, Fig. 2, Eq. 2).

    MAPS interaction -> P_concat; parameter attention A_para; Conv1(P_concat + P_concat * A_para);
    concatenation with F'_{k-1} (and, in the synthesis path, the analysis-path skip); Conv2 -> F_k.

    Args:
        n_inputs: number of input sequences n >= 1.
        channels: width C of the branch features of this level (also Conv1's width).
        out_channels: width of F_k (Conv2).
        previous_channels: width of F'_{k-1}; 0 for MPFA1.
        skip_channels: width of the analysis-path skip; 0 in the analysis path.
        norm: normalisation of Conv1 and Conv2.
        act: ``leaky`` (analysis path) or ``relu`` (synthesis path).
    """

    def __init__(self, n_inputs: int, channels: int, out_channels: int, previous_channels: int = 0,
                 skip_channels: int = 0, norm: str = "batch", act: str = "leaky") -> None:
        super().__init__()
        self.n_inputs = _check_n_inputs(n_inputs)
        concat_channels = channels * (n_inputs + 4 if n_inputs > 1 else 1)
        self.previous_channels, self.skip_channels = previous_channels, skip_channels
        self.attention = ChannelAttention(concat_channels, reduction=2)
        self.conv1 = ConvNormAct(2, concat_channels, channels, 3, norm_kind=norm, act=act)
        self.conv2 = ConvNormAct(2, channels + previous_channels + skip_channels, out_channels, 3,
                                 norm_kind=norm, act=act)

    def forward(self, features: Sequence[torch.Tensor], previous: torch.Tensor | None = None,
                skip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(F_k (B, out_channels, H, W), A_para (B, C_concat, 1, 1) in (0, 1))."""
        concat = maps_interaction(features)
        weights = self.attention(concat)
        fused = self.conv1(concat + concat * weights)
        parts = [fused] + [t for t in (previous, skip) if t is not None]
        return self.conv2(torch.cat(parts, dim=1)), weights


@dataclass
class ImportantNetOutput:
    """What the generator returns.

    Attributes:
        synthesized: (B, 1, H, W) in [-1, 1], the missing sequence G(p_1 .. p_n) (Eq. 3, 5).
        reconstructions: (B, n, H, W) in [-1, 1]; channel i is R_i(p_i), compared with input i in Eq. 1.
        attention: the eight parameter-attention maps A_para, (B, C_k, 1, 1) in (0, 1), MPFA1..MPFA8.
    """

    synthesized: torch.Tensor
    reconstructions: torch.Tensor
    attention: tuple[torch.Tensor, ...]


class ImportantNet(nn.Module):
    """The IMPORTANT-Net generator: n reconstruction branches, eight MPFA modules in a V^- shape.

    Args:
        n_inputs: number n >= 1 of input sequences, fixed for a built model (default 3, as in the paper).
        features: widths of the branches' four encoder levels (default 64/128/256/512); the analysis path is
            twice as wide, the synthesis path half as wide.
        bottleneck_features: the two 3x3 convolutions between the paths (default 1024, 512, Sec. 3.3).
        norm: ``batch`` (default), ``instance``, ``instance_affine`` or ``none``.

    Example:
        >>> model = ImportantNet(n_inputs=2, features=(8, 16, 32, 64), bottleneck_features=(64, 32))
        >>> out = model(torch.zeros(1, 2, 64, 64))
        >>> out.synthesized.shape, out.reconstructions.shape
        (torch.Size([1, 1, 64, 64]), torch.Size([1, 2, 64, 64]))
    """

    def __init__(self, n_inputs: int = 3, features: Sequence[int] = (64, 128, 256, 512),
                 bottleneck_features: Sequence[int] = (1024, 512), norm: str = "batch") -> None:
        super().__init__()
        self.n_inputs = _check_n_inputs(n_inputs)
        features = _check_widths("features", features, 4)
        bottleneck_features = _check_widths("bottleneck_features", bottleneck_features, 2)
        self.branches = nn.ModuleList(ParameterReconstructor(features, norm) for _ in range(n_inputs))
        analysis_out = [2 * f for f in features]
        self.analysis = nn.ModuleList(
            MPFA(n_inputs, f, analysis_out[k], previous_channels=analysis_out[k - 1] if k else 0, norm=norm,
                 act="leaky")
            for k, f in enumerate(features))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = nn.Sequential(conv(2, analysis_out[-1], bottleneck_features[0], 3), nn.ReLU(),
                                        conv(2, bottleneck_features[0], bottleneck_features[1], 3), nn.ReLU())
        synthesis, previous = [], bottleneck_features[1]
        for k in reversed(range(4)):  # decoder features at H/16 (width f4) up to H/2 (width f1)
            synthesis.append(MPFA(n_inputs, features[k], features[k] // 2, previous_channels=previous,
                                  skip_channels=analysis_out[k], norm=norm, act="relu"))
            previous = features[k] // 2
        self.synthesis = nn.ModuleList(synthesis)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Sequential(conv(2, previous, 1, 3), nn.Tanh())
        _init_weights(self)

    def _as_tensor(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = list(x)
            if len(x) != self.n_inputs:
                raise ValueError(f"IMPORTANT-Net was built for n_inputs={self.n_inputs} sequences, "
                                 f"but {len(x)} were given")
            for i, item in enumerate(x):
                require_input(item, channels=1, dims=2, min_size=SIZE_MULTIPLE, multiple=SIZE_MULTIPLE,
                              name=f"input sequence {i}")
            if len({tuple(item.shape) for item in x}) > 1:
                raise ValueError(f"the input sequences must have the same shape, not {[tuple(t.shape) for t in x]}")
            x = torch.cat(x, dim=1)
        if x.ndim == 4 and x.shape[1] != self.n_inputs:
            raise ValueError(f"input must have {self.n_inputs} channel(s), one per input sequence "
                             f"(the model was built with n_inputs={self.n_inputs}), but it has {x.shape[1]}")
        require_input(x, channels=self.n_inputs, dims=2, min_size=SIZE_MULTIPLE, multiple=SIZE_MULTIPLE)
        return x

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> ImportantNetOutput:
        """Synthesize the missing sequence.

        Args:
            x: (B, n, H, W) in [-1, 1], or a list of n tensors (B, 1, H, W); H, W multiples of 32.

        Returns:
            :class:`ImportantNetOutput` with ``synthesized``, ``reconstructions`` and ``attention``.
        """
        x = self._as_tensor(x)
        reconstructions, down, up = [], [[] for _ in range(4)], [[] for _ in range(4)]
        for i, branch in enumerate(self.branches):
            recon, branch_down, branch_up = branch(x[:, i:i + 1])
            reconstructions.append(recon)
            for level in range(4):
                down[level].append(branch_down[level])
                up[level].append(branch_up[level])
        attention, analysis, f = [], [], None
        for k, mpfa in enumerate(self.analysis):  # MPFA1-4
            f, weights = mpfa(down[k], None if k == 0 else self.pool(f))
            analysis.append(f)
            attention.append(weights)
        f = self.bottleneck(f)
        for j, mpfa in enumerate(self.synthesis):  # MPFA5-8
            f, weights = mpfa(up[j], f if j == 0 else self.upsample(f), analysis[3 - j])
            attention.append(weights)
        synthesized = self.head(self.upsample(f))
        return ImportantNetOutput(synthesized, torch.cat(reconstructions, dim=1), tuple(attention))

    def synthesize(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Only the synthesized sequence (B, 1, H, W): the plain-tensor path for inference."""
        return self.forward(x).synthesized


class ImportantNetDiscriminator(nn.Module):
    """Conditional patch discriminator D(p_1 .. p_n, y) of Eq. 3-4 (layout from the public code).

    Args:
        n_inputs: number n of input sequences it is conditioned on.
        features: widths of the four stride-2 convolutions; a fifth 3x3 convolution keeps the last width.
        norm: normalisation of all but the first convolution (``batch`` as in the code).

    Returns (forward): logits (B, 1, H/16, W/16), one per patch; apply ``BCEWithLogitsLoss``.
    """

    def __init__(self, n_inputs: int = 3, features: Sequence[int] = (64, 128, 256, 512),
                 norm: str = "batch") -> None:
        super().__init__()
        self.n_inputs = _check_n_inputs(n_inputs)
        features = _check_widths("features", features, 4)
        layers, previous = [], n_inputs + 1
        for k, width in enumerate(features):
            layers.append(ConvNormAct(2, previous, width, 3, 2, norm_kind="none" if k == 0 else norm, act="leaky"))
            previous = width
        layers += [ConvNormAct(2, previous, previous, 3, 1, norm_kind=norm, act="leaky"), conv(2, previous, 1, 3)]
        self.model = nn.Sequential(*layers)
        _init_weights(self)

    def forward(self, sources: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: sources (B, n, H, W), the inputs; target (B, 1, H, W), real or synthesized. H, W multiples
        of 16."""
        require_input(sources, channels=self.n_inputs, dims=2, min_size=16, multiple=16, name="sources")
        require_input(target, channels=1, dims=2, min_size=16, multiple=16, name="target")
        if sources.shape[0] != target.shape[0] or sources.shape[2:] != target.shape[2:]:
            raise ValueError(f"sources {tuple(sources.shape)} and target {tuple(target.shape)} must have the same "
                             "batch and spatial size")
        return self.model(torch.cat([sources, target], dim=1))


def _check_config(config: str) -> None:
    if config not in CONFIGS:
        raise ValueError(f"unknown configuration '{config}'; use one of {', '.join(CONFIGS)}")


def build(config: str = "lite", **overrides) -> ImportantNet:
    """The generator of ``config`` (``lite`` or ``paper``); ``overrides`` replace constructor arguments,
    e.g. ``build("paper", n_inputs=2)``."""
    _check_config(config)
    return ImportantNet(**{"n_inputs": 3, **_GENERATOR_CONFIGS[config], **overrides})


def build_discriminator(config: str = "lite", **overrides) -> ImportantNetDiscriminator:
    """The discriminator of ``config``; pass the generator's ``n_inputs`` when it is not 3."""
    _check_config(config)
    return ImportantNetDiscriminator(**{"n_inputs": 3, **_DISCRIMINATOR_CONFIGS[config], **overrides})


def example_inputs(model: ImportantNet, config: str, batch: int = 1) -> tuple[torch.Tensor]:
    """One (batch, n, H, W) tensor in [-1, 1] at the configuration's size, on the model's device
    (deterministic ramps, so it also works on the ``meta`` device)."""
    _check_config(config)
    height, width = _INPUT_SIZE[config]
    device = next(model.parameters()).device
    ramp = torch.linspace(-1.0, 1.0, height * width, device=device).reshape(1, 1, height, width)
    signs = torch.tensor([(-1.0) ** i for i in range(model.n_inputs)], device=device).reshape(1, -1, 1, 1)
    return ((ramp * signs).expand(batch, -1, -1, -1).contiguous(),)


SPEC = ModelSpec(
    name="important-net",
    title="IMPORTANT-Net",
    paper="important-net.txt",
    inputs="n >= 1 registered sequences (default 3)",
    outputs="one missing sequence (+ per-input reconstructions)",
    form="2D",
    input_size=dict(_INPUT_SIZE),
    build=build,
    example_inputs=example_inputs,
    paper_parameters_m=None,  # the paper reports neither parameters nor MACs
    paper_macs_g=None,
    extras={"discriminator": build_discriminator},
)
