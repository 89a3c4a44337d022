"""The Slicer side of MRISynthesis that needs MRML but no Qt: node conversion and the synthesis logic.

Kept apart from ``MRISynthesis.py`` (which needs the Slicer application) so it can be tested against a
real MRML scene from PyPI's slicer-core, and run headless.
"""
