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
A case already written is skipped unless ``--overwrite``. A case whose missing sequences no model can
make from what it has (two or more missing where the model needs more inputs) is skipped with the
reason; it is not a failure, since nothing is wrong with it. A case that fails (an unreadable file, a
case name used by two folders) is reported and the others go on; the summary at the end lists the
failures and the reasoned skips, and the command exits 2 if there was a failure.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from .errors import InputError
from .selection import EXPECTED, choose_model, explain
from .sequences import BRATS_2021, SEGMENTATION, SUFFIX_2023, case_of_file, discover_case, read_case_manifest
from .volume import SINGLE_FILE_SUFFIXES, image_suffix

_SUFFIX_2021 = {v: k for k, v in BRATS_2021.items()}


@dataclass
class CaseResult:
    case: str
    status: str  # "written", "skipped", "nothing to do", "failed"
    detail: str = ""
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the user must know about an output (provenance)


def list_cases(data: str | Path, *, brasyn: bool = False) -> dict[str, dict[str, Path]]:
    """{case: {sequence: file}} from case folders or a manifest CSV.

    A case that cannot be read is kept as ``{"error": reason}`` so that it is reported and the others go
    on. For the flat BraSyn folder (``brasyn``), whose outputs are named by the case name the files carry,
    two cases (folders or manifest entries) whose files carry the same name (a copied case, or files named
    alike in every patient's folder) are both marked: their outputs would land on one file, and which one is
    right cannot be guessed. Elsewhere each case writes into a folder of its own name.
    """
    data = Path(data)
    if data.is_file():
        cases = read_case_manifest(data)
        if brasyn:
            _mark_duplicate_case_names(cases)
        return cases
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
    if brasyn:
        _mark_duplicate_case_names(cases)
    return cases


def case_name(folder: str, files: Mapping[str, Path]) -> str:
    """The case name the files themselves carry (``BraTS-GLI-00001-000`` of ``…-t1n.nii.gz``), which the
    BraSyn output must repeat; the folder's name when the files do not agree on one."""
    names = {case for p in files.values() if (case := case_of_file(p))}
    return names.pop() if len(names) == 1 else folder


def _mark_duplicate_case_names(cases: dict[str, dict]) -> None:
    owners: dict[str, list[str]] = {}
    for folder, files in cases.items():
        if "error" not in files:
            owners.setdefault(case_name(folder, files), []).append(folder)
    for name, folders in owners.items():
        for folder in folders if len(folders) > 1 else ():
            cases[folder] = {"error": f"duplicate case name {name} in cases {', '.join(folders)}; "
                                      "keep one (their outputs would overwrite each other)"}


def output_name(case: str, files: Mapping[str, Path], target: str) -> str:
    """The missing file's name in the case's own naming: BraTS 2021 (``<case>_t1ce.nii.gz``) when its
    files put ``_`` after the case name, else BraTS 2023 (``<case>-t1c.nii.gz``); ``<case>`` is the name
    the sibling files carry, which may differ from the folder's. The format is the siblings' when they
    share one single-file format (a case of ``.nrrd`` files gets a ``.nrrd``), else NIfTI (``.nii.gz``)."""
    case = case_name(case, files)
    paths = [Path(p) for k, p in files.items() if k != SEGMENTATION]
    names = [p.name for p in paths]
    shared = {p.name[len(p.name) - len(image_suffix(p)):] for p in paths}  # as spelled: ".nrrd", ".NII.GZ"
    extension = shared.pop() if len(shared) == 1 and image_suffix(paths[0]) in SINGLE_FILE_SUFFIXES else ".nii.gz"
    if names and all(n.startswith(f"{case}_") for n in names):
        return f"{case}_{_SUFFIX_2021[target]}{extension}"
    return f"{case}-{SUFFIX_2023[target]}{extension}"


ALREADY_WRITTEN = "already written (--overwrite to redo)"


def _target_path(out: Path, case: str, files: Mapping[str, Path], target: str, brasyn: bool) -> Path:
    if brasyn:
        return out / output_name(case, files, target)
    return out / case / f"{case}-{SUFFIX_2023[target]}.nii.gz"


def _why_none_can(err: InputError, target: str, present: set[str], anatomy: str, weights_folder,
                  model: str = "best") -> str:
    """choose_model's refusal plus what the asked-for model (with ``best``, each model that makes ``target``)
    would still need."""
    needs = [reason for _, reason in explain(target, present, anatomy, weights_folder)
             if reason and "needs" in reason and (model == "best" or reason.startswith(f"{model} "))]
    return f"{err}" + (f" ({'; '.join(needs)})" if needs else "")


def plan_case(case: str, files: Mapping[str, Path], out: Path, *, anatomy: str, model: str, brasyn: bool,
              weights_folder=None) -> tuple[dict[str, tuple[Path, object, str]], list[str]]:
    """({target: (output path, weights entry, why this model)} for every missing sequence some model can
    make from what the case has, [one reason per missing sequence that no model can make])."""
    present = {k for k in files if k != SEGMENTATION}
    plan, reasons = {}, []
    for target in (s for s in EXPECTED[anatomy] if s not in present):
        try:
            entry, why = choose_model(target, present, anatomy, model, weights_folder)
        except InputError as err:
            reasons.append(_why_none_can(err, target, present, anatomy, weights_folder, model))
            continue
        plan[target] = (_target_path(out, case, files, target, brasyn), entry, why)
    return plan, reasons


def synthesize_case(case: str, files: Mapping[str, Path], plan: Mapping[str, tuple[Path, object, str]], *,
                    anatomy: str, brasyn: bool, register: str, device: str, weights_folder=None,
                    say: Callable[[str], None] = print) -> tuple[list[str], list[str]]:
    """Write every planned target of one case; returns the files written and the results' warnings (an
    input whose field of view leaves part of the anatomy blank, each prefixed with its target; with
    registration ``none``, a sequence that does not look aligned, checked once for the case). All or
    nothing: when a target fails, the case's files this call wrote are removed (a case reported as failed
    leaves no output that reads as its result, in a flat --brasyn folder least of all)."""
    from .inputs import load_case
    from .pipeline import case_alignment_warnings, synthesize
    from .volume import output_folder, refuse_overwrite, report_path, write_volume

    present = {k: v for k, v in files.items() if k != SEGMENTATION}
    inputs = load_case(present)
    written, warnings, made = [], [], []
    used = {k for _, entry, _ in plan.values() for k in entry.inputs if k in inputs}
    if register == "none" and used:  # once per case, not once per target; only what a model is given
        for warning in case_alignment_warnings({k: v for k, v in inputs.items() if k in used}):
            warnings.append(warning)
            say(f"{case}: warning: {warning}")
    try:
        for target, (path, entry, why) in plan.items():
            usable = {k: v for k, v in inputs.items() if k in entry.inputs and k != target}
            result = synthesize(usable, target, entry.model, anatomy=anatomy, register=register, device=device,
                                weights_folder=weights_folder, input_names={k: str(files[k]) for k in usable},
                                check_alignment=False)
            if not brasyn:
                output_folder(path.parent)
            made.append(write_volume(result.volume, path, protect=list(files.values())))
            if not brasyn:
                report = report_path(path)
                refuse_overwrite(report, list(files.values()))
                report.write_text(json.dumps({"provenance": result.provenance, "model_choice": why}, indent=1))
                made.append(report)
            written.append(str(path))
            say(f"{case}: {target} by {why} -> {path.name}")
            for warning in result.provenance["warnings"]:
                warnings.append(f"{target}: {warning}")
                say(f"{case}: warning: {warnings[-1]}")
    except Exception:
        for path in made:
            Path(path).unlink(missing_ok=True)
        if written:
            say(f"{case}: removed what it had written ({', '.join(Path(p).name for p in written)})")
        raise
    return written, warnings


def _made_by_another(paths: list[str], model: str) -> list[str]:
    """The models other than ``model`` whose reports say they made these outputs (an earlier run with another
    --model), so a rerun that skips them says so; none for ``best`` or outputs without a report (--brasyn)."""
    from .volume import report_path

    if model == "best":
        return []
    made_by = set()
    for path in paths:
        try:
            made_by.add(json.loads(report_path(path).read_text())["provenance"]["model"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(made_by - {model})


def process_case(case: str, files: Mapping[str, Path], out: Path, *, anatomy: str, model: str, brasyn: bool,
                 register: str, device: str, overwrite: bool, weights_folder=None,
                 say: Callable[[str], None] = print) -> CaseResult:
    """One case, start to end; a problem with it becomes a "failed" result, never an exception."""
    try:
        if "error" in files:
            raise InputError(str(files["error"]))
        if all(s in files for s in EXPECTED[anatomy]):
            say(f"{case}: nothing to do (all of {', '.join(EXPECTED[anatomy])} present)")
            return CaseResult(case, "nothing to do", "no sequence is missing")
        plan, reasons = plan_case(case, files, out, anatomy=anatomy, model=model, brasyn=brasyn,
                                  weights_folder=weights_folder)
        if not plan:
            say(f"{case}: skipped: {'; '.join(reasons)}")
            return CaseResult(case, "skipped", "; ".join(reasons))
        paths = [str(path) for path, _, _ in plan.values()]
        if not overwrite and all(Path(p).exists() for p in paths):
            others = _made_by_another(paths, model)
            say(f"{case}: already written, skipped" + (f" (made by {', '.join(others)}; --overwrite to make them "
                                                      f"with {model})" if others else ""))
            return CaseResult(case, "skipped", ALREADY_WRITTEN, paths)
        written, warnings = synthesize_case(case, files, plan, anatomy=anatomy, brasyn=brasyn, register=register,
                                            device=device, weights_folder=weights_folder, say=say)
        for reason in reasons:
            say(f"{case}: not synthesized: {reason}")
        return CaseResult(case, "written", "; ".join(reasons), written, warnings)
    except InputError as err:
        say(f"{case}: FAILED: {err}")
        return CaseResult(case, "failed", str(err))
    except OSError as err:  # a file of this case the system cannot open or write (name too long, no access)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk fails every case after it: stop at once
            raise
        reason = f"{err.filename}: {err.strerror}" if err.filename else str(err)
        say(f"{case}: FAILED: {reason}")
        return CaseResult(case, "failed", reason)


def summarise(results: list[CaseResult], say: Callable[[str], None] = print) -> None:
    """Counts per status, then every failure, every case skipped for a reason other than being done, and
    every warning about an output written."""
    counts = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "nothing to do", "failed")}
    say("summary: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for r in results:
        if r.status == "failed" or (r.status == "skipped" and r.detail != ALREADY_WRITTEN):
            say(f"  {r.status} {r.case}: {r.detail}")
        for warning in r.warnings:
            say(f"  warning {r.case}: {warning}")


def run_batch(data: str | Path, out: str | Path, *, model: str = "best", anatomy: str = "brain", brasyn: bool = False,
              register: str = "none", device: str = "auto", overwrite: bool = False, progress: bool = True,
              weights_folder=None, say: Callable[[str], None] = print) -> list[CaseResult]:
    """Synthesize every case's missing sequences; returns one result per case (never stops at a failure)."""
    from tqdm import tqdm

    from .volume import output_folder, refuse_inside

    if anatomy not in EXPECTED:
        raise InputError(f"batch knows the expected sequences of {', '.join(EXPECTED)} cases, not {anatomy}")
    data_path, out_path = Path(data), Path(out)
    refuse_inside(out_path, data_path)
    cases = list_cases(data_path, brasyn=brasyn)
    out_path = output_folder(out_path)
    results = [process_case(case, files, out_path, anatomy=anatomy, model=model, brasyn=brasyn, register=register,
                            device=device, overwrite=overwrite, weights_folder=weights_folder, say=say)
               for case, files in tqdm(cases.items(), desc="batch", unit="case", disable=not progress)]
    summarise(results, say)
    return results
