"""How each bundled network runs over a whole volume: the adapter between models and the inference engine.

The models differ in what a forward pass takes (one stacked tensor; a tensor plus a target code; slices
whose size must be a multiple of 2^levels) and in whether they see 3D patches or 2D/2.5D slices. A
:class:`Plan` captures that once per (weights entry, target), so the pipeline, the batch command and the
ranking all run every model the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .inference import Progress, predict_patches, predict_slices
from .weights import WeightsEntry

Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Plan:
    """``predictor`` maps a batch of inputs (channels in ``order``) to outputs whose channel ``output``
    is the target; 3D patches of ``patch_size`` when set (each axis a multiple of ``multiple``, which
    lets the engine shrink patches under memory pressure), else slices with ``context`` neighbours on
    each side, padded in-plane to a multiple of ``multiple``. ``phases`` > 1: the target is a 4D series
    whose frames are output channels ``output`` to ``output + phases - 1``."""

    predictor: Predictor
    order: tuple[str, ...]
    output: int = 0
    patch_size: tuple[int, ...] | None = None
    context: int = 0
    multiple: int = 1
    phases: int = 1


def _unet_ct1(entry: WeightsEntry, net: nn.Module, target: str, available: Sequence[str],
              phases: int) -> Plan:
    return Plan(net, tuple(entry.inputs), entry.targets.index(target), patch_size=tuple(entry.patch_size),
                multiple=net.multiple)


def _important_net(entry: WeightsEntry, net: nn.Module, target: str, available: Sequence[str],
                   phases: int) -> Plan:
    # five stride-2 levels in each reconstruction branch: slices must be multiples of 32
    return Plan(net.synthesize, tuple(entry.inputs), entry.targets.index(target), multiple=32)


def _seq2seq(entry: WeightsEntry, net: nn.Module, target: str, available: Sequence[str], phases: int) -> Plan:
    """2.5D (three adjacent slices per sequence frame). Every frame of every source is one step of the
    model's time axis: the frames of a 4D series, and several sources, are fused by the encoder ConvLSTM
    and averaged (section 3.2), in the task's sequence order, as training feeds one to S - 1 sources
    (``training.recipes.seq2seq``); a series target is unrolled to ``phases`` frames. The target itself is
    never an input: with every sequence present the model still predicts from the others."""
    sources = tuple(s for s in entry.inputs if s in available and s != target)
    if not sources:
        raise InputError(f"seq2seq needs at least one sequence other than {target}; got {', '.join(available) or 'none'}")

    def predictor(x: torch.Tensor) -> torch.Tensor:
        steps = x.reshape(x.shape[0], x.shape[1] // 3, 3, *x.shape[-2:])
        return net(steps, target, phases=phases).flatten(1, 2)
    return Plan(predictor, sources, 0, context=1, multiple=net.factor, phases=phases)


def _tc_mgan(entry: WeightsEntry, net: nn.Module, target: str, available: Sequence[str],
             phases: int) -> Plan:
    """T2 slices and the target's modality label; slices padded to 2^levels of the pix2pix U-Net."""
    return Plan(lambda x: net(x, target), tuple(entry.inputs), 0, multiple=net.multiple)


_PLANS: dict[str, Callable[[WeightsEntry, nn.Module, str, Sequence[str], int], Plan]] = {
    "unet-ct1": _unet_ct1,
    "important-net": _important_net,
    "seq2seq": _seq2seq,
    "tc-mgan": _tc_mgan,
}


def plan_for(entry: WeightsEntry, net: nn.Module, target: str, available: Sequence[str],
             phases: int | None = None) -> Plan:
    """The plan to synthesize ``target`` with ``entry``'s network from the ``available`` sequences.

    ``phases``: the frames of a 4D series target (those of the real series it is compared with, say);
    default the manifest's ``series`` count for it, 1 for a 3D target.
    """
    if entry.model not in _PLANS:
        raise InputError(f"{entry.model} has no synthesis plan (it is not a sequence-to-sequence model)")
    if target not in entry.targets:
        raise InputError(f"{entry.model} ({entry.key}) cannot produce {target}; it produces {', '.join(entry.targets)}")
    if phases is None:
        phases = entry.series.get(target, 1)
    elif target not in entry.series and phases != 1:
        raise InputError(f"{entry.key} makes {target} as a 3D volume, not a series of {phases} frames")
    if isinstance(phases, bool) or not isinstance(phases, int) or phases < 1:
        raise InputError(f"the number of frames to synthesize must be a positive integer, not {phases!r}")
    return _PLANS[entry.model](entry, net, target, available, phases)


def mirrored(predictor: Predictor) -> Predictor:
    """Test-time mirroring: the mean of the prediction and the mirrored prediction of the mirrored input,
    along x, the last axis of a slice or a patch.

    Training flips that same array axis (``training.sampling``), so the mirrored input is one the network
    learned from; averaging the two cancels part of each prediction's own error (nnU-Net mirrors by default
    for the same reason), for twice the inference time. Measured on the bundled models: +0.1 to +0.34 dB
    PSNR on 13 of 14 rows on held-out phantom subjects, -0.04 dB on IMPORTANT-Net breast (README,
    *Bundled weights*)."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        return (predictor(x) + predictor(x.flip(-1)).flip(-1)) / 2
    return predict


def run_plan(plan: Plan, stacked: np.ndarray, device, progress: Progress | None = None, *,
             mirror: bool = False) -> np.ndarray:
    """The target predicted over a whole normalised (channels, z, y, x) volume, as ``plan`` says: (z, y, x),
    or (phases, z, y, x) for a series target. ``stacked`` holds every frame of a series input. ``mirror``:
    average with the mirrored prediction (:func:`mirrored`)."""
    if mirror:
        plan = replace(plan, predictor=mirrored(plan.predictor))
    if plan.patch_size:
        predicted = predict_patches(plan.predictor, stacked, patch_size=plan.patch_size, multiple=plan.multiple,
                                    device=device, progress=progress)
    else:
        predicted = predict_slices(plan.predictor, stacked, context=plan.context, multiple=plan.multiple,
                                   device=device, progress=progress)
    return predicted[plan.output] if plan.phases == 1 else predicted[plan.output:plan.output + plan.phases]


def translator(entry, net, device) -> Callable[..., np.ndarray]:
    """``translate(volumes, source, target, progress=None)``: ``source`` alone -> ``target``, on normalised
    arrays. A 4D series source enters with every frame; a series target is made with the real series' frame
    count. Ranking and the maps of one case (:mod:`differentiation`) both translate through it."""

    def translate(volumes: Mapping[str, np.ndarray], source: str, target: str, progress=None) -> np.ndarray:
        real, given = volumes[target], volumes[source]
        plan = plan_for(entry, net, target, (source,), phases=real.shape[0] if real.ndim == 4 else 1)
        if plan.order != (source,):
            raise InputError(f"{entry.model} needs {', '.join(plan.order)} together; single-source translations "
                             "need a model that translates every sequence into every other (seq2seq)")
        return run_plan(plan, given if given.ndim == 4 else given[None], device, progress)
    return translate
