"""Sequence names, SEQ=FILE arguments and BraTS case folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.sequences import (BRATS_2021, BRATS_2023, SEGMENTATION, SEQUENCES, canonical,
                                       discover_case, parse_assignments, read_case_manifest)
from MRISynthesisLib.volume import Volume, write_volume


@pytest.mark.parametrize("alias, expected", [
    ("t1n", "T1"), ("T1w", "T1"), ("t1", "T1"), ("T1", "T1"), (" t1 ", "T1"),
    ("t1c", "T1ce"), ("T1Gd", "T1ce"), ("t1ce", "T1ce"), ("T1CE", "T1ce"), ("t1+c", "T1ce"),
    ("t2w", "T2"), ("t2", "T2"), ("T2", "T2"),
    ("t2f", "FLAIR"), ("FLAIR", "FLAIR"), ("flair", "FLAIR"), ("T2-FLAIR", "FLAIR"),
    ("dwi", "DWI"), ("DWI", "DWI"), ("adc", "ADC"), ("dce", "DCE"), ("pd", "PD"), ("PDw", "PD"),
])
def test_canonical_aliases(alias, expected):
    assert canonical(alias) == expected


def test_canonical_names_are_fixed_points():
    for name in SEQUENCES:
        assert canonical(name) == name
        assert canonical(name.lower()) == name
        assert canonical(name.upper()) == name


@pytest.mark.parametrize("name, suggestion", [("flar", "FLAIR"), ("FLAIRR", "FLAIR"), ("T1CE2", "T1ce")])
def test_unknown_name_suggests_the_closest(name, suggestion):
    with pytest.raises(InputError) as err:
        canonical(name)
    message = str(err.value)
    assert f"unknown sequence name '{name}'" in message
    assert f"did you mean {suggestion}?" in message
    assert "known: T1, T1ce, T2, FLAIR" in message


def test_unknown_name_without_a_close_match_lists_known_names():
    with pytest.raises(InputError) as err:
        canonical("zzzzzz")
    assert "did you mean" not in str(err.value)
    for name in SEQUENCES:
        assert name in str(err.value)


# --------------------------------------------------------------------- SEQ=FILE
def test_parse_assignments_canonicalises():
    got = parse_assignments(["t1n=a.nii.gz", "T1Gd=dir/b.nrrd", "flair=c=d.mha"])
    assert got == {"T1": Path("a.nii.gz"), "T1ce": Path("dir/b.nrrd"), "FLAIR": Path("c=d.mha")}
    assert list(got) == ["T1", "T1ce", "FLAIR"]  # order of the arguments is kept
    assert parse_assignments([]) == {}


@pytest.mark.parametrize("items, message", [
    (["T1"], "--input 'T1': expected SEQ=FILE"),
    (["T1=a.nii.gz", "t2.nii.gz"], "--input 't2.nii.gz': expected SEQ=FILE"),
    (["T1="], "--input 'T1=': no file after '='"),
    (["T1=a.nii.gz", "t1n=b.nii.gz"], "--input: sequence T1 given twice (a.nii.gz and b.nii.gz)"),
    (["t1ce=a.nii.gz", "T1Gd=b.nii.gz"], "sequence T1ce given twice"),
    (["T7=a.nii.gz"], "unknown sequence name 'T7'"),
])
def test_parse_assignments_errors(items, message):
    with pytest.raises(InputError) as err:
        parse_assignments(items)
    assert message in str(err.value)


def test_parse_assignments_names_the_option():
    with pytest.raises(InputError, match="^--moving 'x'"):
        parse_assignments(["x"], option="--moving")


# --------------------------------------------------------------------- case folders
def _tiny(path: Path, seed: int = 0) -> Path:
    array = np.random.default_rng(seed).uniform(0, 100, (2, 3, 4))
    return write_volume(Volume(array), path)


def test_discover_brats_2023(tmp_path):
    names = {"T1": "t1n", "T1ce": "t1c", "T2": "t2w", "FLAIR": "t2f", SEGMENTATION: "seg"}
    for i, suffix in enumerate(names.values()):
        _tiny(tmp_path / f"BraTS-GLI-00001-000-{suffix}.nii.gz", i)
    (tmp_path / "README.txt").write_text("not an image")
    (tmp_path / "BraTS-GLI-00001-000-t1n.json").write_text("{}")
    found = discover_case(tmp_path)
    assert found == {key: tmp_path / f"BraTS-GLI-00001-000-{suffix}.nii.gz" for key, suffix in names.items()}


def test_discover_brats_2021(tmp_path):
    names = {"T1": "t1", "T1ce": "t1ce", "T2": "t2", "FLAIR": "flair", SEGMENTATION: "seg"}
    for i, suffix in enumerate(names.values()):
        _tiny(tmp_path / f"BraTS2021_00001_{suffix}.nii.gz", i)
    found = discover_case(str(tmp_path))
    assert found == {key: tmp_path / f"BraTS2021_00001_{suffix}.nii.gz" for key, suffix in names.items()}


def test_discover_breast_naming_and_other_formats(tmp_path):
    _tiny(tmp_path / "breast-0001-t1n.nrrd")
    _tiny(tmp_path / "breast-0001-adc.mha")
    _tiny(tmp_path / "breast-0001-dce.nii")
    assert discover_case(tmp_path) == {"T1": tmp_path / "breast-0001-t1n.nrrd",
                                       "ADC": tmp_path / "breast-0001-adc.mha",
                                       "DCE": tmp_path / "breast-0001-dce.nii"}


def test_discover_headers_with_detached_voxels(tmp_path):
    """.mhd and .nhdr (read like the others) are found; their voxel files (.raw, .zraw) are not sequences."""
    _tiny(tmp_path / "case-t1n.mhd")
    _tiny(tmp_path / "case-t2w.nhdr")
    assert sorted(p.suffix for p in tmp_path.iterdir()) != [".mhd", ".nhdr"]  # voxel files were written beside
    assert discover_case(tmp_path) == {"T1": tmp_path / "case-t1n.mhd", "T2": tmp_path / "case-t2w.nhdr"}


def test_discover_ignores_hidden_files(tmp_path):
    _tiny(tmp_path / "case-t1n.nii.gz")
    _tiny(tmp_path / ".case-t2w.nii.gz")
    assert discover_case(tmp_path) == {"T1": tmp_path / "case-t1n.nii.gz"}


def test_discover_restricted_naming(tmp_path):
    _tiny(tmp_path / "case-t1n.nii.gz")
    _tiny(tmp_path / "case_t2.nii.gz")
    assert discover_case(tmp_path, naming=BRATS_2021) == {"T2": tmp_path / "case_t2.nii.gz"}
    assert discover_case(tmp_path, naming=BRATS_2023) == {"T1": tmp_path / "case-t1n.nii.gz"}


@pytest.mark.parametrize("files", [
    ["case-t1n.nii.gz", "case_t1.nii.gz"],          # 2023 and 2021 names of one sequence
    ["case-t1n.nii.gz", "case-t1n.nrrd"],           # one sequence in two formats
    ["BraTS2021_1_t1ce.nii.gz", "BraTS-GLI-1-t1c.nii.gz"],
])
def test_discover_two_files_for_one_sequence(tmp_path, files):
    for name in files:
        _tiny(tmp_path / name)
    with pytest.raises(InputError, match="two files for") as err:
        discover_case(tmp_path)
    assert str(tmp_path) in str(err.value)
    for name in files:
        assert name in str(err.value)


def test_discover_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no sequence files") as err:
        discover_case(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_discover_folder_with_only_a_segmentation(tmp_path):
    _tiny(tmp_path / "case-seg.nii.gz")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no sequence files"):
        discover_case(tmp_path)


def test_discover_not_a_folder(tmp_path):
    file = _tiny(tmp_path / "case-t1n.nii.gz")
    for path in (file, tmp_path / "missing"):
        with pytest.raises(InputError, match="not a folder") as err:
            discover_case(path)
        assert str(path) in str(err.value)


@pytest.mark.parametrize("text, expected", [
    ("BraTS-GLI-00001-000-t1c.nii.gz", "T1ce"), ("BraTS2021_00001_flair.nii.gz", "FLAIR"),
    ("case-t2w", "T2"), ("AX T1 POST GAD", "T1ce"), ("Sag T1 MPRAGE", "T1"), ("T2 FLAIR AXIAL", "FLAIR"),
    ("AX T2 TSE", "T2"), ("DWI b1000", "DWI"), ("ADC map", "ADC"), ("T1 VIBE dynamic", "DCE"),
    ("localizer", None), ("MRIS-BREAST-00001-dce.nii.gz", "DCE"),
])
def test_guess_from_description(text, expected):
    from MRISynthesisLib.sequences import guess_from_description
    assert guess_from_description(text) == expected


def test_manifest_from_a_spreadsheet_with_a_byte_order_mark_is_read(tmp_path):
    manifest = tmp_path / "cases.csv"
    manifest.write_bytes("case,sequence,path\r\npatienté,T1,a/t1.nii.gz\r\n".encode("utf-8-sig"))
    assert read_case_manifest(manifest) == {"patienté": {"T1": tmp_path / "a" / "t1.nii.gz"}}


@pytest.mark.parametrize("text, message", [
    ("case,sequence,path\nA,T1\n", "line 2: every row needs a case, a sequence and a path"),
    ("case,sequence,path\nA\n", "line 2: every row needs a case, a sequence and a path"),
    ("case,sequence,path\nA,T1,a.nii.gz\n,T2,b.nii.gz\n", "line 3: every row needs a case"),
    ("case,sequence,path\n../../escaped,T1,a.nii.gz\n", "case name '../../escaped' is not a plain name"),
    ("case,sequence,path\n..,T1,a.nii.gz\n", "case name '..' is not a plain name"),
    ("case,sequence,path\na\\b,T1,a.nii.gz\n", "is not a plain name"),
])
def test_manifest_rows_that_cannot_name_a_case_are_refused_by_line(tmp_path, text, message):
    manifest = tmp_path / "cases.csv"
    manifest.write_text(text)
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        read_case_manifest(manifest)


def test_manifest_that_is_not_utf8_is_refused_with_what_to_do(tmp_path):
    manifest = tmp_path / "cases.csv"
    manifest.write_bytes("case,sequence,path\npatienté,T1,a.nii.gz\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text .*save the manifest as CSV UTF-8"):
        read_case_manifest(manifest)


def test_discover_reads_suffixes_and_extensions_in_any_case(tmp_path):
    """Windows tools and some exports write upper-case names; the file reader accepts them, so must discovery."""
    _tiny(tmp_path / "BraTS-GLI-00002-000-t1n.nii.gz", 0)
    _tiny(tmp_path / "BraTS-GLI-00002-000-T2F.NII.GZ", 1)
    assert discover_case(tmp_path) == {"T1": tmp_path / "BraTS-GLI-00002-000-t1n.nii.gz",
                                       "FLAIR": tmp_path / "BraTS-GLI-00002-000-T2F.NII.GZ"}
