"""``python -m MRISynthesisLib.training`` (and under ``torchrun``): the same options as ``mri-synthesis train``."""

import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
