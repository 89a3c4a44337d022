"""The five model families (one file each), their shared blocks and the registry.

``build("unet-ct1", "lite")`` returns the generator; ``spec(name)`` says what it takes and gives.
"""

from .registry import NAMES, available, build, count_macs, count_parameters, measure, size_table, spec
from .spec import CONFIGS, ModelSpec

__all__ = ["CONFIGS", "ModelSpec", "NAMES", "available", "build", "count_macs", "count_parameters", "measure", "size_table",
           "spec"]
