"""Phantom subjects written as case folders, the way real datasets arrive.

Brain: BraTS 2023 naming, ``<case>/<case>-t1n.nii.gz``, ``-t1c``, ``-t2w``, ``-t2f``, ``-pd``, ``-seg``.
Breast: ``-t1n`` (pre-contrast T1), ``-dce`` (4D: pre-contrast and post-contrast phases, times in the
JSON sidecar), ``-dwi`` (4D: b = 0 and 800 s/mm^2, b-values in the sidecar), ``-adc``, ``-t2w``, ``-seg``
(1 benign, 2 malignant, 3 cyst). Each case has ``truth.json`` (field strength, tissue parameters,
protocol, true transforms, lesions) and, on request, ``montage.png``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

from ..errors import InputError
from ..sequences import SEGMENTATION, SUFFIX_2023
from ..volume import output_folder, write_volume
from . import ANATOMIES, sample


#: phantom seeds from here on are training subjects (``train --data phantom:...``); held-out evaluation,
#: the demo and the tests use lower seeds, so no model is ever judged on a subject it was trained on
FIRST_TRAINING_SEED = 10000


def case_name(anatomy: str, seed: int) -> str:
    return f"MRIS-{anatomy.upper()}-{seed:05d}"


def write_case(subject, out: Path, *, png: bool = False) -> Path:
    """Write one subject into ``out/<case>/``; the folder appears only once complete."""
    name = case_name(subject.anatomy, subject.seed)
    final = out / name
    written = {f"{name}-{SUFFIX_2023[s]}.nii.gz" for s in (*subject.sequences, SEGMENTATION)}
    written |= {f"{Path(n).name[:-len('.nii.gz')]}.json" for n in written} | {"truth.json", "montage.png"}
    if final.is_dir() and (foreign := sorted(p.name for p in final.iterdir() if p.name not in written)):
        raise InputError(f"{final}: holds files the phantom did not write ({', '.join(foreign[:3])}); it would "
                         "replace the folder: choose another --out")
    partial = out / f".partial-{name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for sequence, volume in subject.sequences.items():
            write_volume(volume, partial / f"{name}-{SUFFIX_2023[sequence]}.nii.gz")
        write_volume(subject.labels, partial / f"{name}-{SUFFIX_2023[SEGMENTATION]}.nii.gz", labels=True)
        (partial / "truth.json").write_text(json.dumps(subject.truth_json(), indent=1))
        if png:
            from .montage import write_montage
            write_montage(subject, partial / "montage.png")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def write_cases(anatomy: str, *, n: int = 1, seed: int = 0, out: str | Path, png: bool = False,
                resolution: float | None = None, progress: bool = True, **options) -> Iterator[Path]:
    """Generate and write ``n`` subjects with seeds ``seed``, ``seed + 1``, …; yields each case folder."""
    if anatomy not in ANATOMIES:
        raise InputError(f"unknown anatomy '{anatomy}'; the phantom simulates {', '.join(ANATOMIES)}")
    if n < 1:
        raise InputError(f"--n must be at least 1, not {n}")
    if seed < 0:
        raise InputError(f"--seed must be non-negative, not {seed}")
    if resolution is not None and not 0.5 <= resolution <= 8:  # before the output folder is made
        raise InputError(f"--resolution must be between 0.5 and 8 mm, not {resolution}")
    out = output_folder(out)
    if resolution is not None:
        options["resolution"] = resolution
    from tqdm import tqdm
    for i in tqdm(range(n), desc=f"{anatomy} phantom", unit="subject", disable=not progress):
        try:
            yield write_case(sample(anatomy, seed + i, **options), out, png=png)
        except PermissionError as err:
            raise InputError(f"{out}: cannot write into the output folder ({err.strerror})") from err
