"""What the registry knows about a model: its paper, inputs and outputs, form, sizes and builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

CONFIGS = ("lite", "paper")


@dataclass(frozen=True)
class ModelSpec:
    """A model family.

    Attributes:
        name: CLI name (``important-net``, ``seq2seq``, ``tc-mgan``, ``unet-ct1``, ``mp-gan``).
        title, paper: display name and the paper file in ``shared/papers``.
        inputs, outputs: human-readable, e.g. "n >= 1 registered sequences" -> "one missing sequence".
        form: ``2D``, ``2.5D``, ``3D`` or ``noise -> 2D``.
        input_size: per configuration, the spatial size the model is built for (paper: the paper's).
        build: ``build(config, **overrides) -> nn.Module`` for the generator (what inference runs).
        example_inputs: ``example_inputs(model, config, batch) -> tuple`` of tensors for a forward pass.
        paper_parameters_m, paper_macs_g: the paper's reported figures, where it gives them.
        extras: other networks of the family (discriminator, critic, segmenter) by name -> builder.
    """

    name: str
    title: str
    paper: str
    inputs: str
    outputs: str
    form: str
    input_size: dict[str, tuple[int, ...]]
    build: Callable[..., nn.Module]
    example_inputs: Callable[[nn.Module, str, int], tuple[torch.Tensor, ...]]
    paper_parameters_m: float | None = None
    paper_macs_g: float | None = None
    extras: dict[str, Callable[..., nn.Module]] = field(default_factory=dict)
