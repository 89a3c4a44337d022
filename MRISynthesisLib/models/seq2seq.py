"""Seq2Seq: any one sequence (3D, or 4D with several phases) -> any target sequence chosen by a one-hot code.

Han et al., "Synthesis-based imaging-differentiation representation learning for multi-sequence 3D/4D
MRI" (``seq2seq-imaging-differentiation.txt``). This module follows section 3.2 (the generator: shared
Encoder, ConvLSTM, 4D-wise average, 4D-wise copy, ConvLSTM, HyperDecoder), section 3.3 and Algorithm 1
(the HyperConv layer), section 3.4 (the per-sequence discriminators D_j of Eq. 2) and section 4.1 (2.5D
mode: three adjacent axial slices as three channels). Layer widths are those of the public code
(fiy2W/mri_seq2seq, ``publications/src/seq2seq``), since the paper gives none.

Pieces and the names the training losses use:

* :class:`Seq2Seq` -- the generator ``G(E(x) | s)``. ``forward(x, target, phases=1)`` takes ``x`` as
  (B, C, H, W) for one phase or (B, T, C, H, W) for T >= 1 phases and returns the target in the same
  layout ((B, C, H, W), or (B, phases, C, H, W) for a 5D input). For the losses of Eqs. 1-3 the steps are
  exposed: :meth:`Seq2Seq.encode` (the fused representation, shared by all targets, so one encoding
  serves every target and the cycle term), :meth:`Seq2Seq.unroll` (4D-wise copy + decoder ConvLSTM) and
  :meth:`Seq2Seq.decode`; :meth:`Seq2Seq.target_code` turns a target into its one-hot code.
* :class:`Encoder`, :class:`ConvLSTM`, :class:`HyperDecoder`, :class:`HyperConv`,
  :class:`HyperResidualBlock` -- the blocks of Fig. 2.
* :class:`SequenceDiscriminator` -- ``extras["discriminator"]``: the D_j of Eq. 2.
* :func:`paper_table_size` -- parameters and MACs counted the way the paper's Table 1 counted them.

Target code. A one-hot vector of length ``code_length`` whose index follows :data:`SEQUENCE_ORDER`
(T1, T1ce, T2, FLAIR, PD, DWI, ADC, DCE): the first four are the order of the paper and of its code for
BraTS (t1, t1ce, t2, flair). A target is given as an index, a sequence name (any alias of
``sequences.py``), an integer tensor of indices or a one-hot tensor; all the rows of a batch must ask for
the same target (one code per batch, as Algorithm 1 mixes one kernel per forward). A code whose index is
not one of the model's sequences is a ValueError before any layer runs.

Choices where the paper is vague (and why):

* Widths from the public code: Encoder 7x7 conv to 64, 3x3 stride-2 convs to 128 and 256, six residual
  blocks at 256; two ConvLSTMs of 3 layers, 256 hidden channels, 3x3 kernels; HyperDecoder with six
  hyper-residual blocks at 256, bilinear x2 up-sampling + 3x3 HyperConv to 128 and to 64, 7x7 HyperConv to
  3 channels, tanh. InstanceNorm without affine, LeakyReLU(0.2) and reflect padding everywhere except the
  ConvLSTM gates (zero padding, as in the code).
* Code length 64 and weight-bank size 16 (the code's ``c_s`` and ``c_w``; the paper names them in
  Algorithm 1 without values). Only the first ``len(sequences)`` code entries name a sequence. The code
  passes through a shared MLP (Linear(64, 64) + LeakyReLU, as in the code) before each HyperConv's own
  Linear(64 -> 16) gives the mixing coefficients f of Algorithm 1 (no softmax, as in the code).
* HyperConv biases: the code gives every HyperConv a bias bank; here only the last one has one, since a
  bias straight before a non-affine InstanceNorm is removed by the normalisation (a parameter that can
  never learn). That drops 0.07 M parameters of the code's count.
* The two ConvLSTMs run for every input, 3D too (T = 1), as in the code, and the paper's parameter count
  (below) only matches with both in. Hidden states of the last encoder ConvLSTM layer are averaged over
  time (the paper's "4D-wise average"); the decoder ConvLSTM unrolls ``phases`` copies of it.
* Weight-bank initialisation as the code: Kaiming-normal over (C_in x k x k x bank), so the mixed kernel
  keeps a Kaiming-like scale. The bias bank starts small and uniform (PyTorch's convolution-bias bound over
  C_in x k x k x bank) rather than at zero as in the code, where the bias mixer gets no gradient until the
  bank has moved. Other layers keep PyTorch's defaults.
* Discriminator: the paper's Eq. 2 has one least-squares discriminator D_j per target sequence, but the
  public code uses none (a GAN loss class exists there, unused). :class:`SequenceDiscriminator` is a
  pix2pix 70x70 PatchGAN (4x4 convs 64-128-256 stride 2, 512 stride 1, InstanceNorm, LeakyReLU 0.2) whose
  last layer has one patch map per sequence: channel j is D_j, so the S discriminators share features.
* Intensities in [-1, 1] (the project's convention and the code's); the paper says [0, 1].

Sizes. Table 1 profiles one forward pass on BraTS, whose volumes are centrally cropped to 128 x 192 x 192
(section 4.1) and fed in 2.5D mode (three adjacent axial slices as channels), i.e. an input of
3 x 192 x 192 with one phase in and one out. At that size PyTorch's counter (``registry.count_parameters``
/ ``count_macs``) measures the ``paper`` configuration at **155.1 M parameters and 105.5 GMACs**, against
the paper's **35.8 M and 83.4 GMACs** for Seq2Seq-C. The layers are the same; what is counted is not:

* The HyperConv weight banks are ``nn.Parameter``s of a module that also has children (its Linear
  mixers), and the kernel mixing and convolution are functional calls. A module-hook counter such as
  thop (the usual source of "MPa / GMACs" columns) counts only leaf modules, so it sees neither the banks
  (119.3 M here: 113.2 M = 6 x 2 x 256 x 256 x 9 x 16 in the hyper-residual blocks, 6.0 M in the
  up-sampling and output layers) nor the HyperConv convolutions (22.1 GMACs) and kernel mixing (0.1 GMACs).
* Leaving exactly those out, :func:`paper_table_size` gives **35.80 M parameters and 83.24 GMACs**
  (Encoder 7.46 M / 18.01 GMACs, the two ConvLSTMs 28.32 M / 65.23 GMACs, code MLP and mixers 0.02 M):
  0.0 % and 0.2 % from Table 1 (thop also counts normalisation and up-sampling, which PyTorch's counter
  does not). The same rule reproduces the paper's Seq2Seq-A, whose AdaIN decoder has plain (counted)
  convolutions: 105.5 GMACs in Table 1 against our 83.24 + 22.09 = 105.33, and 43.7 M against our
  35.8 M + 7.5 M of decoder convolutions + its AdaIN MLP. It is also where the public code's ~155 M
  comes from: 155.1 M here plus 0.07 M for the bias banks and mixers it keeps before InstanceNorms.
  We keep the paper's architecture (and so the real 155 M / 105 GMACs) rather than shrink the banks to
  hit 35.8 M: the table's figure is a counting artefact, not a smaller network.

The ``lite`` configuration (widths 16-32-48, three residual and three hyper-residual blocks, one
ConvLSTM layer per side, code length 8, bank size 4) has 1.06 M parameters (2.1 MB in fp16) and
1.88 GMACs per 3 x 192 x 192 slice (2.94 at 240 x 240); a whole BraTS volume (155 slices of 240 x 240)
ran in 18 s on one CPU thread.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..sequences import canonical
from .blocks import ConvNormAct, ResidualBlock, activation, conv, norm, require_input, require_positive
from .spec import ModelSpec

#: Index of each sequence in the one-hot target code. The first four are the paper's BraTS order.
SEQUENCE_ORDER: tuple[str, ...] = ("T1", "T1ce", "T2", "FLAIR", "PD", "DWI", "ADC", "DCE")

Target = Union[int, str, torch.Tensor]  # typing.Union: Slicer 5.6-5.8 run Python 3.9

_CONFIGS: dict[str, dict] = {
    "paper": dict(in_channels=3, out_channels=3, channels=(64, 128, 256), encoder_blocks=6, decoder_blocks=6,
                  lstm_layers=3, code_length=64, bank_size=16),
    "lite": dict(in_channels=3, out_channels=3, channels=(16, 32, 48), encoder_blocks=3, decoder_blocks=3,
                 lstm_layers=1, code_length=8, bank_size=4),
}
_DISCRIMINATOR_CONFIGS: dict[str, dict] = {
    "paper": dict(in_channels=3, channels=(64, 128, 256, 512)),
    "lite": dict(in_channels=3, channels=(16, 32, 64, 64)),
}


def _check_phases(phases: int) -> None:
    if isinstance(phases, bool) or not isinstance(phases, int) or phases < 1:
        raise ValueError(f"`phases` (output phases) must be an int >= 1, not {phases!r}")


def target_index(target: Target, sequences: Sequence[str] = SEQUENCE_ORDER, code_length: int | None = None,
                 batch: int | None = None) -> int | None:
    """The code index a target asks for, checked; ``None`` for a one-hot code on the meta device.

    Args:
        target: an index, a sequence name (any alias), a 0-d or (B,) integer tensor, or a one-hot float
            tensor of shape (code_length,) or (B, code_length).
        sequences: the sequences the model knows, in code order.
        code_length: length of the one-hot code (default ``len(sequences)``).
        batch: the batch size, to check a per-sample target against.

    Raises:
        ValueError: unknown name or index, not one-hot, or different targets within one batch.
    """
    code_length = len(sequences) if code_length is None else code_length
    known = ", ".join(f"{i}={name}" for i, name in enumerate(sequences))
    if isinstance(target, str):
        name = canonical(target)
        if name not in sequences:
            raise ValueError(f"unknown target sequence '{target}' for this model; it knows {known}")
        return list(sequences).index(name)
    if isinstance(target, torch.Tensor):
        if target.is_floating_point():
            if target.ndim not in (1, 2) or target.shape[-1] != code_length:
                raise ValueError(f"a one-hot target code must have shape ({code_length},) or (batch, "
                                 f"{code_length}), not {tuple(target.shape)}")
            rows = target.reshape(-1, code_length)
            if batch is not None and rows.shape[0] not in (1, batch):
                raise ValueError(f"target code has {rows.shape[0]} rows but the batch has {batch} samples")
            if target.is_meta:
                return None
            if not bool(((rows == 0) | (rows == 1)).all()) or not bool((rows.sum(dim=1) == 1).all()):
                raise ValueError("the target code must be one-hot: one entry 1, the others 0")
            indices = rows.argmax(dim=1)
        else:
            if target.ndim > 1:
                raise ValueError(f"target indices must be a scalar or shape (batch,), not {tuple(target.shape)}")
            if target.is_meta:
                raise ValueError("give the target as an int or a one-hot float code on the meta device")
            indices = target.reshape(-1)
            if batch is not None and indices.numel() not in (1, batch):
                raise ValueError(f"{indices.numel()} target indices for a batch of {batch} samples")
        if indices.numel() == 0:
            raise ValueError("the target is empty")
        if not bool((indices == indices[0]).all()):
            raise ValueError(f"one target per batch: got targets {indices.tolist()}; split the batch by target")
        target = int(indices[0])
    if isinstance(target, bool) or not isinstance(target, int):
        raise ValueError(f"the target must be an int, a sequence name or a tensor, not {type(target).__name__}")
    if not 0 <= target < len(sequences):
        raise ValueError(f"unknown target code {target}: this model knows {len(sequences)} sequences ({known})")
    return target


class HyperConv(nn.Module):
    """A convolution whose kernel is mixed from a weight bank by a linear function of the target code.

    Algorithm 1: ``kernel = bank @ f`` with ``bank`` of shape (C_out, C_in, k, k, bank_size) and
    ``f = Linear(code_length, bank_size)(code)``; the bias likewise from a (C_out, bank_size) bank. The
    bank holds what the targets share; the code only picks the mixture, so switching the target is cheap.

    Args:
        dims: 2 or 3 spatial dimensions.
        in_channels, out_channels, kernel_size, stride: as a convolution.
        code_length: length of the (embedded) code.
        bank_size: number of kernels in the bank (``c_w``).
        bias: whether a bias bank is kept (leave it off before a non-affine normalisation).
        padding_mode: ``reflect`` (the paper's) or ``zeros``; 'same' padding for odd kernels.
    """

    def __init__(self, dims: int, in_channels: int, out_channels: int, kernel_size: int, code_length: int,
                 bank_size: int, stride: int = 1, bias: bool = True, padding_mode: str = "reflect") -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"`dims` must be 2 or 3, not {dims}")
        if padding_mode not in ("reflect", "zeros"):
            raise ValueError(f"`padding_mode` must be reflect or zeros, not {padding_mode!r}")
        require_positive(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                        code_length=code_length, bank_size=bank_size, stride=stride)
        self.dims, self.stride, self.padding_mode = dims, stride, padding_mode
        self.padding = (kernel_size - 1) // 2
        self.kernel_shape = (out_channels, in_channels, *([kernel_size] * dims))
        self.weight_bank = nn.Parameter(torch.empty(*self.kernel_shape, bank_size))
        nn.init.kaiming_normal_(self.weight_bank, a=0, mode="fan_in")
        self.weight_mixer = nn.Linear(code_length, bank_size)
        if bias:
            # PyTorch's convolution-bias init spread over the bank; a zero bank (the code's) would leave the
            # bias mixer without a gradient until the bank has moved
            bound = 1.0 / (in_channels * kernel_size ** dims * bank_size) ** 0.5
            self.bias_bank = nn.Parameter(torch.empty(out_channels, bank_size).uniform_(-bound, bound))
            self.bias_mixer = nn.Linear(code_length, bank_size)
        else:
            self.register_parameter("bias_bank", None)
            self.bias_mixer = None

    def kernel(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) for one embedded code of shape (code_length,) or (1, code_length)."""
        code = code.reshape(1, -1)
        weight = torch.matmul(self.weight_bank, self.weight_mixer(code).reshape(-1, 1)).reshape(self.kernel_shape)
        bias = None
        if self.bias_bank is not None:
            bias = torch.matmul(self.bias_bank, self.bias_mixer(code).reshape(-1, 1)).reshape(-1)
        return weight, bias

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        weight, bias = self.kernel(code)
        if self.padding and self.padding_mode == "reflect":
            x = F.pad(x, [self.padding] * (2 * self.dims), mode="reflect")
            padding = 0
        else:
            padding = self.padding
        convolve = F.conv2d if self.dims == 2 else F.conv3d
        return convolve(x, weight, bias, stride=self.stride, padding=padding)


class HyperResidualBlock(nn.Module):
    """A residual block whose two 3x3 convolutions are HyperConvs (Fig. 2b): the residual is target-specific."""

    def __init__(self, dims: int, channels: int, code_length: int, bank_size: int, slope: float = 0.2) -> None:
        super().__init__()
        self.conv1 = HyperConv(dims, channels, channels, 3, code_length, bank_size, bias=False)
        self.norm1 = nn.Sequential(norm("instance", dims, channels), activation("leaky", slope))
        self.conv2 = HyperConv(dims, channels, channels, 3, code_length, bank_size, bias=False)
        self.norm2 = norm("instance", dims, channels)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        y = self.norm1(self.conv1(x, code))
        return x + self.norm2(self.conv2(y, code))


class Encoder(nn.Module):
    """7x7 convolution, stride-2 convolutions and residual blocks (Fig. 2b): shared by every input sequence.

    Args:
        dims: 2 or 3.
        in_channels: 3 in 2.5D mode (adjacent slices), 1 for plain 2D.
        channels: widths of the 7x7 convolution and of each stride-2 convolution after it.
        num_blocks: residual blocks at the last width.
    """

    def __init__(self, dims: int, in_channels: int, channels: Sequence[int] = (64, 128, 256), num_blocks: int = 6,
                 slope: float = 0.2) -> None:
        super().__init__()
        require_positive(in_channels=in_channels, channels=len(channels))
        layers: list[nn.Module] = [ConvNormAct(dims, in_channels, channels[0], 7, act="leaky", slope=slope,
                                               padding_mode="reflect")]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers.append(ConvNormAct(dims, c_in, c_out, 3, stride=2, act="leaky", slope=slope,
                                      padding_mode="reflect"))
        layers += [ResidualBlock(dims, channels[-1], act="leaky", padding_mode="reflect") for _ in range(num_blocks)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step (Shi et al. 2015): the four gates from one convolution of [input, hidden]."""

    def __init__(self, dims: int, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = conv(dims, in_channels + hidden_channels, 4 * hidden_channels, kernel_size)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, cell = state
        i, f, o, g = torch.split(self.gates(torch.cat([x, hidden], dim=1)), self.hidden_channels, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell


class ConvLSTM(nn.Module):
    """Stacked ConvLSTM over the phases of a 4D input: (B, T, C, *spatial) -> last layer's hidden states.

    Any T >= 1 works, so 3D sequences (T = 1) and 4D series (DCE phases, DWI b-values) share one path.
    States start at zero.
    """

    def __init__(self, dims: int, in_channels: int, hidden_channels: int, num_layers: int = 3,
                 kernel_size: int = 3) -> None:
        super().__init__()
        require_positive(num_layers=num_layers, hidden_channels=hidden_channels)
        self.cells = nn.ModuleList(
            ConvLSTMCell(dims, in_channels if i == 0 else hidden_channels, hidden_channels, kernel_size)
            for i in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 4 or x.shape[1] < 1:
            raise ValueError(f"ConvLSTM input must be (batch, time >= 1, channels, *spatial), not {tuple(x.shape)}")
        steps = x.unbind(dim=1)
        for cell in self.cells:
            shape = (x.shape[0], cell.hidden_channels, *x.shape[3:])
            hidden = cell_state = torch.zeros(shape, dtype=x.dtype, device=x.device)
            outputs = []
            for step in steps:
                hidden, cell_state = cell(step, (hidden, cell_state))
                outputs.append(hidden)
            steps = outputs
        return torch.stack(steps, dim=1)


class HyperDecoder(nn.Module):
    """Hyper-residual blocks, then (x2 up-sampling, 3x3 HyperConv) per width, then a 7x7 HyperConv and tanh.

    Every convolution is a :class:`HyperConv`, so the whole decoder is steered by the target code.

    Args:
        dims: 2 or 3 (bilinear or trilinear up-sampling).
        out_channels: 3 in 2.5D mode.
        channels: the input width, then the width after each up-sampling (e.g. 256, 128, 64).
        num_blocks: hyper-residual blocks at ``channels[0]``.
        code_length, bank_size: of the HyperConvs.
    """

    def __init__(self, dims: int, out_channels: int, channels: Sequence[int] = (256, 128, 64), num_blocks: int = 6,
                 code_length: int = 64, bank_size: int = 16, slope: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(HyperResidualBlock(dims, channels[0], code_length, bank_size, slope)
                                    for _ in range(num_blocks))
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear" if dims == 2 else "trilinear",
                                    align_corners=False)
        self.up_convs = nn.ModuleList(HyperConv(dims, c_in, c_out, 3, code_length, bank_size, bias=False)
                                      for c_in, c_out in zip(channels[:-1], channels[1:]))
        self.up_norms = nn.ModuleList(nn.Sequential(norm("instance", dims, c), activation("leaky", slope))
                                      for c in channels[1:])
        self.last = HyperConv(dims, channels[-1], out_channels, 7, code_length, bank_size, bias=True)

    def hyper_convs(self) -> list[HyperConv]:
        """Every HyperConv, in order."""
        return [m for m in self.modules() if isinstance(m, HyperConv)]

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, code)
        for up_conv, up_norm in zip(self.up_convs, self.up_norms):
            x = up_norm(up_conv(self.upsample(x), code))
        return torch.tanh(self.last(x, code))


class Seq2Seq(nn.Module):
    """The Seq2Seq generator (section 3.2): encode each phase, ConvLSTM, average, copy, ConvLSTM, HyperDecoder.

    Args:
        in_channels, out_channels: 3 and 3 in 2.5D mode (three adjacent slices in, the same three out).
        channels: Encoder widths; the HyperDecoder mirrors them.
        encoder_blocks, decoder_blocks: residual / hyper-residual blocks.
        lstm_layers, lstm_kernel: of both ConvLSTMs (hidden width = ``channels[-1]``).
        code_length: length of the one-hot target code (>= number of sequences).
        bank_size: HyperConv weight-bank size.
        sequences: sequence names in code order (default :data:`SEQUENCE_ORDER`).
        dims: 2 (the paper's 2.5D model) or 3.

    Example:
        >>> model = Seq2Seq(**_CONFIGS["lite"]).eval()
        >>> t1 = torch.zeros(1, 3, 64, 64)             # three adjacent T1 slices
        >>> model(t1, "FLAIR").shape
        torch.Size([1, 3, 64, 64])
        >>> dce = torch.zeros(1, 6, 3, 64, 64)         # six DCE phases
        >>> model(dce, "T2").shape                     # -> one T2 phase, 5D like the input
        torch.Size([1, 1, 3, 64, 64])
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, channels: Sequence[int] = (64, 128, 256),
                 encoder_blocks: int = 6, decoder_blocks: int = 6, lstm_layers: int = 3, lstm_kernel: int = 3,
                 code_length: int = 64, bank_size: int = 16, sequences: Sequence[str] = SEQUENCE_ORDER,
                 dims: int = 2, slope: float = 0.2) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"`dims` must be 2 or 3, not {dims}")
        require_positive(in_channels=in_channels, out_channels=out_channels, code_length=code_length,
                        bank_size=bank_size)
        if len(channels) < 1:
            raise ValueError("`channels` needs at least one width")
        sequences = tuple(canonical(name) for name in sequences)
        if not 1 <= len(sequences) <= code_length:
            raise ValueError(f"`code_length` {code_length} must be at least the number of sequences ({len(sequences)})")
        self.dims, self.in_channels, self.out_channels = dims, in_channels, out_channels
        self.code_length, self.sequences = code_length, sequences
        self.factor = 2 ** (len(channels) - 1)
        width = channels[-1]
        self.encoder = Encoder(dims, in_channels, channels, encoder_blocks, slope)
        self.encoder_lstm = ConvLSTM(dims, width, width, lstm_layers, lstm_kernel)
        self.decoder_lstm = ConvLSTM(dims, width, width, lstm_layers, lstm_kernel)
        self.code_mlp = nn.Sequential(nn.Linear(code_length, code_length), activation("leaky", slope))
        self.decoder = HyperDecoder(dims, out_channels, tuple(reversed(channels)), decoder_blocks, code_length,
                                    bank_size, slope)

    def target_code(self, target: Target, batch: int | None = None, device: torch.device | None = None
                    ) -> torch.Tensor:
        """The one-hot code (code_length,) of a target (index, name, index tensor or one-hot), checked."""
        index = target_index(target, self.sequences, self.code_length, batch)
        if index is None:  # a one-hot code on the meta device: shapes only
            return target.reshape(-1, self.code_length)[0].float()
        device = device if device is not None else (target.device if isinstance(target, torch.Tensor) else None)
        code = torch.zeros(self.code_length, device=device)
        code[index] = 1.0
        return code

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as (B, T, C, *spatial), after a clear error for any shape the layers cannot take."""
        spatial = "z, y, x" if self.dims == 3 else "y, x"
        if x.ndim not in (self.dims + 2, self.dims + 3):
            raise ValueError(f"input must be (batch, channels, {spatial}) or (batch, phases, channels, {spatial}), "
                             f"but it has shape {tuple(x.shape)}")
        x5 = x if x.ndim == self.dims + 3 else x.unsqueeze(1)
        if x5.shape[0] < 1 or x5.shape[1] < 1:
            raise ValueError(f"input needs at least one sample and one phase, but it has shape {tuple(x.shape)}")
        require_input(x5.flatten(0, 1), channels=self.in_channels, dims=self.dims, min_size=2 * self.factor,
                      multiple=self.factor)
        return x5

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): (B, T, C, *spatial) -> the fused representation (B, width, *spatial / factor).

        Each phase goes through the shared Encoder, the ConvLSTM links the phases, and its hidden states are
        averaged over time (the paper's 4D-wise average), so any T gives the same representation shape.
        """
        x5 = self.check_input(x)
        b, t = x5.shape[:2]
        features = self.encoder(x5.flatten(0, 1))
        features = self.encoder_lstm(features.unflatten(0, (b, t)))
        return features.mean(dim=1)

    def unroll(self, representation: torch.Tensor, phases: int = 1) -> torch.Tensor:
        """4D-wise copy of the representation to ``phases`` steps, then the decoder ConvLSTM."""
        _check_phases(phases)
        copies = representation.unsqueeze(1).expand(-1, phases, *representation.shape[1:])
        return self.decoder_lstm(copies)

    def decode(self, features: torch.Tensor, target: Target) -> torch.Tensor:
        """G(features | s): (B, P, width, ...) -> (B, P, out_channels, ...), every phase with the same code."""
        b, p = features.shape[:2]
        code = self.code_mlp(self.target_code(target, b, features.device).to(features.dtype))
        images = self.decoder(features.flatten(0, 1), code)
        return images.unflatten(0, (b, p))

    def forward(self, x: torch.Tensor, target: Target, phases: int = 1) -> torch.Tensor:
        """Synthesize ``target`` from ``x``.

        (B, C, ...) -> (B, C_out, ...); (B, T, C, ...) -> (B, phases, C_out, ...). Input, target and
        ``phases`` are all checked before any layer runs.
        """
        x5 = self.check_input(x)
        self.target_code(target, x5.shape[0], x.device)  # a wrong target fails before any layer runs
        _check_phases(phases)
        if x.ndim == self.dims + 2 and phases != 1:
            raise ValueError(f"{phases} output phases need a 5D input (batch, phases, channels, ...)")
        out = self.decode(self.unroll(self.encode(x5), phases), target)
        return out if x.ndim == self.dims + 3 else out[:, 0]


class SequenceDiscriminator(nn.Module):
    """PatchGAN with one patch map per sequence: channel j is the paper's D_j (Eq. 2, least squares).

    The paper's code trains no discriminator; this one is for the adversarial term of Eq. 2 when it is
    wanted. ``forward(x)`` returns every map (B, S, ...); ``forward(x, target)`` only D_target's (B, 1, ...).

    Args:
        in_channels: 3 in 2.5D mode.
        channels: widths of the three stride-2 layers and the stride-1 layer (pix2pix: 64, 128, 256, 512).
        sequences: the sequences, in code order; one output channel each.
        dims: 2 or 3.
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (64, 128, 256, 512),
                 sequences: Sequence[str] = SEQUENCE_ORDER, dims: int = 2) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError("`channels` needs at least two widths")
        self.dims, self.in_channels = dims, in_channels
        self.sequences = tuple(canonical(name) for name in sequences)
        layers: list[nn.Module] = [ConvNormAct(dims, in_channels, channels[0], 4, 2, norm_kind="none", padding=1)]
        for c_in, c_out in zip(channels[:-2], channels[1:-1]):
            layers.append(ConvNormAct(dims, c_in, c_out, 4, 2, padding=1))
        layers.append(ConvNormAct(dims, channels[-2], channels[-1], 4, 1, padding=1))
        layers.append(conv(dims, channels[-1], len(self.sequences), 4, 1, padding=1))
        self.layers = nn.Sequential(*layers)
        self.min_size = 2 ** (len(channels) - 1) * 3

    def forward(self, x: torch.Tensor, target: Target | None = None) -> torch.Tensor:
        require_input(x, channels=self.in_channels, dims=self.dims, min_size=self.min_size)
        index = None if target is None else target_index(target, self.sequences, batch=x.shape[0])
        maps = self.layers(x)
        return maps if index is None else maps[:, index:index + 1]


def paper_table_size(model: Seq2Seq, x: torch.Tensor, target: Target) -> tuple[int, int]:
    """(parameters, MACs) as the paper's Table 1 counts them: HyperConv banks and convolutions left out.

    A module-hook counter (thop) only sees leaf modules, so it misses the banks (parameters of a module
    with children), the kernel mixing and the functional convolution inside each HyperConv, while it
    does see the Linear mixers; everything else is counted as ``registry.count_parameters`` /
    ``count_macs`` do. See the module docstring for the numbers.
    """
    hyper = [m for m in model.modules() if isinstance(m, HyperConv)]
    banks = sum(p.numel() for m in hyper for p in (m.weight_bank, m.bias_bank) if p is not None)
    parameters = sum(p.numel() for p in model.parameters()) - banks
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x, target)
    finally:
        model.train(was_training)
    names = {m: name for name, m in model.named_modules()}
    owner = type(model).__name__
    counts = counter.get_flop_counts()
    hyper_flops = 0  # the functional convolution and the bank mixing (matmul); the Linear mixers stay counted
    for m in hyper:
        ops = counts.get(f"{owner}.{names[m]}", {})
        hyper_flops += int(ops.get(torch.ops.aten.convolution, 0)) + int(ops.get(torch.ops.aten.mm, 0))
    return parameters, (counter.get_total_flops() - hyper_flops) // 2


# --- registry -------------------------------------------------------------------------------------------

def build(config: str = "lite", **overrides) -> Seq2Seq:
    """The generator in the ``lite`` or ``paper`` configuration; keyword arguments override it."""
    if config not in _CONFIGS:
        raise ValueError(f"unknown configuration '{config}'; use one of {', '.join(_CONFIGS)}")
    return Seq2Seq(**{**_CONFIGS[config], **overrides})


def build_discriminator(config: str = "lite", **overrides) -> SequenceDiscriminator:
    """The per-sequence PatchGAN (not used by the paper's code; see the module docstring)."""
    if config not in _DISCRIMINATOR_CONFIGS:
        raise ValueError(f"unknown configuration '{config}'; use one of {', '.join(_DISCRIMINATOR_CONFIGS)}")
    return SequenceDiscriminator(**{**_DISCRIMINATOR_CONFIGS[config], **overrides})


_INPUT_SIZE = {"lite": (192, 192), "paper": (192, 192)}


def example_inputs(model: Seq2Seq, config: str, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One 2.5D slice stack per sample and the one-hot code of T1ce (one phase in, one out)."""
    x = torch.zeros(batch, model.in_channels, *_INPUT_SIZE[config])
    code = torch.zeros(batch, model.code_length)
    code[:, SEQUENCE_ORDER.index("T1ce")] = 1.0
    return x, code


SPEC = ModelSpec(
    name="seq2seq",
    title="Seq2Seq (HyperConv, ConvLSTM)",
    paper="seq2seq-imaging-differentiation.txt",
    inputs="any one sequence (3D, or 4D with T >= 1 phases), 3 adjacent slices",
    outputs="any target sequence by a one-hot code (" + ", ".join(SEQUENCE_ORDER) + ")",
    form="2.5D",
    input_size=_INPUT_SIZE,
    build=build,
    example_inputs=example_inputs,
    paper_parameters_m=35.8,
    paper_macs_g=83.4,
    extras={"discriminator": build_discriminator},
)
