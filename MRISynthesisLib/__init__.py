"""MRISynthesisLib: synthesis of missing MRI sequences, importable without 3D Slicer.

Research use only: not a medical device, not for diagnosis or treatment decisions.
"""

__version__ = "0.1.0"
RESEARCH_USE_NOTICE = "Research use only: not for clinical diagnosis or treatment decisions."
