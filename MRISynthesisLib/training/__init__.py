"""Headless training: data sources and caching, sampling, per-model recipes, the resumable trainer.

Entry points: ``mri-synthesis train …`` and ``torchrun --nproc_per_node=K -m MRISynthesisLib.training …``.
"""
