"""Canonical MRI sequence names, their aliases, ``SEQ=FILE`` arguments and BraTS case folders.

Every entry point (CLI, Slicer module, training data) speaks the canonical names below, so a model
trained on BraTS 2021 files (``t1ce``) serves a user who calls the same sequence ``T1Gd`` or ``t1c``.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

from .errors import InputError

T = TypeVar("T")

#: Canonical name -> one-line description.
SEQUENCES: dict[str, str] = {
    "T1": "T1-weighted, native (pre-contrast)",
    "T1ce": "T1-weighted after gadolinium (post-contrast)",
    "T2": "T2-weighted",
    "FLAIR": "T2-weighted fluid-attenuated inversion recovery",
    "PD": "proton-density weighted",
    "DWI": "diffusion-weighted (4D: one frame per b-value)",
    "ADC": "apparent diffusion coefficient map",
    "DCE": "dynamic contrast-enhanced series (4D: pre-contrast and post-contrast phases)",
}

#: Lower-cased alias -> canonical name. BraTS 2021 (t1, t1ce, t2, flair), BraTS 2023 (t1n, t1c, t2w,
#: t2f) and common scanner/DICOM spellings.
_ALIASES: dict[str, str] = {
    **{name.lower(): name for name in SEQUENCES},
    "t1n": "T1", "t1w": "T1", "t1-native": "T1", "t1pre": "T1", "t1native": "T1",
    "t1c": "T1ce", "t1gd": "T1ce", "t1post": "T1ce", "t1+c": "T1ce", "t1-ce": "T1ce", "ct1": "T1ce",
    "t2w": "T2",
    "t2f": "FLAIR", "t2-flair": "FLAIR", "t2flair": "FLAIR",
    "pdw": "PD",
    "dw": "DWI", "diffusion": "DWI",
    "adc-map": "ADC",
    "dynamic": "DCE",
}

#: Suffixes of the BraTS namings. Labels are not a sequence, so "seg" maps to the key ``SEGMENTATION``.
SEGMENTATION = "seg"
BRATS_2023 = {"t1n": "T1", "t1c": "T1ce", "t2w": "T2", "t2f": "FLAIR", "seg": SEGMENTATION,
              "pd": "PD"}  # pd: not in BraTS, written by the brain phantom in the same style
BRATS_2021 = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR", "seg": SEGMENTATION}
#: The breast phantom's naming (documented in the README): BraTS 2023 style plus 4D series and maps.
BREAST = {"t1n": "T1", "t2w": "T2", "dce": "DCE", "dwi": "DWI", "adc": "ADC", "seg": SEGMENTATION}
#: Canonical name -> BraTS 2023 suffix, used when we write case folders.
SUFFIX_2023 = {"T1": "t1n", "T1ce": "t1c", "T2": "t2w", "FLAIR": "t2f", "DCE": "dce", "DWI": "dwi",
               "ADC": "adc", "PD": "pd", SEGMENTATION: "seg"}

#: a case's image file: ``<case>-<suffix>.<ext>`` or ``<case>_<suffix>.<ext>``, the suffix and extension in any
#: case (``…-t2f.NII.GZ`` reads like every other file)
_IMAGE_RE = re.compile(r"^(?P<case>.+?)[-_](?P<suffix>[A-Za-z0-9]+)\.(?P<ext>nii\.gz|nii|nrrd|nhdr|mha|mhd)$",
                       re.IGNORECASE)


def canonical(name: str) -> str:
    """The canonical name of a sequence, from any known alias (case-insensitive)."""
    key = name.strip().lower().replace(" ", "")
    if key in _ALIASES:
        return _ALIASES[key]
    close = difflib.get_close_matches(key, list(_ALIASES), n=1)
    hint = f" (did you mean {_ALIASES[close[0]]}?)" if close else ""
    raise InputError(f"unknown sequence name '{name}'{hint}; known: {', '.join(SEQUENCES)}")


def canonical_keys(items: Mapping[str, T], describe: Callable[[T], str] | None = None,
                   verb: str = "given") -> dict[str, T]:
    """``items`` keyed by canonical sequence names (``t1c`` is T1ce); two entries for one sequence are
    refused, each named through ``describe`` when given."""
    chosen: dict[str, T] = {}
    for name, value in items.items():
        key = canonical(name)
        if key in chosen:
            which = (f": '{describe(chosen[key])}' and '{describe(value)}'" if describe
                     else f" (as {name} and under another name)")
            raise InputError(f"two volumes are {verb} for {key}{which}")
        chosen[key] = value
    return chosen


def parse_assignments(items: Iterable[str], *, option: str = "--input") -> dict[str, Path]:
    """Parse ``SEQ=FILE`` arguments into {canonical sequence: path}; duplicates are an error."""
    result: dict[str, Path] = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"{option} '{item}': expected SEQ=FILE, for example T1=t1.nii.gz")
        seq, _, file = item.partition("=")
        if not file:
            raise InputError(f"{option} '{item}': no file after '='")
        name = canonical(seq)
        if name in result:
            raise InputError(f"{option}: sequence {name} given twice ({result[name]} and {file})")
        result[name] = Path(file)
    return result


def read_case_manifest(path: str | Path) -> dict[str, dict[str, Path]]:
    """{case: {sequence or 'seg': file}} from a CSV with the columns case,sequence,path (paths relative to
    the CSV's folder unless absolute); a sequence listed twice for one case is an error.

    UTF-8 with or without the byte-order mark a spreadsheet's "CSV UTF-8" export writes. A case name becomes
    a file or folder name in every output (``<out>/<case>/``, a ranking's cache), so one that is empty or
    holds a path separator (``../x`` would write outside the output folder) is refused.
    """
    import csv

    path = Path(path)
    cases: dict[str, dict[str, Path]] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"case", "sequence", "path"} <= set(reader.fieldnames):
                raise InputError(f"{path}: a manifest needs the columns case,sequence,path")
            for row in reader:
                case, sequence, file = (str(row.get(k) or "").strip() for k in ("case", "sequence", "path"))
                where = f"{path}, line {reader.line_num}"
                if not (case and sequence and file):
                    raise InputError(f"{where}: every row needs a case, a sequence and a path")
                require_case_name(case, where)
                try:
                    seq = SEGMENTATION if sequence.lower() == "seg" else canonical(sequence)
                except InputError as err:
                    raise InputError(f"{where}: case {case}: {err}") from err
                files = cases.setdefault(case, {})
                if seq in files:
                    raise InputError(f"{path}: case {case} lists {seq} twice")
                files[seq] = Path(file) if Path(file).is_absolute() else path.parent / file
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save the manifest as "
                         "CSV UTF-8") from err
    if not cases:
        raise InputError(f"{path}: the manifest lists no case")
    return cases


def require_case_name(name: str, where: str) -> str:
    """``name``, usable as one file or folder name: not empty, not ``.`` or ``..``, no path separator."""
    if name in (".", "..") or any(sep in name for sep in ("/", "\\")) or Path(name).name != name:
        raise InputError(f"{where}: case name {name!r} is not a plain name (it names outputs, so it may not hold "
                         "a path separator or be . or ..)")
    return name


def case_of_file(path: str | Path) -> str | None:
    """The case name a BraTS-style file name carries (``BraTS-GLI-00001-000`` of ``…-t1n.nii.gz``)."""
    match = _IMAGE_RE.match(Path(path).name)
    return match["case"] if match else None


def discover_case(folder: str | Path, naming: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Files of one case folder, as {canonical sequence or 'seg': path}.

    Recognises the BraTS 2023 (``<case>-t1n.nii.gz``) and 2021 (``<case>_t1ce.nii.gz``) namings and
    the breast phantom's; ``naming`` restricts to one of them. Two files for one sequence is an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    namings = [naming] if naming is not None else [BRATS_2023, BRATS_2021, BREAST]
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        match = _IMAGE_RE.match(path.name)
        if not match or path.name.startswith("."):
            continue
        suffix = match["suffix"].lower()
        key = next((n[suffix] for n in namings if suffix in n), None)
        if key is None:
            continue
        if key in found:
            raise InputError(f"{folder}: two files for {key}: {found[key].name} and {path.name}")
        found[key] = path
    if not any(k != SEGMENTATION for k in found):
        raise InputError(f"{folder}: no sequence files in BraTS naming (<case>-t1n.nii.gz, <case>_t1ce.nii.gz, …)")
    return found


_CONTRAST_WORDS = re.compile(r"(gad|gd|contrast|post|\+c|\bce\b|mprage.*post|t1c\b|t1ce|t1gd)")


def guess_from_description(text: str) -> str | None:
    """The sequence a file name, node name or DICOM series description most likely is, or None.

    Used to pre-assign loaded volumes (the user can change it): BraTS suffixes (``…-t1c.nii.gz``,
    ``…_flair``) first, then scanner wording ("AX T1 POST GAD", "T2 FLAIR", "DWI b1000", "ADC").
    FLAIR is checked before T2 and contrast words before T1, the usual traps of naive matching.
    """
    lowered = text.strip().lower()
    match = _IMAGE_RE.match(Path(lowered).name) if "." in lowered else None
    stem = match["suffix"] if match else re.split(r"[-_ .]", lowered)[-1]
    for naming in (BRATS_2023, BRATS_2021, BREAST):
        if stem in naming and naming[stem] != SEGMENTATION:
            return naming[stem]
    words = re.sub(r"[-_.,;:()\[\]/]", " ", lowered)
    if "flair" in words or re.search(r"\bt2f\b", words):
        return "FLAIR"
    if re.search(r"\badc\b|apparent diffusion", words):
        return "ADC"
    if re.search(r"\bdwi\b|diffusion|\bb\s?\d{3,4}\b|\btrace\b", words):
        return "DWI"
    if re.search(r"\bdce\b|dynamic|perfusion|\bdyn\b", words):
        return "DCE"
    if re.search(r"\bpd\b|proton density", words):
        return "PD"
    if re.search(r"t1|mprage|spgr|bravo", words):
        return "T1ce" if _CONTRAST_WORDS.search(words) else "T1"
    if re.search(r"\bt2\b|t2w|t2 weighted|tse t2", words):
        return "T2"
    return None
