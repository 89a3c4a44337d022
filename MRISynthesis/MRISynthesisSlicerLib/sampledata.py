"""The brain and breast phantoms as Sample Data sources: one click gives a new user a complete case.

Nothing is downloaded: a source's button in the Sample Data module calls the source's
``customDownloader`` with the source, and ours simulates the held-out phantom subject in this process.
Registered from the module at ``startupCompleted()``, as Slicer's AI extensions register theirs; no
``slicer`` import here, so the registration is tested with a stand-in Sample Data module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

CATEGORY = "MRISynthesis"
CATEGORY_TITLE = "MRI Synthesis phantoms (simulated, nothing downloaded)"


@dataclass(frozen=True)
class PhantomSample:
    """One Sample Data button: its name (the button's text), the phantom it simulates, its thumbnail."""

    name: str
    anatomy: str
    seed: int
    thumbnail: str


#: held-out seeds (training starts at 10000); brain seed 7 is the demo's and the self-test's subject
SAMPLES = (
    PhantomSample("MRISynthesisBrainPhantom", "brain", 7, "MRISynthesisBrainPhantom.png"),
    PhantomSample("MRISynthesisBreastPhantom", "breast", 4, "MRISynthesisBreastPhantom.png"),
)


class PhantomLoader:
    """A source's ``customDownloader``: ``load(anatomy, seed)`` instead of a download. Its text is fixed
    because Sample Data tells sources apart by their text, so registering again (a module reload) adds no
    second button."""

    def __init__(self, sample: PhantomSample, load: Callable[[str, int], object]) -> None:
        self.sample = sample
        self.load = load

    def __call__(self, source=None):
        return self.load(self.sample.anatomy, self.sample.seed)

    def __repr__(self) -> str:
        return f"MRISynthesis phantom loader ({self.sample.anatomy}, seed {self.sample.seed})"


def register(sample_data, icons_folder: str, load: Callable[[str, int], object]) -> list[str]:
    """Register every phantom with the ``SampleData`` module; returns the sample names."""
    logic = sample_data.SampleDataLogic
    if hasattr(logic, "registerCustomSampleDataCategory"):  # newer Slicer: a readable section title
        logic.registerCustomSampleDataCategory(CATEGORY, CATEGORY_TITLE)
    for sample in SAMPLES:
        # empty file lists: Sample Data checks they have equal lengths, and there is nothing to fetch
        logic.registerCustomSampleDataSource(
            category=CATEGORY, sampleName=sample.name, uris=[], fileNames=[], nodeNames=[],
            thumbnailFileName=os.path.join(icons_folder, sample.thumbnail), customDownloader=PhantomLoader(sample, load))
    return [sample.name for sample in SAMPLES]
