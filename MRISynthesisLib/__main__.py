"""``python -m MRISynthesisLib``: the same command line as ``mri-synthesis``."""

import sys

from .cli import main

sys.exit(main())
