"""The model registry: name -> :class:`ModelSpec`, and size counting (parameters, MACs).

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (PyTorch's maintained counter; one
multiply-accumulate = 2 FLOPs), on one forward pass of the generator at the configuration's input size.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import InputError
from .spec import CONFIGS, ModelSpec

#: CLI name -> module under MRISynthesisLib.models that defines ``SPEC``
_MODULES = {
    "important-net": "important_net",
    "seq2seq": "seq2seq",
    "tc-mgan": "tc_mgan",
    "unet-ct1": "unet_ct1",
    "mp-gan": "mp_gan",
}
NAMES = tuple(_MODULES)


def spec(name: str) -> ModelSpec:
    """The spec of model ``name``; a clear error naming the known models otherwise."""
    if name not in _MODULES:
        raise InputError(f"unknown model '{name}'; known models: {', '.join(NAMES)}")
    return importlib.import_module(f"{__package__}.{_MODULES[name]}").SPEC


def available() -> list[ModelSpec]:
    """Specs of the models whose module exists in this version."""
    found = []
    for name, module in _MODULES.items():
        try:
            found.append(importlib.import_module(f"{__package__}.{module}").SPEC)
        except ModuleNotFoundError as err:
            if err.name != f"{__package__}.{module}":
                raise
    return found


def build(name: str, config: str = "lite", **overrides) -> nn.Module:
    if config not in CONFIGS:
        raise InputError(f"unknown configuration '{config}'; use one of {', '.join(CONFIGS)}")
    return spec(name).build(config, **overrides)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one forward pass on ``inputs`` (FLOPs / 2 from PyTorch's counter)."""
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def measure(model_spec: ModelSpec, config: str) -> tuple[int, int]:
    """(parameters, MACs per forward pass at the configuration's input size, batch 1).

    Built and run on PyTorch's ``meta`` device: shapes only, no memory and no arithmetic, so the paper
    configurations (a 160x192x160 3D U-Net, say) are measured in a blink on any machine.
    """
    with torch.device("meta"):
        model = model_spec.build(config)
        inputs = model_spec.example_inputs(model, config, 1)
        return count_parameters(model), count_macs(model, inputs)


def size_table(configs: tuple[str, ...] = CONFIGS) -> list[dict]:
    """One row per available model and configuration: parameters and MACs beside the paper's figures."""
    rows = []
    for model_spec in available():
        for config in configs:
            parameters, macs = measure(model_spec, config)
            rows.append({"name": model_spec.name, "config": config, "inputs": model_spec.inputs,
                         "outputs": model_spec.outputs, "form": model_spec.form,
                         "input_size": list(model_spec.input_size[config]), "parameters_m": parameters / 1e6,
                         "macs_g": macs / 1e9, "paper_parameters_m": model_spec.paper_parameters_m,
                         "paper_macs_g": model_spec.paper_macs_g})
    return rows
