"""Volume: file round trips keep values and geometry, immutability, geometry checks, clear read/write errors."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import MRISynthesisLib.volume as volume_module
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.volume import (IDENTITY_DIRECTION, Volume, geometry_differences, read_volume,
                                    require_same_geometry, same_geometry, sidecar_path, write_volume)

from conftest import OBLIQUE, ORIGIN, SPACING, make_volume, rotation_matrix, sha256

SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
GEOMETRY_TOL = 1e-6


def assert_same_geometry(a: Volume, b: Volume, tol: float = GEOMETRY_TOL) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=0, atol=tol)
    np.testing.assert_allclose(a.origin, b.origin, rtol=0, atol=tol)
    np.testing.assert_allclose(a.direction, b.direction, rtol=0, atol=tol)


def test_oblique_fixture_is_really_oblique_and_orthonormal():
    d = np.reshape(OBLIQUE, (3, 3))
    np.testing.assert_allclose(d @ d.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(d) == pytest.approx(1.0)
    assert np.all(np.abs(d - np.eye(3)) > 1e-3)  # no cosine left on an axis


# --------------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_file_round_trip_keeps_values_and_oblique_geometry(tmp_path, suffix):
    vol = make_volume((6, 7, 8), seed=1)
    path = write_volume(vol, tmp_path / f"vol{suffix}")
    assert path.is_file()
    back = read_volume(path)
    assert back.array.dtype == np.float32
    assert back.shape == (6, 7, 8)
    np.testing.assert_array_equal(back.array, vol.array)
    assert_same_geometry(back, vol)
    assert back.frames == ()
    assert not back.is_series


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_uncompressed_round_trip(tmp_path, suffix):
    vol = make_volume((3, 4, 5), seed=2)
    back = read_volume(write_volume(vol, tmp_path / f"raw{suffix}", compress=False))
    np.testing.assert_array_equal(back.array, vol.array)
    assert_same_geometry(back, vol)


def test_nii_gz_is_read_even_when_a_same_named_nii_lies_beside_it(tmp_path):
    # ITK's NIfTI library prefers x.nii when asked for x.nii.gz (ITK issue #2243): we must not.
    plain = make_volume((3, 4, 5), seed=3)
    packed = make_volume((3, 4, 5), seed=4)
    write_volume(plain, tmp_path / "x.nii")
    write_volume(packed, tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "x.nii.gz").array, packed.array)
    np.testing.assert_array_equal(read_volume(tmp_path / "x.nii").array, plain.array)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_series_round_trip_with_frames_sidecar(tmp_path, suffix):
    frames = [{"b_value": 0}, {"b_value": 500, "note": "x"}, {"b_value": 1000}]
    series = make_volume((3, 4, 5, 6), seed=5, frames=frames)
    assert series.is_series and series.spatial_shape == (4, 5, 6)
    path = write_volume(series, tmp_path / f"dwi{suffix}")
    side = sidecar_path(path)
    assert side == tmp_path / "dwi.json"
    assert json.loads(side.read_text())["frames"] == frames
    back = read_volume(path)
    assert back.is_series
    assert back.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(back.array, series.array)
    assert_same_geometry(back, series)
    assert [dict(f) for f in back.frames] == frames


def test_series_without_sidecar_gets_indexed_frames(tmp_path):
    series = make_volume((2, 3, 4, 5), seed=6)
    path = write_volume(series, tmp_path / "dce.nii.gz")
    sidecar_path(path).unlink()
    back = read_volume(path)
    assert [dict(f) for f in back.frames] == [{"index": 0}, {"index": 1}]


def test_a_dcm2niix_dwi_reads_with_its_bids_sidecar_and_bval_file(tmp_path):
    """dcm2niix writes a BIDS ``<name>.json`` (acquisition fields, no frames) beside every image and the
    b-values in ``<name>.bval``: the series reads, its frames carrying the b-values."""
    series = make_volume((3, 3, 4, 5), seed=8)
    path = write_volume(series, tmp_path / "sub-01_dwi.nii.gz")
    side = sidecar_path(path)
    side.write_text(json.dumps({"Manufacturer": "Siemens", "EchoTime": 0.089, "RepetitionTime": 5.2}))
    assert [dict(f) for f in read_volume(path).frames] == [{"index": 0}, {"index": 1}, {"index": 2}]
    (tmp_path / "sub-01_dwi.bval").write_text("0 800 1500\n")
    back = read_volume(path)
    assert [dict(f) for f in back.frames] == [{"b_value": 0.0}, {"b_value": 800.0}, {"b_value": 1500.0}]
    np.testing.assert_array_equal(back.array, series.array)
    (tmp_path / "sub-01_dwi.bval").write_text("0 800\n")
    with pytest.raises(InputError, match="2 b-values but the image has 3 frames"):
        read_volume(path)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_a_3d_volume_stored_with_a_fourth_axis_of_one_reads_as_3d(tmp_path, suffix):
    """As NIfTI's (x, y, z, 1) does: some converters write a 3D scan as a one-frame 4D image."""
    volume = make_volume(seed=9)
    image = sitk.JoinSeries(volume.to_sitk())  # (x, y, z) -> (x, y, z, 1), its geometry kept
    sitk.WriteImage(image, str(tmp_path / f"t1{suffix}"))
    back = read_volume(tmp_path / f"t1{suffix}")
    assert not back.is_series and back.shape == volume.shape
    np.testing.assert_array_equal(back.array, volume.array)
    assert geometry_differences(back, volume) == []


@pytest.mark.parametrize("name", ["T1CE.NII.GZ", "t1ce.Nii.gz", "t1ce.NII", "t1ce.MHA", "t1ce.Nrrd"])
def test_an_upper_or_mixed_case_suffix_is_written_and_read_under_that_name(tmp_path, name):
    """The name the user gave, whatever its case: ITK tells formats by lower-case suffixes only."""
    volume = make_volume(seed=10)
    path = write_volume(volume, tmp_path / name)
    assert path.name == name and os.listdir(tmp_path) == [name]  # nothing half-written left beside it
    np.testing.assert_array_equal(read_volume(path).array, volume.array)


@pytest.mark.parametrize("name", ["t1.nii.gz", "T1.NII.GZ"])
def test_an_uncompressed_nifti_named_nii_gz_is_read_and_left_as_it_is(tmp_path, name):
    """Some export tools name every NIfTI .nii.gz; nibabel refuses such a file as "not a gzip file"."""
    volume = make_volume(seed=12)
    plain = write_volume(volume, tmp_path / "plain.nii")
    misnamed = tmp_path / name
    plain.rename(misnamed)
    before = misnamed.read_bytes()
    back = read_volume(misnamed)
    np.testing.assert_array_equal(back.array, volume.array)
    assert geometry_differences(back, volume) == []
    assert misnamed.read_bytes() == before and os.listdir(tmp_path) == [name]


@pytest.mark.parametrize("suffix, data_suffix", [(".nhdr", ".raw.gz"), (".mhd", ".zraw")])
def test_a_detached_header_names_its_data_file_and_a_rewrite_leaves_no_orphan(tmp_path, suffix, data_suffix):
    volume = make_volume(seed=11)
    path = write_volume(volume, tmp_path / f"t1ce{suffix}")
    write_volume(volume, path)  # again, over the first
    assert sorted(os.listdir(tmp_path)) == sorted([f"t1ce{suffix}", f"t1ce{data_suffix}"])
    np.testing.assert_array_equal(read_volume(path).array, volume.array)
    with pytest.raises(InputError, match="lower case"):
        write_volume(volume, tmp_path / f"T1CE{suffix.upper()}")


@pytest.mark.parametrize("suffix, data_suffix", [(".nhdr", ".raw.gz"), (".mhd", ".zraw")])
def test_an_output_never_replaces_the_voxels_an_input_header_names(tmp_path, suffix, data_suffix):
    """An input header renamed after export (scan.mhd naming t1ce.zraw): writing t1ce.mhd would write
    t1ce.zraw, the input's voxels. Refused, and the input still reads as it was."""
    import shutil

    volume = make_volume(seed=12)
    written = write_volume(volume, tmp_path / f"t1ce{suffix}")
    scan = tmp_path / f"scan{suffix}"
    shutil.move(written, scan)  # the header renamed; it still names t1ce<data_suffix>
    from MRISynthesisLib.volume import detached_data_files
    assert detached_data_files(scan) == [tmp_path / f"t1ce{data_suffix}"]
    before = (tmp_path / f"t1ce{data_suffix}").read_bytes()
    with pytest.raises(InputError, match=f"t1ce{data_suffix}: output would overwrite an input file"):
        write_volume(make_volume(seed=13), tmp_path / f"t1ce{suffix}", protect=[scan])
    assert (tmp_path / f"t1ce{data_suffix}").read_bytes() == before and not (tmp_path / f"t1ce{suffix}").exists()
    np.testing.assert_array_equal(read_volume(scan).array, volume.array)


def test_a_slicer_sequence_saved_as_nrrd_reads_as_a_series_with_its_frame_times(tmp_path):
    """Slicer saves a sequence (a DCE loaded from DICOM, say) as a 4D NRRD whose first axis is a ``list``
    indexed in seconds; ITK reads it as one image of several components. Those are the frames, at
    0, 1.5 and 3 minutes, on the scan's grid."""
    data = np.random.default_rng(12).uniform(0, 1000, (5, 6, 7, 3)).astype(np.float32)  # (z, y, x, frame)
    (tmp_path / "dce.raw").write_bytes(data.tobytes())
    (tmp_path / "dce.seq.nhdr").write_text(
        "NRRD0004\ntype: float\ndimension: 4\nspace: left-posterior-superior\nsizes: 3 7 6 5\n"
        "space directions: none (0,1.5,0) (-2,0,0) (0,0,3)\nkinds: list domain domain domain\n"
        "endian: little\nencoding: raw\nspace origin: (10,20,30)\naxis 0 index type:=numeric\n"
        "axis 0 index values:=0 90 180\naxis 0 quantity:=time\naxis 0 unit:=s\ndata file: dce.raw\n")
    series = read_volume(tmp_path / "dce.seq.nhdr")
    assert series.is_series and series.shape == (3, 5, 6, 7)
    np.testing.assert_array_equal(series.array, np.moveaxis(data, -1, 0))
    assert [f["time_min"] for f in series.frames] == pytest.approx([0.0, 1.5, 3.0])
    assert series.spacing == (1.5, 2.0, 3.0) and series.origin == (10.0, 20.0, 30.0)
    np.testing.assert_allclose(np.reshape(series.direction, (3, 3)), [[0, -1, 0], [1, 0, 0], [0, 0, 1]])


def test_sidecar_with_wrong_frame_count_is_an_input_error(tmp_path):
    series = make_volume((2, 3, 4, 5), seed=7, frames=[{"t": 0}, {"t": 60}])
    path = write_volume(series, tmp_path / "dce.nrrd")
    side = sidecar_path(path)
    side.write_text(json.dumps({"frames": [{"t": 0}]}))
    with pytest.raises(InputError, match="1 frames but the image has 2") as err:
        read_volume(path)
    assert str(side) in str(err.value)
    side.write_text("{not json")
    with pytest.raises(InputError, match="not a valid frame sidecar"):
        read_volume(path)


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_nan_and_inf_voxels_survive_a_round_trip(tmp_path, suffix, compress):
    # ITK's NIfTI reader turns NaN/Inf into 0; read_volume must give back what the file holds
    array = make_volume(seed=20).array.copy()
    array[0, 0, 0] = np.nan
    array[1, 2, 3] = np.inf
    array[5, 6, 7] = -np.inf
    vol = Volume(array, SPACING, ORIGIN, OBLIQUE)
    back = read_volume(write_volume(vol, tmp_path / f"nan{suffix}", compress=compress))
    np.testing.assert_array_equal(back.array, array)  # NaN compares equal to NaN here
    assert np.isnan(back.array).sum() == 1 and np.isinf(back.array).sum() == 2
    assert back.array[5, 6, 7] == -np.inf
    with pytest.raises(InputError, match="contains 3 NaN/Inf voxel"):
        back.require_finite()


def test_nan_in_large_nifti_series_is_kept(tmp_path):
    # larger than the reader's 4 MiB chunks, 4D, NaN in the first and last voxels
    array = np.zeros((2, 10, 256, 256), np.float32)
    array[0, 5, 100, 100] = 1.0
    array[0, 0, 0, 0] = np.nan
    array[-1, -1, -1, -1] = np.inf
    series = Volume(array, SPACING, ORIGIN, OBLIQUE)
    back = read_volume(write_volume(series, tmp_path / "big.nii.gz"))
    np.testing.assert_array_equal(back.array, array)


def test_sidecar_path_strips_double_suffix():
    assert sidecar_path("/a/b/case-dwi.nii.gz") == Path("/a/b/case-dwi.json")
    assert sidecar_path("/a/b/case.nrrd") == Path("/a/b/case.json")


def test_sitk_round_trip_3d():
    vol = make_volume((6, 7, 8), seed=8)
    image = vol.to_sitk()
    assert image.GetDimension() == 3
    assert image.GetSize() == (8, 7, 6)
    assert image.GetSize() == vol.size_xyz
    np.testing.assert_allclose(image.GetSpacing(), SPACING, rtol=0, atol=1e-12)
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN, rtol=0, atol=1e-12)
    np.testing.assert_allclose(image.GetDirection(), OBLIQUE, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), vol.array)
    back = Volume.from_sitk(image)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.spacing == vol.spacing and back.origin == vol.origin
    np.testing.assert_allclose(back.direction, vol.direction, rtol=0, atol=1e-12)


def test_sitk_round_trip_4d_series():
    frames = [{"t": 0}, {"t": 60}, {"t": 120}]
    series = make_volume((3, 4, 5, 6), seed=9, frames=frames)
    image = series.to_sitk()
    assert image.GetDimension() == 4
    assert image.GetSize() == (6, 5, 4, 3)
    direction4 = np.reshape(image.GetDirection(), (4, 4))
    np.testing.assert_allclose(direction4[:3, :3], np.reshape(OBLIQUE, (3, 3)), atol=1e-12)
    back = Volume.from_sitk(image, frames)
    np.testing.assert_array_equal(back.array, series.array)
    assert_same_geometry(back, series, tol=1e-12)
    assert [dict(f) for f in back.frames] == frames
    np.testing.assert_array_equal(series.frame(1).array, series.array[1])


def test_from_sitk_rejects_2d_and_vector_images():
    with pytest.raises(InputError, match="2D"):
        Volume.from_sitk(sitk.Image(4, 5, sitk.sitkFloat32))
    with pytest.raises(InputError, match="components"):
        Volume.from_sitk(sitk.Image([4, 5, 6], sitk.sitkVectorFloat32, 3))


# --------------------------------------------------------------------- immutability and validation
def test_volume_array_is_read_only_float32_copy():
    source = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    original = source.copy()
    vol = Volume(source)
    assert vol.array.dtype == np.float32
    assert not vol.array.flags.writeable
    assert not np.shares_memory(vol.array, source)
    with pytest.raises(ValueError):
        vol.array[0, 0, 0] = 42.0
    source[...] = -1.0  # the caller changes their array afterwards
    np.testing.assert_array_equal(vol.array, original)
    with pytest.raises(dataclasses.FrozenInstanceError):
        vol.spacing = (2.0, 2.0, 2.0)  # type: ignore[misc]


def test_with_array_copies_and_frame_shares_the_immutable_series():
    vol = make_volume((3, 4, 5, 6), seed=10)
    frame = vol.frame(1)  # both read-only, so one buffer: a 300 MiB frame is not copied per model input
    assert np.shares_memory(frame.array, vol.array) and not frame.array.flags.writeable
    np.testing.assert_array_equal(frame.array, vol.array[1])
    assert (frame.spacing, frame.origin, frame.direction, frame.frames) == (vol.spacing, vol.origin, vol.direction, ())
    new = np.ones((4, 5, 6), np.float32)
    out = vol.with_array(new)
    new[...] = 7
    assert not out.is_series
    assert np.all(out.array == 1)
    assert not out.array.flags.writeable
    assert out.spacing == vol.spacing and out.direction == vol.direction
    with pytest.raises(InputError, match="does not fit"):
        vol.with_array(np.ones((4, 5, 7)))
    with pytest.raises(InputError, match="4D series"):
        vol.frame(0).frame(0)


@pytest.mark.parametrize("kwargs, message", [
    ({"array": np.zeros((4, 5))}, "2D"),
    ({"array": np.zeros((1, 2, 3, 4, 5))}, "5D"),
    ({"array": np.zeros((0, 4, 5))}, "empty"),
    ({"array": np.zeros((2, 3, 4)), "spacing": (1.0, 0.0, 1.0)}, "spacing"),
    ({"array": np.zeros((2, 3, 4)), "spacing": (1.0, 1.0)}, "3 values"),
    ({"array": np.zeros((2, 3, 4)), "direction": (2, 0, 0, 0, 1, 0, 0, 0, 1)}, "orthonormal"),
    ({"array": np.zeros((2, 3, 4)), "direction": (1, 0, 0, 1)}, "3x3"),
    ({"array": np.zeros((2, 3, 4)), "frames": [{"t": 0}]}, "4D series"),
    ({"array": np.zeros((2, 2, 3, 4)), "frames": [{"t": 0}]}, "2 frames"),
])
def test_invalid_volume_is_an_input_error(kwargs, message):
    with pytest.raises(InputError, match=message):
        Volume(**kwargs)


def test_require_checks_name_the_volume_and_the_problem():
    arr = np.ones((3, 4, 5), np.float32)
    arr[0, 0, 0] = np.nan
    arr[1, 1, 1] = np.inf
    arr[2, 2, 2] = -np.inf
    with pytest.raises(InputError, match=r"T1: contains 3 NaN/Inf voxel"):
        Volume(arr).require_finite("T1")
    with pytest.raises(InputError, match="T2: every voxel has the same value"):
        Volume(np.full((3, 4, 5), 5.0)).require_not_constant("T2")
    with pytest.raises(InputError, match="DWI: expected a 3D volume"):
        Volume(np.zeros((2, 3, 4, 5))).require_3d("DWI")
    ok = make_volume()
    assert ok.require_finite() is ok and ok.require_not_constant() is ok and ok.require_3d() is ok


# --------------------------------------------------------------------- geometry comparison
def _grid(**changes) -> Volume:
    params = {"shape": (6, 7, 8), "spacing": SPACING, "origin": ORIGIN, "direction": OBLIQUE}
    params.update(changes)
    shape = params.pop("shape")
    return make_volume(shape, seed=11, **params)


@pytest.mark.parametrize("changes, word", [
    ({"shape": (6, 7, 9)}, "size"),
    ({"spacing": (0.8, 1.1, 3.1)}, "spacing"),
    ({"origin": (ORIGIN[0] + 0.5, ORIGIN[1], ORIGIN[2])}, "origin"),
    ({"direction": tuple(rotation_matrix((1.0, 2.0, 3.0), 21.0).ravel())}, "direction"),
])
def test_geometry_differences_detect_each_kind(changes, word):
    a, b = _grid(), _grid(**changes)
    diffs = geometry_differences(a, b)
    assert len(diffs) == 1 and word in diffs[0]
    assert not same_geometry(a, b)
    with pytest.raises(InputError, match=word) as err:
        require_same_geometry({"T1 (a.nii.gz)": a, "T2 (b.nii.gz)": b})
    assert "T2 (b.nii.gz) is not on the grid of T1 (a.nii.gz)" in str(err.value)
    assert geometry_differences(b, a)[0] in str(err.value)  # T2's value first, as the sentence names it


def test_geometry_differences_accept_tiny_differences():
    a = _grid()
    d = rotation_matrix((1.0, 2.0, 3.0), 20.0 + 1e-6)
    b = _grid(spacing=tuple(s * (1 + 1e-6) for s in SPACING),
              origin=tuple(o + 1e-5 for o in ORIGIN), direction=tuple(d.ravel()))
    assert a.spacing != b.spacing and a.origin != b.origin and a.direction != b.direction
    assert geometry_differences(a, b) == []
    assert same_geometry(a, b)
    require_same_geometry({"a": a, "b": b, "c": a})
    require_same_geometry({})
    # the tolerances are honoured, not ignored
    assert geometry_differences(a, b, origin_tol_mm=1e-7) == [f"origin {a.origin} vs {b.origin}"]


def test_geometry_ignores_series_axis():
    series = make_volume((3, 6, 7, 8), seed=12)
    assert same_geometry(series, _grid())


def test_index_to_physical_matches_sitk(oblique_volume):
    image = oblique_volume.to_sitk()
    affine = oblique_volume.index_to_physical()
    assert affine.shape == (4, 4)
    np.testing.assert_array_equal(affine[3], [0, 0, 0, 1])
    for index in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (7, 6, 5), (3, 1, 4)]:
        expected = image.TransformIndexToPhysicalPoint(index)
        got = affine @ np.array([*index, 1.0])
        np.testing.assert_allclose(got[:3], expected, rtol=0, atol=1e-9)


# --------------------------------------------------------------------- read errors
def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("name, make, message", [
    ("missing.nii.gz", lambda p: None, "file not found"),
    ("folder.nii.gz", lambda p: p.mkdir(), "is a folder"),
    ("empty.nii.gz", lambda p: p.write_bytes(b""), "file is empty"),
    ("truncated.nii.gz", lambda p: _truncate(write_volume(make_volume(), p)), "corrupt or truncated"),
    ("truncated.nii", lambda p: _truncate(write_volume(make_volume(), p)), "corrupt or truncated"),
    ("truncated.nrrd", lambda p: _truncate(write_volume(make_volume(), p)), "corrupt or truncated"),
    ("truncated.mha", lambda p: _truncate(write_volume(make_volume(), p)), "corrupt or truncated"),
    ("notes.nii.gz", lambda p: p.write_text("these are my notes, not an image\n"), "cannot be read as an image"),
    ("gzipped-text.nii.gz", lambda p: __import__("gzip").open(p, "wb").write(b"hello " * 200),
     "cannot be read as an image"),
    ("notes.txt", lambda p: p.write_text("hello\n"), "unsupported file type"),
    ("image.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n"), "unsupported file type"),
])
def test_read_errors_name_the_file(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    before = sha256(path) if path.is_file() else None
    with pytest.raises(InputError) as err:
        read_volume(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    if before is not None:
        assert sha256(path) == before


def test_truncated_nifti_by_one_byte_is_detected(tmp_path):
    path = write_volume(make_volume(), tmp_path / "short.nii", compress=False)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_volume(path)


def test_2d_image_file_is_an_input_error(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((5, 6), np.float32)), str(path))
    with pytest.raises(InputError, match="2D") as err:
        read_volume(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------- write errors and safety
def test_write_refuses_to_overwrite_protected_input(tmp_path):
    source = write_volume(make_volume(seed=13), tmp_path / "t1.nii.gz")
    before = sha256(source)
    other = make_volume(seed=14)
    with pytest.raises(InputError, match="overwrite an input") as err:
        write_volume(other, source, protect=[source])
    assert str(source) in str(err.value)
    # the same file reached through another spelling of its path, or through a symbolic link
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="overwrite an input"):
        write_volume(other, tmp_path / "sub" / ".." / "t1.nii.gz", protect=[str(source)])
    (tmp_path / "link.nii.gz").symlink_to(source)
    with pytest.raises(InputError, match="overwrite an input"):
        write_volume(other, tmp_path / "link.nii.gz", protect=[source])
    assert sha256(source) == before
    # an output that is not protected may be replaced
    write_volume(other, tmp_path / "out.nii.gz", protect=[source])
    np.testing.assert_array_equal(read_volume(tmp_path / "out.nii.gz").array, other.array)


def test_write_into_missing_folder_is_an_input_error(tmp_path):
    target = tmp_path / "nowhere" / "out.nii.gz"
    with pytest.raises(InputError, match="output folder does not exist") as err:
        write_volume(make_volume(), target)
    assert str(target.parent) in str(err.value)
    assert not target.parent.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_unsupported_suffix_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="unsupported output type"):
        write_volume(make_volume(), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores folder permissions")
def test_write_into_unwritable_folder_leaves_no_file(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot be written"):
            write_volume(make_volume(), folder / "out.nii.gz")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_no_partial_file_and_keeps_old_output(tmp_path, monkeypatch, existing):
    target = tmp_path / "out.nii.gz"
    if existing:
        write_volume(make_volume(seed=15), target)
    before = {p.name: sha256(p) for p in tmp_path.iterdir()}

    def failing_write(image, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\x1f\x8b half an image")  # a writer dying half way (disk full, EIO)
        raise RuntimeError("ITK ERROR: NiftiImageIO: could not write\nNo space left on device")

    monkeypatch.setattr(volume_module.sitk, "WriteImage", failing_write)
    with pytest.raises(InputError, match="cannot be written: No space left on device") as err:
        write_volume(make_volume(seed=16), target)
    assert str(target) in str(err.value)
    assert {p.name: sha256(p) for p in tmp_path.iterdir()} == before


def test_write_returns_path_and_leaves_no_temporary_file(tmp_path):
    out = write_volume(make_volume(), tmp_path / "out.mha")
    assert out == tmp_path / "out.mha"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mha"]


def test_identity_default_geometry():
    vol = Volume(np.zeros((4, 5, 6)), spacing=(1.0, 1.0, 3.0))
    assert vol.shape == (4, 5, 6) and vol.size_xyz == (6, 5, 4)
    assert vol.direction == IDENTITY_DIRECTION and vol.origin == (0.0, 0.0, 0.0)


def _write_many(args):
    path, value = args
    from MRISynthesisLib.volume import Volume, write_volume
    for _ in range(4):
        write_volume(Volume(np.full((20, 30, 40), value, np.float32)), path)


def test_two_processes_writing_one_output_never_leave_a_corrupt_file(tmp_path):
    import multiprocessing

    path = tmp_path / "out.nii.gz"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_write_many, [(path, 1.0), (path, 2.0)])
    values = np.unique(read_volume(path).array)
    assert len(values) == 1 and values[0] in (1.0, 2.0)  # one writer's whole file, never a mixture
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]  # no temporary file left behind


def test_adopting_keeps_a_handed_over_buffer_and_copies_anything_else():
    fresh = np.arange(24, dtype=np.float32).reshape(2, 3, 4).copy()
    kept = Volume.adopting(fresh, (1.0, 2.0, 3.0))
    assert np.shares_memory(kept.array, fresh) and not kept.array.flags.writeable and kept.spacing == (1.0, 2.0, 3.0)
    base = np.arange(48, dtype=np.float32).reshape(2, 3, 8)
    for other in (base[:, :, ::2], np.arange(24.0).reshape(2, 3, 4), base.reshape(2, 3, 8)[:, :, :4]):
        copied = Volume.adopting(other)  # a view of someone's buffer, or not float32: copied as the constructor does
        assert not np.shares_memory(copied.array, other)
        np.testing.assert_array_equal(copied.array, other)


def test_a_report_is_named_after_the_whole_image_name():
    """Two outputs that differ after their first dot get two reports, never one shared file."""
    from MRISynthesisLib.volume import report_path

    assert report_path("out/t1ce.nii.gz") == Path("out/t1ce.report.json")
    assert report_path("case.t1ce.nii.gz") != report_path("case.flair.nii.gz")
    assert report_path("case.t1ce.nrrd").name == "case.t1ce.report.json"
    assert report_path("x.report.nii.gz") != sidecar_path("x.report.nii.gz")  # a series output's frames stay


@pytest.mark.parametrize("content, message", [
    ('{"frames": null}', "a list of objects"),
    ('{"frames": [1, 2]}', "a list of objects"),
    ('{"frames": [{"time_min": 0}, {"time_min": NaN}]}', "frame 1 has a non-finite time_min"),
])
def test_a_sidecar_with_the_wrong_types_is_an_input_error(tmp_path, content, message):
    path = write_volume(make_volume((2, 3, 4, 5), seed=7, frames=[{"t": 0}, {"t": 60}]), tmp_path / "dce.nii.gz")
    sidecar_path(path).write_text(content)
    with pytest.raises(InputError, match=message):
        read_volume(path)


def test_a_complex_image_is_refused_not_cut_to_its_real_part(tmp_path):
    import nibabel as nib

    data = (np.random.default_rng(0).normal(size=(6, 7, 8)) + 1j).astype(np.complex64)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "raw.nii.gz")
    with pytest.raises(InputError, match="complex values; give the magnitude") as refused:
        read_volume(tmp_path / "raw.nii.gz")
    assert "corrupt" not in str(refused.value)


def test_a_colour_nifti_or_one_with_an_infinite_intercept_is_refused_by_name(tmp_path):
    import nibabel as nib

    grey = np.random.default_rng(0).integers(0, 255, (6, 7, 8, 3), dtype=np.uint8)
    rgb = grey.view(np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])).reshape(6, 7, 8)
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii.gz")
    with pytest.raises(InputError, match="rgb.nii.gz: the image holds colour"):
        read_volume(tmp_path / "rgb.nii.gz")
    image = nib.Nifti1Image(np.arange(336, dtype=np.int16).reshape(6, 7, 8), np.eye(4))
    image.header["scl_slope"], image.header["scl_inter"] = 1, np.inf
    nib.save(image, tmp_path / "inf.nii.gz")
    with pytest.raises(InputError, match="inf.nii.gz: cannot be read as an image .*invalid intercept"):
        read_volume(tmp_path / "inf.nii.gz")


@pytest.mark.parametrize("sform_code, read_with", [(1, "sform"), (2, "qform")])
def test_a_nifti_whose_sform_and_qform_disagree_is_named_with_the_one_read(tmp_path, caplog, sform_code, read_with):
    """Tools choose differently between the two (ITK by their codes, nibabel and FSL the sform), so the same
    file lies in different places in each: the reader says so, and which one this package (and Slicer) took."""
    import logging

    import nibabel as nib

    sform = np.diag([2.0, 2.0, 3.0, 1.0])
    sform[:3, 3] = [-40.0, -40.0, -30.0]
    qform = sform.copy()
    qform[:3, 3] += [6.0, 0.0, 0.0]
    image = nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 10)).astype(np.float32), sform)
    image.set_sform(sform, code=sform_code)
    image.set_qform(qform, code=1)
    path = tmp_path / "forms.nii.gz"
    nib.save(image, str(path))
    with caplog.at_level(logging.WARNING, logger="MRISynthesisLib.volume"):
        volume = read_volume(path)
    [record] = caplog.records
    assert str(path) in record.message and "6.0 mm apart" in record.message
    assert f"read with its {read_with}" in record.message
    chosen = sform if read_with == "sform" else qform
    assert volume.origin == pytest.approx((-chosen[0, 3], -chosen[1, 3], chosen[2, 3]))  # RAS -> LPS
    caplog.clear()
    image.set_qform(sform, code=1)  # the two agree: nothing to say
    nib.save(image, str(path))
    with caplog.at_level(logging.WARNING, logger="MRISynthesisLib.volume"):
        read_volume(path)
    assert caplog.records == []


def test_a_label_map_is_written_as_16_bit_integers_and_fractions_are_refused(tmp_path):
    import SimpleITK as sitk

    labels = Volume(np.array([[[0, 1], [2, 4]], [[0, 0], [1, 3]]], np.float32), (1.0, 1.0, 2.0))
    path = write_volume(labels, tmp_path / "seg.nii.gz", labels=True)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt16
    np.testing.assert_array_equal(read_volume(path).array, labels.array)
    with pytest.raises(InputError, match="a label map holds whole numbers from 0 to 65535"):
        write_volume(labels.with_array(labels.array + 0.5), tmp_path / "half.nii.gz", labels=True)
    assert not (tmp_path / "half.nii.gz").exists()
