"""Property-based geometry tests on random oblique grids: every conversion places voxel (i, j, k) at one point.

The oracle is ITK's definition, written out here rather than taken from the code under test:
``LPS = origin + direction @ (spacing * (i, j, k))``, and Slicer's ``RAS = diag(-1, -1, 1) LPS``.
Grids are random: proper and improper rotations (oblique, or axis permutations as sagittal and coronal
acquisitions have), anisotropic spacings, far-off origins, thin (one-voxel) axes. Covered here and not
elsewhere: Volume <-> SimpleITK <-> ANTs <-> Slicer node in every order, node -> Volume -> node, nodes
under a parent transform, file round trips, and the geometry of resampling (lattice re-indexing inverts
exactly, affine intensities are reproduced at every interior point, the work grid keeps the field of
view's centre). Array-only inverses (crop/pad, normalisation) are the properties in test_preprocess.py.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slicer  # slicer-core: a real MRML scene and slicer.util, no application
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MRISynthesis"))

from MRISynthesisLib.errors import InputError  # noqa: E402
from MRISynthesisLib.pipeline import work_grid  # noqa: E402
from MRISynthesisLib.preprocess import resample_to  # noqa: E402
from MRISynthesisLib.registration import _ants, from_ants, to_ants  # noqa: E402
from MRISynthesisLib.volume import Volume, read_volume, write_volume  # noqa: E402
from MRISynthesisSlicerLib.nodes import node_from_volume, volume_from_node  # noqa: E402

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(SETTINGS, max_examples=15)  # the ones that write files or resample twice
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])


# --------------------------------------------------------------------- strategies
def _rotation(q, reflect: bool) -> np.ndarray:
    """The rotation of the quaternion ``q`` (not normalised), with its last column negated if ``reflect``."""
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    r = r @ np.diag([1.0, 1.0, -1.0 if reflect else 1.0])
    # components like 1e-306 (squares of hypothesis's tiny floats) are not what any header holds, and
    # ITK's matrix inverse turns them into NaN: read them as the exact zeros they stand for
    return np.where(np.abs(r) < 1e-12, 0.0, r)


def _signed_permutation(order, signs) -> np.ndarray:
    m = np.zeros((3, 3))
    m[list(order), [0, 1, 2]] = signs
    return m


unit = st.floats(-1.0, 1.0, allow_nan=False)
oblique = st.builds(_rotation, st.tuples(unit, unit, unit, unit).filter(lambda q: np.linalg.norm(q) > 0.1),
                    st.booleans())
permutations = st.builds(_signed_permutation, st.permutations([0, 1, 2]), st.tuples(*[st.sampled_from([-1.0, 1.0])] * 3))
directions = st.one_of(oblique, oblique, permutations)  # mostly oblique
spacings = st.tuples(*[st.floats(0.2, 6.0)] * 3)
origins = st.tuples(*[st.floats(-400.0, 400.0)] * 3)


@st.composite
def volumes(draw, min_size: int = 1, max_size: int = 5) -> Volume:
    """A small random Volume: random voxels (with negatives) on a random oblique anisotropic grid."""
    shape = draw(st.tuples(*[st.integers(min_size, max_size)] * 3))
    seed = draw(st.integers(0, 2**32 - 1))
    array = np.random.default_rng(seed).normal(0.0, 1000.0, shape).astype(np.float32)
    return Volume(array, draw(spacings), draw(origins), tuple(draw(directions).ravel()))


# --------------------------------------------------------------------- the oracle
def _indices(volume: Volume) -> np.ndarray:
    """Every voxel index (i, j, k) = (x, y, z), one per row, in the array's C order."""
    z, y, x = np.indices(volume.spatial_shape).reshape(3, -1)
    return np.stack([x, y, z], axis=1)


def _lps(volume: Volume, indices: np.ndarray) -> np.ndarray:
    """ITK's physical point of each index, from the definition."""
    d = np.reshape(volume.direction, (3, 3))
    return np.asarray(volume.origin) + (indices * np.asarray(volume.spacing)) @ d.T


def _node_ras(node, indices: np.ndarray) -> np.ndarray:
    """Where the node puts each voxel index in the scene's world RAS (parent transforms included)."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    ijk_to_ras = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    parent = node.GetParentTransformNode()
    if parent is not None:
        to_world = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = np.array([[to_world.GetElement(r, c) for c in range(4)] for r in range(4)]) @ ijk_to_ras
    return indices @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3]


def _tol(volume: Volume) -> float:
    """Millimetres of double rounding on this grid (far origins and big spacings cost digits)."""
    return 1e-9 * (1.0 + np.abs(volume.origin).max() + 10 * max(volume.spacing) * max(volume.spatial_shape))


def _f32_tol(volume: Volume) -> float:
    return 2e-7 * (1.0 + np.abs(_lps(volume, _indices(volume))).max())


def _assert_same_volume(back: Volume, volume: Volume) -> None:
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(_lps(back, _indices(back)), _lps(volume, _indices(volume)), rtol=0, atol=_tol(volume))
    np.testing.assert_allclose(back.direction, volume.direction, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-12)


@st.composite
def nodes_with_arrays(draw):
    """(scene, node, array): a scalar node set directly through MRML, with an arbitrary IJK-to-RAS matrix."""
    volume = draw(volumes())
    dtype = draw(st.sampled_from([np.float32, np.int16, np.uint8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    array = (rng.integers(info.min, info.max, volume.spatial_shape, endpoint=True).astype(dtype) if info
             else volume.array.copy())
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "acquired")
    slicer.util.updateVolumeFromArray(node, array)
    ras = np.eye(4)
    ras[:3, :3] = RAS_FROM_LPS @ np.reshape(volume.direction, (3, 3)) @ np.diag(volume.spacing)
    ras[:3, 3] = RAS_FROM_LPS @ np.asarray(volume.origin)
    node.SetIJKToRASMatrix(_vtk_matrix(ras))
    return scene, node, array


def _vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(matrix[r, c]))
    return m


def _ants_points(image, indices: np.ndarray) -> np.ndarray:
    """ANTs' own index-to-point mapping (it computes in float32: compare with :func:`_f32_tol`)."""
    return np.array([_ants().transform_index_to_physical_point(image, tuple(int(v) for v in ijk)) for ijk in indices])


# --------------------------------------------------------------------- ITK (LPS)
@SETTINGS
@given(volume=volumes())
def test_itk_image_places_every_voxel_where_the_definition_does(volume):
    image = volume.to_sitk()
    indices = _indices(volume)
    itk_points = np.array([image.TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk)) for ijk in indices])
    np.testing.assert_allclose(itk_points, _lps(volume, indices), rtol=0, atol=_tol(volume))
    affine = volume.index_to_physical()
    np.testing.assert_allclose(indices @ affine[:3, :3].T + affine[:3, 3], itk_points, rtol=0, atol=_tol(volume))
    values = sitk.GetArrayViewFromImage(image)
    for x, y, z in indices[:: max(1, len(indices) // 7)]:
        assert image.GetPixel(int(x), int(y), int(z)) == volume.array[z, y, x] == values[z, y, x]
    _assert_same_volume(Volume.from_sitk(image), volume)


@FEW
@given(volume=volumes(), suffix=st.sampled_from([".nrrd", ".mha", ".nii.gz"]))
def test_file_round_trip_keeps_voxels_and_their_points(volume, suffix):
    with tempfile.TemporaryDirectory() as folder:
        back = read_volume(write_volume(volume, Path(folder) / f"v{suffix}"))
    np.testing.assert_array_equal(back.array, volume.array)
    tol = 20 * _f32_tol(volume) if suffix == ".nii.gz" else _tol(volume)  # NIfTI keeps its geometry in float32
    np.testing.assert_allclose(_lps(back, _indices(back)), _lps(volume, _indices(volume)), rtol=0, atol=tol)


# --------------------------------------------------------------------- ANTs (LPS too)
@SETTINGS
@given(volume=volumes())
def test_ants_round_trip_and_points(volume):
    image = to_ants(volume)
    indices = _indices(volume)
    np.testing.assert_allclose(_ants_points(image, indices), _lps(volume, indices), rtol=0, atol=_f32_tol(volume))
    x, y, z = indices[-1]
    assert image.numpy()[x, y, z] == volume.array[z, y, x]  # ANTs indexes (x, y, z)
    _assert_same_volume(from_ants(image), volume)


@SETTINGS
@given(volume=volumes())
def test_itk_and_ants_convert_into_each_other(volume):
    ants = _ants()
    via_itk = from_ants(ants.from_sitk(volume.to_sitk()))  # Volume -> ITK -> ANTs -> Volume
    _assert_same_volume(via_itk, volume)
    via_ants = Volume.from_sitk(ants.to_sitk(to_ants(volume)))  # Volume -> ANTs -> ITK -> Volume
    _assert_same_volume(via_ants, volume)


# --------------------------------------------------------------------- Slicer (RAS)
@SETTINGS
@given(volume=volumes())
def test_node_puts_every_voxel_at_the_ras_point_of_its_lps_point(volume):
    scene = slicer.vtkMRMLScene()
    node = node_from_volume(scene, volume, "synthesized")
    indices = _indices(volume)
    np.testing.assert_allclose(_node_ras(node, indices), _lps(volume, indices) @ RAS_FROM_LPS.T, rtol=0,
                               atol=_tol(volume))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), volume.array)  # same (k, j, i) order
    _assert_same_volume(volume_from_node(node), volume)


@SETTINGS
@given(case=nodes_with_arrays())
def test_node_to_volume_to_node_keeps_voxels_and_points(case):
    scene, node, array = case
    before = (array.copy(), _node_ras(node, np.eye(4, 3)))
    volume = volume_from_node(node)
    back = node_from_volume(scene, volume, "back")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(back), array)  # exact, whatever the stored type
    indices = _indices(volume)
    np.testing.assert_allclose(_node_ras(back, indices), _node_ras(node, indices), rtol=0, atol=_tol(volume))
    np.testing.assert_allclose(_lps(volume, indices) @ RAS_FROM_LPS.T, _node_ras(node, indices), rtol=0,
                               atol=_tol(volume))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before[0])  # the input is untouched
    np.testing.assert_array_equal(_node_ras(node, np.eye(4, 3)), before[1])


@SETTINGS
@given(volume=volumes(), motion=oblique, shift=origins)
def test_node_under_a_linear_transform_gives_the_points_the_scene_shows(volume, motion, shift):
    """A user's manual alignment (a parent transform) is part of where the voxels are."""
    scene = slicer.vtkMRMLScene()
    node = node_from_volume(scene, volume, "moved by the user")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "manual alignment")
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = motion, shift
    transform.SetMatrixTransformToParent(_vtk_matrix(matrix))
    node.SetAndObserveTransformNodeID(transform.GetID())
    indices = _indices(volume)
    seen = _node_ras(node, indices)
    read = volume_from_node(node)
    np.testing.assert_array_equal(read.array, volume.array)
    np.testing.assert_allclose(_lps(read, indices) @ RAS_FROM_LPS.T, seen, rtol=0, atol=10 * _tol(volume))
    np.testing.assert_allclose(_node_ras(node_from_volume(scene, read, "result"), indices), seen, rtol=0,
                               atol=10 * _tol(volume))


@SETTINGS
@given(rotation=oblique, stretch=st.floats(1.05, 3.0), shear=st.floats(0.05, 1.0), kind=st.sampled_from(["scale", "shear"]))
def test_scaled_or_sheared_axes_are_refused_even_with_unit_determinant(rotation, stretch, shear, kind):
    """A direction with |det| = 1 need not be a rotation: ITK would place voxels on a skewed lattice."""
    bad = np.diag([stretch, 1 / stretch, 1.0]) if kind == "scale" else np.array([[1, shear, 0], [0, 1, 0], [0, 0, 1.0]])
    direction = rotation @ bad
    assert abs(abs(np.linalg.det(direction)) - 1) < 1e-9
    with pytest.raises(InputError, match="orthonormal"):
        Volume(np.zeros((2, 2, 2)), direction=tuple(direction.ravel()))


@SETTINGS
@given(volume=volumes(min_size=2), rotation=oblique, shear=st.floats(0.05, 1.0))
def test_node_under_a_shearing_transform_is_refused_by_name(volume, rotation, shear):
    scene = slicer.vtkMRMLScene()
    node = node_from_volume(scene, volume, "sheared")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shear")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.array([[1, shear, 0], [0, 1, 0], [0, 0, 1.0]]) @ rotation.T
    transform.SetMatrixTransformToParent(_vtk_matrix(matrix))
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="sheared: .*orthonormal"):  # not read as some other, rigid grid
        volume_from_node(node)


def test_node_under_a_non_linear_transform_is_refused_by_name():
    scene = slicer.vtkMRMLScene()
    node = node_from_volume(scene, Volume(np.ones((2, 2, 2))), "warped")
    node.SetAndObserveTransformNodeID(scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp").GetID())
    with pytest.raises(InputError, match="'warped' is under the non-linear transform 'warp'; harden it"):
        volume_from_node(node)


@SETTINGS
@given(volume=volumes())
def test_all_three_toolkits_agree_on_every_voxel(volume):
    indices = _indices(volume)
    lps = _lps(volume, indices)
    image = volume.to_sitk()
    node = node_from_volume(slicer.vtkMRMLScene(), volume, "n")
    points = {
        "itk": np.array([image.TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk)) for ijk in indices]),
        "ants (from itk)": _ants_points(_ants().from_sitk(image), indices),
        "ants (from node)": _ants_points(to_ants(volume_from_node(node)), indices),
        "slicer": _node_ras(node, indices) @ RAS_FROM_LPS.T,
    }
    for name, found in points.items():
        tol = _f32_tol(volume) if name.startswith("ants") else _tol(volume)
        np.testing.assert_allclose(found, lps, rtol=0, atol=tol, err_msg=name)


# --------------------------------------------------------------------- resampling
def _reindexed(volume: Volume, order, flips) -> tuple[Volume, np.ndarray]:
    """The same voxel lattice with its axes permuted and flipped, and the array it must then hold.

    New index n maps to old index o = M n + c (M a signed permutation); the physical point stays.
    """
    size = np.array(volume.size_xyz)
    m = _signed_permutation(order, [-1.0 if f else 1.0 for f in flips])  # column a: old axis of new axis a
    new_size = np.abs(m.T) @ size
    c = np.where(m.sum(axis=1) < 0, size - 1, 0)  # a flipped old axis counts down from its far end
    spacing = np.abs(m.T) @ np.asarray(volume.spacing)
    direction = np.reshape(volume.direction, (3, 3)) @ m
    origin = _lps(volume, c[None, :])[0]
    grid = Volume(np.zeros(tuple(int(s) for s in new_size[::-1])), tuple(spacing), tuple(origin), tuple(direction.ravel()))
    old = (_indices(grid) @ m.T + c).astype(int)  # old (x, y, z) of every new voxel
    expected = volume.array[old[:, 2], old[:, 1], old[:, 0]].reshape(grid.spatial_shape)
    return grid, expected


@SETTINGS
@given(volume=volumes(), order=st.permutations([0, 1, 2]), flips=st.tuples(st.booleans(), st.booleans(), st.booleans()))
def test_resampling_onto_a_reindexed_lattice_moves_voxels_exactly_and_inverts(volume, order, flips):
    grid, expected = _reindexed(volume, order, flips)
    nearest = resample_to(volume, grid, interpolation="nearest", default_value=np.nan)
    np.testing.assert_array_equal(nearest.array, expected)
    linear = resample_to(volume, grid, default_value=np.nan)
    np.testing.assert_allclose(linear.array, expected, rtol=1e-5, atol=1e-3)
    back = resample_to(nearest, volume, interpolation="nearest", default_value=np.nan)
    _assert_same_volume(back, volume)


@FEW
@given(source=volumes(min_size=2), target=st.tuples(spacings, directions, st.tuples(*[st.integers(1, 6)] * 3)),
       gradient=st.tuples(*[st.floats(-5.0, 5.0)] * 3), where=st.tuples(*[st.floats(0.0, 1.0)] * 3))
def test_linear_resampling_reproduces_an_affine_intensity_on_any_grid(source, target, gradient, where):
    """Linear interpolation is exact for intensities linear in position: any wrong axis or sign shows."""
    spacing, direction, size = target
    inside = _lps(source, (np.asarray(where) * (np.array(source.size_xyz) - 1))[None, :])[0]
    grid = Volume(np.zeros(size[::-1]), spacing, tuple(inside), tuple(direction.ravel()))
    source = source.with_array((_lps(source, _indices(source)) @ gradient).reshape(source.spatial_shape) + 100.0)
    out = resample_to(source, grid, default_value=-1e6).array.ravel()
    points = _lps(grid, _indices(grid))
    d = np.reshape(source.direction, (3, 3))
    continuous = ((points - np.asarray(source.origin)) @ d) / np.asarray(source.spacing)  # index in the source
    last = np.array(source.size_xyz) - 1
    interior = np.all((continuous > 1e-6) & (continuous < last - 1e-6), axis=1)
    outside = np.any((continuous < -0.5 - 1e-6) | (continuous > last + 0.5 + 1e-6), axis=1)
    expected = points @ gradient + 100.0
    np.testing.assert_allclose(out[interior], expected[interior], rtol=1e-5, atol=1e-2)
    assert np.all(out[outside] == -1e6)
    w = np.asarray(where)
    assert interior[0] or not np.all((w > 1e-3) & (w < 1 - 1e-3))  # the grid's first voxel is inside by design


@SETTINGS
@given(reference=volumes(min_size=2, max_size=12), voxel_mm=st.floats(0.5, 4.0))
def test_work_grid_keeps_the_field_of_view_centred_and_oriented(reference, voxel_mm):
    work = work_grid(reference, voxel_mm)
    centre = lambda v: _lps(v, ((np.array(v.size_xyz) - 1) / 2)[None, :])[0]  # noqa: E731
    np.testing.assert_allclose(centre(work), centre(reference), rtol=0, atol=1e-6 * (1 + np.abs(reference.origin).max()))
    np.testing.assert_allclose(work.direction, reference.direction, atol=1e-12)
    if work is not reference:
        assert work.spacing == (voxel_mm,) * 3
        extent = np.array(reference.size_xyz) * np.array(reference.spacing)
        size = np.array(work.size_xyz)
        # the field of view to the nearest voxel, or the smallest grid the models take
        assert np.all((np.abs(size * voxel_mm - extent) <= voxel_mm / 2 + 1e-9) | (size == 8))
