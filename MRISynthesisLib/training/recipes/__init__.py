"""Training recipes: per model, the papers' losses, optimizers and how batches are drawn.

``recipe_for(name)`` returns the recipe class; each lives in its own module.
"""

from __future__ import annotations

import importlib

from ...errors import InputError
from .base import Recipe

_MODULES = {"unet-ct1": "unet_ct1", "important-net": "important_net", "seq2seq": "seq2seq",
            "tc-mgan": "tc_mgan", "mp-gan": "mp_gan"}
NAMES = tuple(_MODULES)


def recipe_for(name: str) -> type[Recipe]:
    if name not in _MODULES:
        raise InputError(f"unknown model '{name}'; known models: {', '.join(_MODULES)}")
    try:
        module = importlib.import_module(f"{__package__}.{_MODULES[name]}")
    except ModuleNotFoundError as err:
        if err.name == f"{__package__}.{_MODULES[name]}":
            raise InputError(f"training '{name}' is not built yet (issue #7)") from err
        raise
    return module.RECIPE


__all__ = ["NAMES", "Recipe", "recipe_for"]
