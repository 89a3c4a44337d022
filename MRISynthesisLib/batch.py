"""``mri-synthesis batch``: synthesize every missing sequence of every case of a folder (the BraSyn task).

Cases are the sub-folders of ``--data`` in the BraTS 2021/2023 naming, or the cases of a manifest CSV
(``case,sequence,path``). For each case the missing sequences among the four BraTS ones (``--anatomy
brain``) are found; each is synthesized with ``--model`` or, with ``best`` (the default), the bundled
model that measured the highest held-out PSNR for that target among those that can work from what the
case has (the manifest's figures; the choice is said in the log). Outputs:

* default: ``<out>/<case>/<case>-<suffix>.nii.gz`` per synthesized sequence, with a JSON sidecar of
  provenance;
* ``--brasyn``: exactly the BraSyn layout: only the missing file per case, named like its siblings
  (BraTS 2023 ``<case>-t1c.nii.gz`` or 2021 ``<case>_t1ce.nii.gz``), flat in ``<out>``, on the grid and
  header of the case's reference sequence (the BraTS sequences of a case share one grid).

The BraTS releases are co-registered, so inputs are not registered by default (``--register none``).
A case already written is skipped unless ``--overwrite``; a case that fails is reported and the others
go on; the summary at the end lists every failure and the command exits 2 if there was one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from .errors import InputError
from .selection import EXPECTED, choose_model
from .sequences import BRATS_2021, SEGMENTATION, SUFFIX_2023, discover_case, read_case_manifest

_SUFFIX_2021 = {v: k for k, v in BRATS_2021.items()}


@dataclass
class CaseResult:
    case: str
    status: str  # "written", "skipped", "nothing to do", "failed"
    detail: str = ""
    outputs: list[str] = field(default_factory=list)


def list_cases(data: str | Path) -> dict[str, dict[str, Path]]:
    """{case: {sequence: file}} from case folders or a manifest CSV; duplicate case names are an error."""
    data = Path(data)
    if data.is_file():
        return read_case_manifest(data)
    if not data.is_dir():
        raise InputError(f"{data}: no such data folder or manifest")
    folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{data}: no case folders (expected <data>/<case>/<case>-t1n.nii.gz, …)")
    cases = {}
    for folder in folders:
        try:
            cases[folder.name] = discover_case(folder)
        except InputError as err:  # reported per case later, the others go on
            cases[folder.name] = {"error": str(err)}  # type: ignore[dict-item]
    return cases


def output_name(case: str, files: Mapping[str, Path], target: str) -> str:
    """The missing file's name in the case's own naming: BraTS 2021 (``<case>_t1ce.nii.gz``) when its
    files put ``_`` after the case name, else BraTS 2023 (``<case>-t1c.nii.gz``)."""
    names = [Path(p).name for k, p in files.items() if k != SEGMENTATION]
    if names and all(n.startswith(f"{case}_") for n in names):
        return f"{case}_{_SUFFIX_2021[target]}.nii.gz"
    return f"{case}-{SUFFIX_2023[target]}.nii.gz"


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def run_batch(data: str | Path, out: str | Path, *, model: str = "best", anatomy: str = "brain", brasyn: bool = False,
              register: str = "none", device: str = "auto", overwrite: bool = False, progress: bool = True,
              weights_folder=None, say: Callable[[str], None] = print) -> list[CaseResult]:
    """Synthesize every case's missing sequences; returns one result per case (never stops at a failure)."""
    from tqdm import tqdm

    from .inputs import load_case
    from .pipeline import synthesize
    from .volume import output_folder, write_volume

    if anatomy not in EXPECTED:
        raise InputError(f"batch knows the expected sequences of {', '.join(EXPECTED)} cases, not {anatomy}")
    data_path, out_path = Path(data), Path(out)
    if data_path.is_dir() and _inside(out_path, data_path):
        raise InputError(f"{out_path}: the output folder is inside the input folder {data_path}; choose another")
    cases = list_cases(data_path)
    out_path = output_folder(out_path)
    results = []
    for case, files in tqdm(cases.items(), desc="batch", unit="case", disable=not progress):
        try:
            if "error" in files:
                raise InputError(str(files["error"]))
            present = {k for k in files if k != SEGMENTATION}
            missing = [s for s in EXPECTED[anatomy] if s not in present]
            if not missing:
                results.append(CaseResult(case, "nothing to do", "no sequence is missing"))
                say(f"{case}: nothing to do (all of {', '.join(EXPECTED[anatomy])} present)")
                continue
            targets = {t: (out_path / output_name(case, files, t)) if brasyn else
                       (out_path / case / f"{case}-{SUFFIX_2023[t]}.nii.gz") for t in missing}
            if not overwrite and all(p.exists() for p in targets.values()):
                results.append(CaseResult(case, "skipped", "already written (--overwrite to redo)",
                                          [str(p) for p in targets.values()]))
                say(f"{case}: already written, skipped")
                continue
            inputs = load_case({k: v for k, v in files.items() if k in present})
            written = []
            for target, path in targets.items():
                entry, why = choose_model(target, present, anatomy, model, weights_folder)
                usable = {k: v for k, v in inputs.items() if k in entry.inputs and k != target}
                result = synthesize(usable, target, entry.model, anatomy=anatomy, register=register, device=device,
                                    weights_folder=weights_folder,
                                    input_names={k: str(files[k]) for k in usable})
                if not brasyn:
                    output_folder(path.parent)
                write_volume(result.volume, path, protect=list(files.values()))
                if not brasyn:
                    path.with_name(path.name.split(".")[0] + ".json").write_text(
                        json.dumps({"provenance": result.provenance, "model_choice": why}, indent=1))
                written.append(str(path))
                say(f"{case}: {target} by {why} -> {path.name}")
            results.append(CaseResult(case, "written", "", written))
        except InputError as err:
            results.append(CaseResult(case, "failed", str(err)))
            say(f"{case}: FAILED: {err}")
    failed = [r for r in results if r.status == "failed"]
    counts = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "nothing to do", "failed")}
    say("summary: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for r in failed:
        say(f"  failed {r.case}: {r.detail}")
    return results
