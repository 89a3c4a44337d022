"""TC-MGAN: one T2 slice -> FLAIR, T1ce or T1 by a modality label, with a tumour-consistency segmenter.

Follows Xin et al., "Multi-modality generative adversarial networks with tumor consistency loss for brain
MR image synthesis" (``shared/papers/tc-mgan.txt``):

* §2.1, pix2pix: the generator G is the pix2pix U-Net, trained with an adversarial loss and
  lambda_l1 * L1 (Eq. 1).
* §2.2, modality labels: the label c is concatenated to the source image, G(x, c)
  (:class:`TCMGANGenerator`); the discriminator both scores real against fake (D_src) and classifies the
  modality of its input (D_cls, Eq. 2 on real and Eq. 3 on synthesized images) (:class:`TCMGANCritic`,
  ``SPEC.extras["critic"]``; the same builder is also ``SPEC.extras["discriminator"]``).
* §2.3, multi-modality tumour-consistency loss: a segmentation network S takes the synthesized image
  concatenated with its label c; a Dice loss against the tumour mask (Eq. 4) trains G through S, whose
  parameters are pre-trained and fixed (:class:`TumourSegmenter`, ``SPEC.extras["segmenter"]``,
  :func:`freeze_segmenter`, :func:`dice_loss`).
* §2.4, WGAN-GP: L_D = -D_src(x, y_c) + D_src(x, G(x, c)) + lambda_cls L_cls^r + lambda_gp L_gp (Eq. 5, 6)
  and L_G = -D_src(x, G(x, c)) + lambda_cls L_cls^f + lambda_l1 L_l1 + lambda_seg L_seg (Eq. 7), with
  (§3.1) lambda_l1, lambda_cls, lambda_seg, lambda_gp = 0.1, 10, 50, 100 (:data:`LOSS_WEIGHTS`); 128 x 128
  slices scaled to [-1, 1]; Adam, batch 64. The losses themselves live in ``training``.

Networks and what the training losses use:

* ``TCMGANGenerator(t2, target)``: (B, 1, H, W) T2 and a target label -> (B, 1, H, W) in [-1, 1]. The
  target is an int, a sequence name, an integer tensor (B,) or a one-hot float tensor (3,) or (B, 3); each
  sample may have its own target (the code draws a random label per sample). Label order FLAIR, T1ce, T1
  (:data:`TARGET_SEQUENCES`, as in the code). :meth:`TCMGANGenerator.synthesize` gives all three targets
  at once, (B, 3, H, W), padding any size to the down-sampling multiple (the pipeline's slice path).
* ``TCMGANCritic(t2, image)`` -> :class:`CriticOutput` ``(score, logits)``: ``score`` (B, 1, H/32, W/32)
  is the D_src map (the critic value of a sample, D_src(x, y), is its sum, :attr:`CriticOutput.value`, as
  in the code), ``logits`` (B, 3) are the D_cls modality logits in label order (cross-entropy for Eq. 2, 3).
* ``TumourSegmenter(image, target)``: (B, 1, H, W) tumour probability in (0, 1) of the image read as
  modality ``target``; :func:`dice_loss` of it against the whole-tumour mask is L_seg.

Sizes (``paper`` configuration, measured): generator 41,818,689 parameters and 1.49 GMACs per 128 x 128
slice (the code's ``define_G(4, 1, 64, 'unet_128', norm='instance')``: 41,822,593, i.e. 41.8 M; the
difference is the 3,904 biases that instance norm cancels, see below), critic 11,203,520 and 0.55 GMACs
(the code's ``netD``: the same 11.2 M), segmenter 6.13 M and 4.49 GMACs (the code's
``Unet(in_dim=1, c_dim=3)``: 6.1 M). The paper itself reports no parameter count or MACs, so
``paper_parameters_m`` and ``paper_macs_g`` are None.

Choices where the paper is vague (from the public code, hellopipu/TC-MGAN, see
``shared/notes/papers-code.md``; where code and paper disagree we follow the paper and say so):

* Generator: pix2pix ``unet_128``: 7 levels of 4x4 stride-2 convolution (64-128-256-512-512-512-512), a
  128 x 128 slice reaches 1 x 1 at the bottleneck; 4x4 stride-2 transposed convolutions back with skip
  connections; instance norm without affine (the code's ``norm='instance'``); LeakyReLU 0.2 down, ReLU up,
  tanh; no dropout (the code's default ``use_dropout=False``); weights N(0, 0.02) (the code's ``init_net``).
  Input: T2 plus the 3-channel one-hot label tiled over the image (4 channels). The convolutions
  followed by instance norm have no bias (pix2pix keeps one, but the norm's mean subtraction cancels it
  exactly: a dead parameter with zero gradient; 3,904 parameters of 41.8 M). Built from
  :class:`.blocks.UNetDown` / :class:`.blocks.UNetUp`, whose activation follows the normalisation, where
  pix2pix activates at the start of the next level: the parameters and the layer sequence are the same,
  only the skip features are concatenated after LeakyReLU where pix2pix concatenates them before (and ReLU
  then applies to them). As in pix2pix, the outermost and the innermost (1 x 1) down levels have no
  normalisation (instance norm of one value per channel is undefined). Inputs must be a multiple of
  ``2**levels`` per axis (checked); :meth:`~TCMGANGenerator.synthesize` pads (replicate) and crops back.
* Critic: WGAN-GP forbids batch norm in the critic (Gulrajani et al.); the code's critic has none: five 4x4
  stride-2 convolutions 64-128-256-512-1024 with LeakyReLU 0.01 (PyTorch's default slope, the code's),
  the source head a 3x3 convolution to one channel (a 4 x 4 patch map at 128 x 128), the classification
  head a convolution whose kernel covers the whole last feature map (4x4 at 128 x 128) to 3 logits, both
  without bias; Kaiming-normal weights (the code). The classification head ties the critic to the slice
  size it is built for (``image_size``, checked with a clear error). Its input is the image (real y_c,
  synthesized or, for the gradient penalty, interpolated) concatenated with the T2 source, in that
  channel order as in the code; the arguments are in the paper's order D(x, y).
* Segmenter: the paper says only "Unet [17]", pre-trained on the same training data with Dice loss (30
  epochs, lr 1e-3) and fixed while the GAN trains. The code's is a small U-Net: four 3x3 stride-2
  convolutions 64-128-256-512 with batch norm and ReLU, four stride-2 up-samplings with skip connections,
  the last to one channel with a sigmoid; input the image plus the tiled one-hot label. We build the same
  widths with :class:`.blocks.ConvNormAct` down and :class:`.blocks.ResizeConv` up (nearest x2 then a 3x3
  convolution: the same 3x3 weights as the code's 3x3 transposed convolutions, whose PyTorch form needs
  ``output_padding`` and overlaps unevenly; the code's biases before batch norm are dropped, they have no
  effect), 6.12 M parameters. Inputs must be a multiple of 16 per axis.
* Frozen segmenter versus the code: the code updates S inside the GAN loop (Adam 2e-4 on
  0.7 Dice(S(fake)) + 0.3 Dice(S(real)) after each generator step), which is the paper's "TC-MGAN bw"
  comparison (and Zhang et al. [18]), not TC-MGAN. We follow the paper: :func:`freeze_segmenter` (or
  :meth:`TumourSegmenter.freeze`) turns off every parameter's gradient and puts S in eval mode (batch norm
  on its running statistics) and keeps it there through later ``.train()`` calls; gradients still flow
  through S to its input, so L_seg trains G only. :meth:`TumourSegmenter.unfreeze` gives the "bw" variant.
* Loss weights: the code never defines its lambdas (it crashes as written) and saves the segmenter in place
  of the generator; the weights come from the paper (§3.1).
* The WGAN terms: the code sums the D_src map of each sample and averages over the batch; the gradient
  penalty is taken with respect to the interpolated image only (the T2 condition is fixed), Eq. 5.
* ``lite``: the same three networks, narrower and for 64 x 64 or larger slices: generator 6 levels
  16-32-64-128-128-128 (1.83 M parameters, 3.7 MB in fp16, 0.10 GMACs per 128 x 128 slice; trains on
  64 x 64 phantom slices as well as 128 x 128; a 155-slice 240 x 240 volume takes about 6 s per target on
  2 CPU cores through :meth:`~TCMGANGenerator.synthesize`), critic 5 levels 16-256 at 128 x 128 (0.71 M;
  build it with ``image_size=64`` for 64 x 64 training slices), segmenter 16-32-64-128 (0.38 M).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from . import blocks
from ..sequences import canonical
from .spec import ModelSpec

#: Target labels in code order (the code's ``label2onehot``: 0 FLAIR, 1 T1ce, 2 T1).
TARGET_SEQUENCES = ("FLAIR", "T1ce", "T1")
#: The source sequence (§1, §3.1).
SOURCE_SEQUENCE = "T2"
#: §3.1: the loss weights of Eq. 6 and 7.
LOSS_WEIGHTS = {"l1": 0.1, "cls": 10.0, "seg": 50.0, "gp": 100.0}
#: §3.1: slices resized from 240 x 240 to 128 x 128.
PAPER_SIZE = (128, 128)

Target = Union[int, str, torch.Tensor, Sequence[Union[int, str]]]

_GENERATOR_CONFIGS: dict[str, dict] = {
    "paper": {"base_filters": 64, "max_filters": 512, "levels": 7},
    "lite": {"base_filters": 16, "max_filters": 128, "levels": 6},
}
_CRITIC_CONFIGS: dict[str, dict] = {
    "paper": {"base_filters": 64, "levels": 5, "image_size": 128},
    "lite": {"base_filters": 16, "levels": 5, "image_size": 128},
}
_SEGMENTER_CONFIGS: dict[str, dict] = {
    "paper": {"channels": (64, 128, 256, 512)},
    "lite": {"channels": (16, 32, 64, 128)},
}
_INPUT_SIZE = {"paper": PAPER_SIZE, "lite": PAPER_SIZE}


def target_code(target: Target, batch: int, *, labels: Sequence[str] = TARGET_SEQUENCES,
                device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The one-hot label c, (batch, n_labels), of any accepted form of a target.

    Args:
        target: an index, a sequence name (any alias of :mod:`MRISynthesisLib.sequences`), a list of either
            (one per sample), a 0-d or (batch,) integer tensor, or a one-hot float tensor (n,) or (batch, n).
        batch: the batch size; a single target is used for every sample.
        labels: the sequences in label order.
        device, dtype: of the returned code (default: the target tensor's device, else the CPU).

    Raises:
        ValueError: an unknown name or index, a code that is not one-hot, or a count that does not match.
    """
    n = len(labels)
    known = ", ".join(f"{i}={name}" for i, name in enumerate(labels))

    def index_of(item: int | str) -> int:
        if isinstance(item, str):
            name = canonical(item)
            if name not in labels:
                raise ValueError(f"unknown target sequence '{item}' for TC-MGAN; it knows {known}")
            return labels.index(name)
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"a target must be an int, a sequence name or a tensor, not {type(item).__name__}")
        if not 0 <= item < n:
            raise ValueError(f"unknown target label {item}: TC-MGAN knows {n} labels ({known})")
        return item

    if isinstance(target, torch.Tensor):
        device = target.device if device is None else device
        if target.is_floating_point():
            if target.ndim not in (1, 2) or target.shape[-1] != n:
                raise ValueError(f"a one-hot target code must have shape ({n},) or (batch, {n}), "
                                 f"not {tuple(target.shape)}")
            rows = target.reshape(-1, n)
            if rows.shape[0] not in (1, batch):
                raise ValueError(f"the target code has {rows.shape[0]} rows but the batch has {batch} samples")
            if not rows.is_meta and (not bool(((rows == 0) | (rows == 1)).all())
                                     or not bool((rows.sum(dim=1) == 1).all())):
                raise ValueError("the target code must be one-hot: one entry 1, the others 0, per sample")
            return rows.expand(batch, n).to(device=device, dtype=dtype)
        if target.dtype == torch.bool or target.is_complex():
            raise ValueError(f"target indices must be an integer tensor, not {target.dtype}")
        if target.ndim > 1:
            raise ValueError(f"target indices must be a scalar or shape (batch,), not {tuple(target.shape)}")
        if target.is_meta:
            raise ValueError("on the meta device give the target as an int or a one-hot float code")
        indices = [index_of(int(i)) for i in target.reshape(-1).tolist()]
    elif isinstance(target, (list, tuple)):
        indices = [index_of(item) for item in target]
    else:
        indices = [index_of(target)]
    if len(indices) not in (1, batch):
        raise ValueError(f"{len(indices)} targets for a batch of {batch} samples")
    index = torch.tensor(indices, device=device).expand(batch)
    return F.one_hot(index, n).to(dtype)


def _tile(code: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The label (B, n) spread over the image: (B, n, H, W), in ``like``'s dtype (§2.2: concatenated to x)."""
    return code.to(like.dtype)[:, :, None, None].expand(-1, -1, *like.shape[2:])


class TCMGANGenerator(nn.Module):
    """pix2pix U-Net with a modality label: G(x, c), T2 (B, 1, H, W) -> target (B, 1, H, W) in [-1, 1].

    Args:
        in_channels: source images (1: T2).
        out_channels: synthesized images (1).
        labels: the target sequences in label order (FLAIR, T1ce, T1); the label adds ``len(labels)``
            input channels.
        base_filters: width of the first level (64); doubled per level up to ``max_filters`` (512).
        max_filters: width cap.
        levels: number of stride-2 levels (7: a 128 x 128 slice reaches 1 x 1); inputs must be a multiple
            of ``2**levels`` per axis.
        norm_kind: ``instance`` (the code's choice) or any name :func:`.blocks.norm` takes.
        dropout: dropout in the intermediate decoder levels, where pix2pix puts it (0: the code's default).
        init_gain: standard deviation of the N(0, gain) convolution weights (0.02).

    Example:
        >>> g = TCMGANGenerator(base_filters=8, max_filters=16, levels=4).eval()
        >>> g(torch.zeros(2, 1, 32, 32), "FLAIR").shape
        torch.Size([2, 1, 32, 32])
        >>> g.synthesize(torch.zeros(1, 1, 40, 40)).shape   # all three targets, any size
        torch.Size([1, 3, 40, 40])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, labels: Sequence[str] = TARGET_SEQUENCES,
                 base_filters: int = 64, max_filters: int = 512, levels: int = 7, norm_kind: str = "instance",
                 dropout: float = 0.0, init_gain: float = 0.02) -> None:
        super().__init__()
        blocks.require_positive(in_channels=in_channels, out_channels=out_channels, base_filters=base_filters,
                                max_filters=max_filters)
        if levels < 2:
            raise ValueError(f"`levels` must be at least 2, not {levels}")
        if len(labels) < 1:
            raise ValueError("`labels` needs at least one target sequence")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), not {dropout}")
        self.in_channels, self.out_channels, self.levels = in_channels, out_channels, levels
        self.labels = tuple(labels)
        widths = [min(base_filters * 2 ** i, max_filters) for i in range(levels)]
        self.widths = tuple(widths)

        self.down = nn.ModuleList()
        previous = in_channels + len(self.labels)
        for i, width in enumerate(widths):
            outer_or_inner = i in (0, levels - 1)  # pix2pix: no norm on the outermost and innermost levels
            self.down.append(blocks.UNetDown(2, previous, width, norm_kind="none" if outer_or_inner else norm_kind))
            previous = width
        self.up = nn.ModuleList()
        for j, width in enumerate(reversed(widths[:-1])):
            # pix2pix's dropout: the intermediate 8 * ngf levels, neither the innermost nor the 4 outer ones
            drop = dropout if 1 <= j <= levels - 5 else 0.0
            self.up.append(blocks.UNetUp(2, previous, width, norm_kind=norm_kind, dropout=drop))
            previous = 2 * width
        self.last = nn.Sequential(blocks.conv_transpose(2, previous, out_channels), blocks.activation("tanh"))
        self.reset_parameters(init_gain)

    @property
    def multiple(self) -> int:
        """Every spatial size must be a multiple of this (the total down-sampling factor)."""
        return 2 ** self.levels

    def reset_parameters(self, gain: float = 0.02) -> None:
        """Convolutions N(0, gain) and zero biases, as pix2pix's (and the code's) ``init_net``."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, 0.0, gain)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) or (
                    isinstance(module, nn.modules.instancenorm._InstanceNorm) and module.affine):
                nn.init.normal_(module.weight, 1.0, gain)
                nn.init.zeros_(module.bias)

    def check_input(self, t2: torch.Tensor) -> None:
        """A clear ValueError for a wrong rank, channel count or size, before any layer runs."""
        blocks.require_input(t2, channels=self.in_channels, dims=2, min_size=self.multiple, multiple=self.multiple,
                             name="T2 source" if self.in_channels == 1 else "source")

    def forward(self, t2: torch.Tensor, target: Target) -> torch.Tensor:
        """G(x, c): the target modality of ``t2`` (B, 1, H, W) in [-1, 1].

        Args:
            t2: (B, in_channels, H, W) source slices in [-1, 1].
            target: see :func:`target_code`; one per batch or one per sample.
        """
        self.check_input(t2)
        code = target_code(target, t2.shape[0], labels=self.labels, device=t2.device)
        x = torch.cat([t2, _tile(code, t2)], dim=1)
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        for layer, skip in zip(self.up, reversed(skips[:-1])):
            x = layer(x, skip)
        return self.last(x)

    def synthesize(self, t2: torch.Tensor, targets: Sequence[int | str] | None = None) -> torch.Tensor:
        """All (or the listed) targets at once, (B, n_targets, H, W), for slices of any size.

        Each slice is padded (replicating its border) up to the next multiple of ``2**levels`` and the
        output cropped back, so 240 x 240 BraTS slices run without resizing. Channel k is ``targets[k]``
        (default: :attr:`labels` in order); the targets run as one batch.
        """
        if t2.ndim != 4:
            raise ValueError(f"T2 source must be 4D (batch, channels, y, x), but it is {t2.ndim}D "
                             f"with shape {tuple(t2.shape)}")
        chosen = list(range(len(self.labels))) if targets is None else list(targets)
        if not chosen:
            raise ValueError("`targets` is empty: name at least one target sequence")
        height, width = t2.shape[-2:]
        m = self.multiple
        pad_y, pad_x = (-height) % m, (-width) % m
        if pad_y or pad_x:
            t2 = F.pad(t2, (pad_x // 2, pad_x - pad_x // 2, pad_y // 2, pad_y - pad_y // 2), mode="replicate")
        batch = t2.shape[0]
        codes = [target_code(t, batch, labels=self.labels, device=t2.device) for t in chosen]
        out = self(t2.repeat(len(chosen), 1, 1, 1), torch.cat(codes))
        out = out.reshape(len(chosen), batch, self.out_channels, *out.shape[2:]).transpose(0, 1)
        out = out.reshape(batch, len(chosen) * self.out_channels, *out.shape[3:])
        return out[..., pad_y // 2:pad_y // 2 + height, pad_x // 2:pad_x // 2 + width]


class CriticOutput(NamedTuple):
    """The two heads of the critic; unpacks as ``score, logits = critic(t2, image)``.

    Attributes:
        score: (B, 1, h, w) D_src map (no sigmoid: a Wasserstein critic); h, w = H/32, W/32.
        logits: (B, n_labels) D_cls modality logits, in label order (FLAIR, T1ce, T1).
    """

    score: torch.Tensor
    logits: torch.Tensor

    @property
    def value(self) -> torch.Tensor:
        """D_src(x, y) of each sample, (B,): the sum of its score map, as the code's WGAN terms use it."""
        return self.score.flatten(1).sum(dim=1)


class TCMGANCritic(nn.Module):
    """WGAN-GP critic with an auxiliary modality classifier: D(x, y) -> (D_src map, D_cls logits).

    Args:
        in_channels: source channels (1: T2); the image adds ``image_channels``.
        image_channels: channels of the real, synthesized or interpolated target image (1).
        n_labels: modalities the classifier tells apart (3).
        base_filters: width of the first level (64), doubled per level.
        levels: number of 4x4 stride-2 convolutions (5: 64 ... 1024).
        image_size: the slice size (int or (H, W)) it is built for; the classification head's kernel covers
            the whole ``image_size / 2**levels`` feature map (4 x 4 at 128).
        slope: LeakyReLU slope (0.01, the code's PyTorch default).

    Example:
        >>> critic = TCMGANCritic(base_filters=8, levels=3, image_size=32)
        >>> score, logits = critic(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32))
        >>> score.shape, logits.shape
        (torch.Size([2, 1, 4, 4]), torch.Size([2, 3]))
    """

    def __init__(self, in_channels: int = 1, image_channels: int = 1, n_labels: int = 3, base_filters: int = 64,
                 levels: int = 5, image_size: int | tuple[int, int] = 128, slope: float = 0.01) -> None:
        super().__init__()
        blocks.require_positive(in_channels=in_channels, image_channels=image_channels, n_labels=n_labels,
                                base_filters=base_filters, levels=levels)
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or any(s % 2 ** levels or s < 2 ** levels for s in size):
            raise ValueError(f"`image_size` {image_size} must be a positive multiple of 2**levels = {2 ** levels} "
                             "per axis")
        self.in_channels, self.image_channels, self.n_labels = in_channels, image_channels, n_labels
        self.image_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.levels = levels
        layers = []
        previous = in_channels + image_channels
        for i in range(levels):
            width = base_filters * 2 ** i
            layers.append(blocks.ConvNormAct(2, previous, width, 4, 2, norm_kind="none", act="leaky", slope=slope,
                                             padding=1))
            previous = width
        self.features = nn.Sequential(*layers)
        kernel = (self.image_size[0] // 2 ** levels, self.image_size[1] // 2 ** levels)
        self.source_head = blocks.conv(2, previous, 1, 3, bias=False)
        self.class_head = nn.Conv2d(previous, n_labels, kernel, bias=False)  # a non-square kernel: plain Conv2d
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def check_input(self, t2: torch.Tensor, image: torch.Tensor) -> None:
        """Clear ValueErrors for wrong shapes, before any layer runs."""
        for name, x, channels in (("T2 source", t2, self.in_channels), ("image", image, self.image_channels)):
            blocks.require_input(x, channels=channels, dims=2, min_size=1, name=f"critic {name}")
            if tuple(x.shape[2:]) != self.image_size:
                raise ValueError(f"critic {name} is {tuple(x.shape[2:])} but the critic was built for "
                                 f"{self.image_size} slices (its classification head spans the whole feature "
                                 "map); build it with image_size=<your slice size>")
        if t2.shape[0] != image.shape[0]:
            raise ValueError(f"critic T2 source has {t2.shape[0]} samples but the image has {image.shape[0]}")

    def forward(self, t2: torch.Tensor, image: torch.Tensor) -> CriticOutput:
        """D(x, y): the score map and the modality logits of ``image`` (B, 1, H, W) given its T2 ``t2``."""
        self.check_input(t2, image)
        h = self.features(torch.cat([image, t2], dim=1))
        return CriticOutput(self.source_head(h), self.class_head(h).flatten(1))


class TumourSegmenter(nn.Module):
    """The multi-modality tumour segmenter S(y, c): (B, 1, H, W) image + label -> tumour probability.

    A small U-Net (the code's): ``len(channels)`` 3x3 stride-2 convolutions with batch norm and ReLU, as
    many nearest x2 + 3x3 convolution up-samplings with skip connections, the last to ``out_channels`` with
    a sigmoid. Inputs must be a multiple of ``2**len(channels)`` per axis.

    Args:
        in_channels: image channels (1).
        out_channels: tumour classes (1: whole tumour).
        labels: the modalities in label order (FLAIR, T1ce, T1).
        channels: widths of the down levels (64, 128, 256, 512).
        norm_kind: ``batch`` (the code's) or any name :func:`.blocks.norm` takes.

    Example:
        >>> s = freeze_segmenter(TumourSegmenter(channels=(4, 8)))
        >>> s(torch.zeros(1, 1, 16, 16), "T1ce").shape, s.training
        (torch.Size([1, 1, 16, 16]), False)
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, labels: Sequence[str] = TARGET_SEQUENCES,
                 channels: Sequence[int] = (64, 128, 256, 512), norm_kind: str = "batch") -> None:
        super().__init__()
        if len(channels) < 1 or any(c < 1 for c in channels):
            raise ValueError(f"`channels` needs at least one positive width, not {tuple(channels)}")
        blocks.require_positive(in_channels=in_channels, out_channels=out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.labels = tuple(labels)
        self.channels = tuple(channels)
        self.frozen = False
        self.down = nn.ModuleList()
        previous = in_channels + len(self.labels)
        for width in channels:
            self.down.append(blocks.ConvNormAct(2, previous, width, 3, 2, norm_kind=norm_kind, act="relu"))
            previous = width
        self.up = nn.ModuleList()
        n = len(channels)
        for j in range(n):
            last = j == n - 1
            out = out_channels if last else channels[n - 1 - j]
            self.up.append(blocks.ResizeConv(2, previous, out, norm_kind="none" if last else norm_kind,
                                             act="sigmoid" if last else "relu"))
            previous = out + (0 if last else channels[n - 2 - j])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def multiple(self) -> int:
        return 2 ** len(self.channels)

    def freeze(self) -> "TumourSegmenter":
        """Fixed parameters (§2.3): no gradients for them, eval mode, kept through later ``.train()`` calls.

        Gradients still flow through the network to its input, so the Dice loss on S(G(x, c), c) trains G.
        """
        self.frozen = True
        self.requires_grad_(False)
        return self.train(False)

    def unfreeze(self) -> "TumourSegmenter":
        """Trainable again (pre-training, or the paper's "TC-MGAN bw" / the code's in-loop updates)."""
        self.frozen = False
        self.requires_grad_(True)
        return self.train(True)

    def train(self, mode: bool = True) -> "TumourSegmenter":
        """As :meth:`nn.Module.train`, but a frozen segmenter stays in eval mode (batch norm fixed)."""
        return super().train(mode and not self.frozen)

    def check_input(self, image: torch.Tensor) -> None:
        blocks.require_input(image, channels=self.in_channels, dims=2, min_size=self.multiple,
                             multiple=self.multiple, name="segmenter image")
        if self.training and image.shape[0] * (image.shape[2] // self.multiple) * (image.shape[3] // self.multiple) < 2:
            raise ValueError(f"segmenter image {tuple(image.shape)} leaves one bottleneck value per channel, which "
                             "batch norm cannot normalise in training: use a batch of 2 or more, a larger image, "
                             "or freeze the segmenter")

    def forward(self, image: torch.Tensor, target: Target) -> torch.Tensor:
        """S(y, c): tumour probability (B, out_channels, H, W) in (0, 1) of ``image`` read as ``target``."""
        self.check_input(image)
        code = target_code(target, image.shape[0], labels=self.labels, device=image.device)
        x = torch.cat([image, _tile(code, image)], dim=1)
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        n = len(self.up)
        for j, layer in enumerate(self.up):
            x = layer(x)
            if j < n - 1:
                x = torch.cat([x, skips[n - 2 - j]], dim=1)
        return x


def freeze_segmenter(segmenter: TumourSegmenter) -> TumourSegmenter:
    """The paper's fixed S (§2.3): ``requires_grad`` off for every parameter, eval mode; returns it."""
    if not isinstance(segmenter, TumourSegmenter):
        raise ValueError(f"freeze_segmenter takes a TumourSegmenter, not {type(segmenter).__name__}")
    return segmenter.freeze()


def dice_loss(probability: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """L_seg (Eq. 4): 1 - mean over samples of (2 |P M| + s) / (|P| + |M| + s), the code's soft Dice.

    Args:
        probability: (B, ...) segmenter output in [0, 1].
        mask: (B, ...) tumour mask (0 or 1), same shape.
        smooth: the additive smoothing s (1, the code's), so empty masks predicted empty cost 0.
    """
    if probability.shape != mask.shape:
        raise ValueError(f"probability {tuple(probability.shape)} and mask {tuple(mask.shape)} must have the "
                         "same shape")
    p = probability.float().flatten(1)
    m = mask.float().flatten(1)
    score = (2 * (p * m).sum(1) + smooth) / (p.sum(1) + m.sum(1) + smooth)
    return 1 - score.mean()


def _check_config(config: str, table: dict) -> dict:
    if config not in table:
        raise ValueError(f"unknown configuration '{config}'; use one of {', '.join(table)}")
    return table[config]


def build(config: str = "paper", **overrides) -> TCMGANGenerator:
    """The generator of configuration ``paper`` or ``lite``; keyword ``overrides`` replace arguments."""
    return TCMGANGenerator(**{**_check_config(config, _GENERATOR_CONFIGS), **overrides})


def build_critic(config: str = "paper", **overrides) -> TCMGANCritic:
    """The WGAN-GP critic with the auxiliary classifier; pass ``image_size`` for other slice sizes."""
    return TCMGANCritic(**{**_check_config(config, _CRITIC_CONFIGS), **overrides})


def build_segmenter(config: str = "paper", **overrides) -> TumourSegmenter:
    """The tumour segmenter, trainable: pre-train it, then :func:`freeze_segmenter` it for the GAN."""
    return TumourSegmenter(**{**_check_config(config, _SEGMENTER_CONFIGS), **overrides})


def example_inputs(model: TCMGANGenerator, config: str, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic T2 ramp in [-1, 1] at the configuration's size and a one-hot FLAIR code, on the
    model's device (works on the ``meta`` device)."""
    size = SPEC.input_size[config]
    device = next(model.parameters()).device
    numel = batch * model.in_channels * size[0] * size[1]
    t2 = torch.linspace(-1.0, 1.0, numel, device=device).reshape(batch, model.in_channels, *size)
    code = torch.zeros(batch, len(model.labels), device=device)
    code[:, 0] = 1.0
    return t2, code


SPEC = ModelSpec(
    name="tc-mgan",
    title="TC-MGAN (multi-modality pix2pix with tumour consistency)",
    paper="tc-mgan.txt",
    inputs="T2 (2D slices) + target label",
    outputs="FLAIR, T1ce or T1 (by label)",
    form="2D",
    input_size=_INPUT_SIZE,
    build=build,
    example_inputs=example_inputs,
    paper_parameters_m=None,  # the paper reports no sizes; the code's generator has 41.8 M (ours: 41.82 M)
    paper_macs_g=None,
    extras={"critic": build_critic, "discriminator": build_critic, "segmenter": build_segmenter},
)
