"""Weights loading and the synthesis pipeline, on a small untrained U-Net cT1 bundled into a temp folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import bundle_untrained, hash_files, slab_of
from MRISynthesisLib.cli import main
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.phantom.brain import sample_brain
from MRISynthesisLib.pipeline import synthesize
from MRISynthesisLib.volume import Volume, read_volume, write_volume
from MRISynthesisLib.weights import find, load_model, write_manifest

VOXEL = 4.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A models folder holding one fp16 U-Net cT1 (random weights) and its manifest."""
    folder = tmp_path_factory.mktemp("models")
    bundle_untrained(folder, "unet-ct1", voxel_size_mm=VOXEL)
    return folder


@pytest.fixture(scope="module")
def subject():
    return sample_brain(3, resolution=3.0, n_lesions=1)  # on another grid than the model's 4 mm


def test_weights_are_verified_before_loading(bundle, tmp_path):
    entry = find("unet-ct1", "T1ce", folder=bundle)
    model = load_model(entry, bundle)
    assert not model.training and next(model.parameters()).dtype == torch.float32
    with pytest.raises(InputError, match="no bundled weights for unet-ct1 -> T2"):
        find("unet-ct1", "T2", folder=bundle)
    broken = tmp_path / "models"
    broken.mkdir()
    data = (bundle / entry.file).read_bytes()
    (broken / entry.file).write_bytes(data[: len(data) // 2])
    write_manifest([entry], broken)
    with pytest.raises(InputError, match="does not match the manifest"):
        load_model(entry, broken)


def test_synthesize_puts_the_target_on_the_reference_grid(bundle, subject):
    inputs = {k: subject.sequences[k] for k in ("T1", "T2", "FLAIR")}
    before = {k: v.array.copy() for k, v in inputs.items()}
    fractions = []
    result = synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", real=subject.sequences["T1ce"],
                        progress=lambda f, m: fractions.append(f))
    t1 = subject.sequences["T1"]
    assert result.volume.spatial_shape == t1.spatial_shape and result.volume.spacing == t1.spacing
    assert np.isfinite(result.volume.array).all()
    assert set(result.registrations) == {"T2", "FLAIR", "real target"}
    assert result.provenance["weights_sha256"] == find("unet-ct1", folder=bundle).sha256
    assert "Research use only" in result.provenance["notice"]
    assert result.metrics is not None and "ssim" in result.metrics["metrics"]
    assert result.error_map.volume.spatial_shape == t1.spatial_shape
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    for k, v in inputs.items():
        np.testing.assert_array_equal(v.array, before[k])
    # outside the head the output is air
    assert (result.volume.array[0] == 0).mean() > 0.5


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("FLAIR"), "needs T1, T2, FLAIR; missing: FLAIR"),
    (lambda d: d.update(PD=d["T1"]), "does not take PD"),
])
def test_wrong_inputs_are_named(bundle, subject, change, message):
    inputs = {k: subject.sequences[k] for k in ("T1", "T2", "FLAIR")}
    change(inputs)
    with pytest.raises(InputError, match=message):
        synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu")


def test_nan_input_and_wrong_target(bundle, subject):
    inputs = {k: subject.sequences[k] for k in ("T1", "T2", "FLAIR")}
    with pytest.raises(InputError, match="no bundled weights for unet-ct1 -> FLAIR"):
        synthesize(inputs, "FLAIR", "unet-ct1", weights_folder=bundle, device="cpu")
    array = inputs["T2"].array.copy()
    array[2, 3, 4] = np.nan
    inputs["T2"] = inputs["T2"].with_array(array)
    with pytest.raises(InputError, match="T2: contains 1 NaN"):
        synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu")


def test_synthesize_command(bundle, subject, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(bundle))
    files = {}
    for name, suffix in (("T1", "t1n"), ("T2", "t2w"), ("FLAIR", "t2f"), ("T1ce", "t1c")):
        files[name] = write_volume(subject.sequences[name], tmp_path / f"case-{suffix}.nii.gz")
    before = hash_files(files.values())
    args = ["synthesize", "--model", "unet-ct1", "--input", f"T1={files['T1']}", f"T2={files['T2']}",
            f"FLAIR={files['FLAIR']}", "--target", "T1ce", "--device", "cpu", "--quiet"]
    out = tmp_path / "synth-t1c.nii.gz"
    assert main([*args, "--out", str(out), "--real", str(files["T1ce"]), "--error-map", str(tmp_path / "err.nii.gz")]) == 0
    assert read_volume(out).spatial_shape == subject.sequences["T1"].spatial_shape
    report = json.loads((tmp_path / "synth-t1c.report.json").read_text())
    assert report["provenance"]["model"] == "unet-ct1" and "ssim" in report["metrics"]["metrics"]
    # every moved volume's registration is recorded, the real target's too
    assert set(report["registrations"]) == {"T2", "FLAIR", "real target"}
    assert (tmp_path / "err.nii.gz").exists()
    capsys.readouterr()
    lines_args = [a for a in args if a != "--quiet"] + ["--progress-lines", "--out", str(tmp_path / "again.nii.gz")]
    assert main(lines_args) == 0
    progress = [line.split(" ", 2) for line in capsys.readouterr().out.splitlines() if line.startswith("PROGRESS ")]
    fractions = [float(p[1]) for p in progress]
    assert len(progress) > 3 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert main([*args, "--out", str(files["T2"])]) == 2  # an output equal to an input is refused
    assert "would overwrite an input" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "missing" / "x.nii.gz")]) == 2
    assert "output folder does not exist" in capsys.readouterr().err
    synthesized = out.read_bytes()
    # two outputs on one file: the error map would have replaced the synthesized volume
    assert main([*args, "--out", str(out), "--real", str(files["T1ce"]), "--error-map", str(out)]) == 2
    assert "--out and --error-map name the same file" in capsys.readouterr().err  # reported as the later one
    assert out.read_bytes() == synthesized
    assert hash_files(files.values()) == before


@pytest.fixture(scope="module")
def slice_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slice-models")
    bundle_untrained(folder, "seq2seq", voxel_size_mm=VOXEL)
    bundle_untrained(folder, "tc-mgan", voxel_size_mm=VOXEL, build_overrides={"levels": 4})
    bundle_untrained(folder, "important-net", voxel_size_mm=VOXEL)
    return folder


@pytest.mark.parametrize("model, given, target", [
    ("seq2seq", ("T1", "T2"), "T1ce"),       # any subset of the other sequences
    ("seq2seq", ("FLAIR",), "T1"),
    ("tc-mgan", ("T2",), "T1ce"),
    ("important-net", ("T1", "T1ce", "FLAIR"), "T2"),  # slices padded to multiples of 32
])
def test_slice_models_synthesize_on_the_reference_grid(slice_models, subject, model, given, target):
    inputs = {k: subject.sequences[k] for k in given}
    result = synthesize(inputs, target, model, reference=given[0], register="none", weights_folder=slice_models,
                        device="cpu")
    reference = subject.sequences[given[0]]
    assert result.volume.spatial_shape == reference.spatial_shape and np.isfinite(result.volume.array).all()
    assert result.volume.array.std() > 0


def test_any_to_any_model_input_rules(slice_models, subject):
    with pytest.raises(InputError, match="T1ce is both an input and the target"):
        synthesize({k: subject.sequences[k] for k in ("T1", "T1ce")}, "T1ce", "seq2seq", weights_folder=slice_models)
    with pytest.raises(InputError, match="does not take PD"):
        synthesize({"T1": subject.sequences["T1"], "PD": subject.sequences["T1"]}, "T2", "seq2seq",
                   weights_folder=slice_models)


@pytest.fixture(scope="module")
def breast_models(tmp_path_factory):
    """IMPORTANT-Net's brain and breast weights side by side, both making T2 (the breast one from 4D series)."""
    folder = tmp_path_factory.mktemp("breast-models")
    bundle_untrained(folder, "important-net", voxel_size_mm=VOXEL)
    bundle_untrained(folder, "important-net", voxel_size_mm=VOXEL, anatomy="breast", inputs=("T1", "DWI", "DCE"),
                     frames={"DWI": -1, "DCE": 1})
    return folder


@pytest.fixture(scope="module")
def breast():
    from MRISynthesisLib.phantom.breast import sample_breast
    return sample_breast(2, resolution=3.0)


def test_breast_series_are_reduced_to_the_frames_the_model_saw(breast_models, breast, monkeypatch):
    """DWI and DCE come as 4D series; the pipeline feeds the frames named in the manifest entry (DWI's
    last b-value, DCE's first post-contrast phase), picks the breast weights from the inputs alone, and
    leaves the caller's series untouched."""
    import MRISynthesisLib.pipeline as pipeline

    inputs = {k: breast.sequences[k] for k in ("T1", "DWI", "DCE")}
    before = {k: v.array.copy() for k, v in inputs.items()}
    seen = {}
    real_prepare = pipeline.prepare

    def spy(volumes, *args, **kwargs):
        seen.update(volumes)
        return real_prepare(volumes, *args, **kwargs)
    monkeypatch.setattr(pipeline, "prepare", spy)
    result = synthesize(inputs, "T2", "important-net", register="none", weights_folder=breast_models, device="cpu")
    assert np.array_equal(seen["DWI"].array, inputs["DWI"].array[-1])
    assert np.array_equal(seen["DCE"].array, inputs["DCE"].array[1])
    assert result.provenance["weights"] == "important-net-breast-lite.pt"
    assert result.volume.spatial_shape == inputs["T1"].spatial_shape and result.volume.array.std() > 0
    assert all(np.array_equal(before[k], inputs[k].array) for k in inputs)


def test_breast_series_without_the_needed_frame_is_refused(breast_models, breast):
    one_phase = breast.sequences["DCE"].with_array(breast.sequences["DCE"].array[:1],
                                                   frames=breast.sequences["DCE"].frames[:1])
    inputs = {"T1": breast.sequences["T1"], "DWI": breast.sequences["DWI"], "DCE": one_phase}
    with pytest.raises(InputError, match="DCE must be a 4D series"):
        synthesize(inputs, "T2", "important-net", register="none", weights_folder=breast_models, device="cpu")


def test_normalisation_mask_follows_the_weights_and_the_output_is_cut_at_the_body(breast):
    """Weights record the foreground they were normalised within; blanking always uses the body."""
    from MRISynthesisLib.pipeline import prepare

    inputs = {k: breast.sequences[k] for k in ("T1", "T2")}
    otsu = prepare(inputs, ("T1", "T2"), "T1", "none", 4.0, foreground="otsu")
    body = prepare(inputs, ("T1", "T2"), "T1", "none", 4.0, foreground="body")
    np.testing.assert_array_equal(otsu.body, body.mask)
    assert body.mask.sum() > 1.5 * otsu.mask.sum()  # Otsu loses the breasts
    assert not np.allclose(otsu.stacked, body.stacked)  # the statistics come from different voxels


def test_a_manifest_without_foreground_reads_as_otsu(tmp_path):
    """Manifests written before the field existed were all normalised within Otsu's mask."""
    from MRISynthesisLib.weights import read_manifest

    entry = {"file": "m.pt", "model": "unet-ct1", "config": "lite", "anatomy": "brain", "inputs": ["T1"],
             "targets": ["T1ce"], "normalization": "zscore", "voxel_size_mm": 2.0, "sha256": "0" * 64, "size_bytes": 1}
    (tmp_path / "manifest.json").write_text(json.dumps({"weights": [entry]}))
    assert read_manifest(tmp_path)[0].foreground == "otsu"
    (tmp_path / "manifest.json").write_text(json.dumps({"weights": [{**entry, "foreground": "body"}]}))
    assert read_manifest(tmp_path)[0].foreground == "body"


def test_a_prediction_of_background_inside_the_body_comes_out_as_zero_not_negative(breast):
    """Undoing the z-score of a background prediction (-1: z = -5) gives mean - 5 SD, negative for an MR
    image: the output is a magnitude, so those voxels are 0; the rest keeps the reference's scale."""
    from MRISynthesisLib.pipeline import finish, prepare

    prepared = prepare({k: breast.sequences[k] for k in ("T1", "T2")}, ("T1", "T2"), "T1", "none", 4.0,
                       foreground="body")
    assert prepared.scale.invert(np.full(1, -1.0))[0] < 0  # the case the clip exists for
    predicted = prepared.stacked[0].copy()  # T1 itself, normalised, then background over half the body
    half = predicted.shape[0] // 2
    predicted[:half] = -1.0
    raw = prepared.scale.invert(predicted)
    assert (raw[prepared.body] < 0).any()  # undone as it is, background inside the body is negative
    out = finish(prepared, predicted)  # on T1's own (anisotropic) grid
    assert out.array.min() == 0.0
    assert out.array.max() > 0.5 * raw.max()  # the anatomy keeps the reference's scale


def test_mirroring_is_an_option_the_provenance_records(bundle, subject):
    inputs = {k: subject.sequences[k] for k in ("T1", "T2", "FLAIR")}
    plain = synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none")
    mirrored = synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none", mirror=True)
    assert plain.provenance["test_time_mirroring"] is False and mirrored.provenance["test_time_mirroring"] is True
    assert mirrored.volume.spatial_shape == plain.volume.spatial_shape
    assert np.isfinite(mirrored.volume.array).all()
    assert not np.allclose(mirrored.volume.array, plain.volume.array)  # an untrained net is not mirror-symmetric


def test_inputs_already_z_scored_keep_their_negative_tissue(bundle, subject):
    """BraTS-style preprocessed inputs (foreground mean 0, SD 1, background 0) have negative intensities in
    tissue; clipping the result at zero would blank about half of the head."""
    from MRISynthesisLib.preprocess import foreground_mask

    def z_scored(volume):
        mask = foreground_mask(volume.array)
        values = volume.array[mask]
        return volume.with_array(np.where(mask, (volume.array - values.mean()) / values.std(), 0.0).astype(np.float32))

    inputs = {k: z_scored(subject.sequences[k]) for k in ("T1", "T2", "FLAIR")}
    result = synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none")
    head = foreground_mask(subject.sequences["T1"].array)
    inside = result.volume.array[head]
    assert (inside < 0).mean() > 0.1  # on the reference's scale, as the inputs are
    assert (inside == 0).mean() < 0.01
    assert inside.min() >= inputs["T1"].array.min() - 1e-4  # never below the reference's own floor
    raw = synthesize({k: subject.sequences[k] for k in ("T1", "T2", "FLAIR")}, "T1ce", "unet-ct1", weights_folder=bundle,
                     device="cpu", register="none")
    air = ~ndimage.binary_dilation(head, iterations=3)
    assert (result.volume.array[air] == 0).mean() == pytest.approx((raw.volume.array[air] == 0).mean(), abs=0.1)

    # z-scored over the whole image, air included: the air sits below 0, and the result's air with it
    whole = {k: subject.sequences[k].with_array(((subject.sequences[k].array - subject.sequences[k].array.mean())
                                                 / subject.sequences[k].array.std()).astype(np.float32))
             for k in ("T1", "T2", "FLAIR")}
    shifted = synthesize(whole, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none")
    far = ~ndimage.binary_dilation(head, iterations=6)
    from MRISynthesisLib.preprocess import air_level
    np.testing.assert_allclose(np.median(shifted.volume.array[far]), air_level(whole["T1"].array), atol=0.05)


@pytest.mark.parametrize("field, value", [("voxel_size_mm", "abc"), ("voxel_size_mm", 0), ("patch_size", [-5, 0]),
                                          ("inputs", []), ("series", {"DCE": 0}), ("size_bytes", 1.5),
                                          ("orientation", "RAX")])
def test_a_hand_edited_manifest_names_the_bad_field(bundle, tmp_path, field, value):
    import shutil

    folder = tmp_path / "models"
    shutil.copytree(bundle, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["weights"][0][field] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=f"manifest.json: entry .*: {field} must"):
        find("unet-ct1", "T1ce", folder=folder)


def test_a_weights_folder_without_a_manifest_says_so(bundle, tmp_path):
    import shutil

    folder = tmp_path / "models"
    shutil.copytree(bundle, folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(InputError, match="manifest.json does not exist"):
        find("unet-ct1", "T1ce", folder=folder)


def test_the_library_takes_sequence_aliases_as_the_command_line_does(bundle, subject):
    inputs = {"t1n": subject.sequences["T1"], "t2w": subject.sequences["T2"], "t2f": subject.sequences["FLAIR"]}
    result = synthesize(inputs, "t1c", "unet-ct1", weights_folder=bundle, device="cpu", register="none", reference="T1w")
    assert result.provenance["target"] == "T1ce" and result.provenance["reference"] == "T1"
    with pytest.raises(InputError, match="two volumes are given for T1"):
        synthesize({**inputs, "T1": subject.sequences["T1"]}, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu")


@pytest.mark.parametrize("orientation", ["PIR", "LPI", "SAR"])
def test_the_result_does_not_depend_on_how_the_inputs_are_stored(tmp_path, subject, orientation):
    """A sagittal, coronal or flipped storage of the same head: the models run on axial slices in the
    training orientation whatever the files' voxel order, so the synthesized head is the same."""
    import SimpleITK as sitk

    from MRISynthesisLib.volume import Volume

    bundle_untrained(tmp_path, "tc-mgan", voxel_size_mm=VOXEL, orientation="RAS")
    t2 = subject.sequences["T2"]
    stored = Volume.from_sitk(sitk.DICOMOrient(t2.to_sitk(), orientation))
    as_is = synthesize({"T2": t2}, "FLAIR", "tc-mgan", weights_folder=tmp_path, device="cpu", register="none")
    other = synthesize({"T2": stored}, "FLAIR", "tc-mgan", weights_folder=tmp_path, device="cpu", register="none")
    assert other.volume.spatial_shape == stored.spatial_shape  # the result is on the grid the file has
    back = Volume.from_sitk(sitk.DICOMOrient(other.volume.to_sitk(), "LPS")).array
    reference = Volume.from_sitk(sitk.DICOMOrient(as_is.volume.to_sitk(), "LPS")).array
    assert back.shape == reference.shape
    head = reference != 0
    assert np.abs(back - reference)[head].mean() < 0.01 * np.abs(reference[head]).mean()


def test_a_weights_folder_that_is_not_there_is_named(subject, tmp_path):
    with pytest.raises(InputError, match="nowhere: no such folder of weights"):
        synthesize({"T2": subject.sequences["T2"]}, "FLAIR", "tc-mgan", weights_folder=tmp_path / "nowhere")


def test_weights_trained_in_another_orientation_get_their_inputs_in_it(tmp_path, subject):
    """The breast phantom is stored LPS, the brain one RAS: each model's grid takes its own training
    orientation (the manifest's), and weights that record none run in the reference's own."""
    from MRISynthesisLib.pipeline import prepare, work_grid

    t2 = subject.sequences["T2"]  # stored RAS, as the brain phantom
    assert work_grid(t2, VOXEL, "RAS").direction == t2.direction
    lps = work_grid(t2, VOXEL, "LPS")
    np.testing.assert_allclose(lps.direction_matrix, np.eye(3))
    assert lps.spatial_shape == work_grid(t2, VOXEL, "RAS").spatial_shape
    assert work_grid(t2, VOXEL, None).direction == t2.direction
    t1 = subject.sequences["T1"]  # 3 mm isotropic: already a work grid in its own orientation
    assert work_grid(t1, 3.0, None) is t1 and work_grid(t1, 3.0, "RAS") is t1
    assert work_grid(t1, 3.0, "LPS") is not t1
    flipped = prepare({"T2": t2}, ("T2",), "T2", "none", VOXEL, orientation="LPS").stacked[0]
    kept = prepare({"T2": t2}, ("T2",), "T2", "none", VOXEL, orientation="RAS").stacked[0]
    np.testing.assert_allclose(flipped, kept[:, ::-1, ::-1], atol=1e-4)  # the same voxels, x and y reversed


def test_a_bare_array_is_refused_with_what_to_give_instead(bundle, subject):
    inputs = {"T1": subject.sequences["T1"].array, "T2": subject.sequences["T2"], "FLAIR": subject.sequences["FLAIR"]}
    with pytest.raises(InputError, match="T1: expected a Volume .* not ndarray"):
        synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu")


def test_the_work_grid_of_a_series_is_its_frames_grid(subject):
    from MRISynthesisLib.pipeline import work_grid
    from MRISynthesisLib.volume import Volume

    t1 = subject.sequences["T1"]
    series = Volume(np.stack([t1.array, t1.array]), t1.spacing, t1.origin, t1.direction)
    for voxel in (3.0, VOXEL):
        grid = work_grid(series, voxel, "RAS")
        assert not grid.is_series and grid.spatial_shape == work_grid(t1, voxel, "RAS").spatial_shape


def test_the_field_of_view_mark_counts_no_fill_as_data_even_on_its_edges(subject):
    """Which voxels of another grid hold data: never one the volume's own linear resampling fills (the worst
    case is a grid point exactly on the box's edge), and every one well inside the box."""
    from MRISynthesisLib.preprocess import coverage_on, field_of_view, resample_to
    from MRISynthesisLib.volume import Volume

    t1 = subject.sequences["T1"]
    slab = slab_of(t1, 7, t1.spatial_shape[0] - 5)
    assert max(field_of_view(slab).spatial_shape) <= 32
    covered = coverage_on(slab, t1)
    assert not covered[:7].any() and covered[7:-5].all() and not covered[-5:].any()
    ones = slab.with_array(np.ones(slab.shape, np.float32))
    fine = Volume(np.ones((10, 12, 12), np.float32), (1.0, 1.0, 1.0))  # box from -0.5 to 9.5 (11.5) mm
    for volume, shift in ((ones, 0.0), (ones, 0.37), (fine, 0.0), (fine, 0.5)):
        # a 2 mm grid whose points (for shift 0.5 with ``fine``) fall exactly on the box's edges
        size = [int(n * sp / 2.0) + 3 for n, sp in zip(volume.size_xyz, volume.spacing)][::-1]
        origin = np.asarray(volume.origin) - volume.direction_matrix @ np.full(3, 2.0 - shift)
        grid = Volume(np.zeros(size, np.float32), (2.0,) * 3, tuple(origin), volume.direction)
        mark = coverage_on(volume, grid)
        data = resample_to(volume, grid).array > 0.5
        assert mark.any() and not (mark & ~data).any()  # nothing counted as data where the resampler fills
        assert (data & ~mark).sum() <= max(size[1] * size[2], size[0] * size[2], size[0] * size[1])  # one face


def test_inputs_that_cover_the_whole_body_are_normalised_exactly_as_training_normalises_them(subject):
    """The coverage logic changes nothing for inputs covering the whole head: the mask and every input's
    normalisation are ``training.data.normalize_case``'s, the contract the weights were trained under."""
    from MRISynthesisLib.pipeline import prepare
    from MRISynthesisLib.training.data import aligned_sequences, normalize_case

    t1 = subject.sequences["T1"]
    aligned = aligned_sequences(subject, ("T1", "T2", "FLAIR"))
    inputs = {n: t1.with_array(v.array) for n, v in aligned.items()}  # on T1's grid, as files of that grid
    for scheme, foreground in (("zscore", "body"), ("percentile", "body"), ("zscore", "otsu")):
        prepared = prepare(inputs, ("T1", "T2", "FLAIR"), "T1", "none", t1.spacing[0], normalization=scheme,
                           foreground=foreground)
        assert prepared.work is inputs["T1"] and prepared.covered.all() and prepared.covered_share == 1.0
        case = normalize_case("c", dict(inputs), None, scheme, foreground=foreground)
        np.testing.assert_array_equal(prepared.mask, case.mask)
        for k, name in enumerate(("T1", "T2", "FLAIR")):
            np.testing.assert_array_equal(prepared.stacked[k], case.volumes[name])


def test_the_synthesis_does_not_depend_on_the_scale_an_input_was_stored_at(bundle, subject):
    """MR intensities have no unit: a T2 stored ten times brighter (another scanner's scaling, a rescale slope)
    is the same image, so the mask, each input's normalisation and the synthesis must not move (no
    registration here: ANTs' multithreaded sampling differs between runs by a few hundredths of a mm)."""
    inputs = {k: subject.sequences[k] for k in ("T1", "T2", "FLAIR")}
    plain = synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none")
    brighter = {**inputs, "T2": inputs["T2"].with_array(inputs["T2"].array * np.float32(10.0))}
    scaled = synthesize(brighter, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none")
    spread = float(np.ptp(plain.volume.array))
    np.testing.assert_allclose(scaled.volume.array, plain.volume.array, rtol=0, atol=1e-3 * spread)


def test_one_corrupt_voxel_changes_the_prepared_inputs_only_around_itself(subject):
    """A spike or a corrupt voxel far brighter than any tissue must not move the mask or any input's
    normalisation (it had tripled the SD and taken T1ce from 22.5 to 14.3 dB): away from it, every prepared
    input is what it is without it."""
    from MRISynthesisLib.pipeline import prepare

    inputs = {k: subject.sequences[k] for k in ("T1", "T2", "FLAIR")}
    t2 = inputs["T2"].array.copy()
    where = tuple(n // 2 for n in t2.shape)
    t2[where] = 1000 * np.percentile(t2, 99)
    corrupt = {**inputs, "T2": inputs["T2"].with_array(t2)}
    clean = prepare(inputs, ("T1", "T2", "FLAIR"), "T1", "none", VOXEL)
    spiked = prepare(corrupt, ("T1", "T2", "FLAIR"), "T1", "none", VOXEL)
    assert (clean.mask != spiked.mask).sum() <= 8  # at most the spike's own neighbourhood
    changed = np.abs(spiked.stacked - clean.stacked).max(axis=0) > 1e-5
    assert changed.sum() <= 27, f"{changed.sum()} voxels changed"


def test_inputs_taken_as_aligned_that_are_not_get_a_warning_naming_them(bundle, subject):
    """Registration 'none' trusts the user; inputs as acquired (moved by a few mm and degrees) are named in the
    warnings, the same inputs with their motion undone are not."""
    from MRISynthesisLib.training.data import aligned_sequences

    t1 = subject.sequences["T1"]
    acquired = {k: subject.sequences[k] for k in ("T1", "T2", "FLAIR")}
    result = synthesize(acquired, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none",
                        real=subject.sequences["T1ce"])
    named = [w.split(" does not look aligned")[0] for w in result.provenance["warnings"] if "does not look aligned" in w]
    assert named == ["T2", "FLAIR", "the real T1ce"], result.provenance["warnings"]
    assert "counts as synthesis error" in result.provenance["warnings"][-1]
    aligned = {n: t1.with_array(v.array) for n, v in aligned_sequences(subject, ("T1", "T2", "FLAIR")).items()}
    result = synthesize(aligned, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none")
    assert not [w for w in result.provenance["warnings"] if "aligned" in w]
    registered = synthesize(acquired, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu")
    assert not [w for w in registered.provenance["warnings"] if "aligned" in w]
    # a sequence placed 500 mm away is refused by the pipeline; no warning of a 500 mm misalignment before
    from MRISynthesisLib.pipeline import case_alignment_warnings

    far = Volume(t1.array, t1.spacing, tuple(np.asarray(t1.origin) + (0.0, 0.0, 500.0)), t1.direction)
    assert case_alignment_warnings({"T1": t1, "T2": far}) == []


def test_inputs_whose_fields_of_view_do_not_meet_are_refused_and_partial_overlaps_are_named(bundle, subject):
    from MRISynthesisLib.pipeline import coverage_warnings, prepare

    t2, flair = subject.sequences["T2"], subject.sequences["FLAIR"]
    n2, nf = t2.spatial_shape[0], flair.spatial_shape[0]
    apart = {"T1": subject.sequences["T1"], "T2": slab_of(t2, 0, n2 // 2 - 1), "FLAIR": slab_of(flair, nf // 2 + 1, nf)}
    with pytest.raises(InputError, match="fields of view of T2 and FLAIR share no part of the anatomy"):
        prepare(apart, ("T1", "T2", "FLAIR"), "T1", "none", VOXEL)
    overlapping = {**apart, "T2": slab_of(t2, 0, 2 * n2 // 3), "FLAIR": slab_of(flair, nf // 3, nf)}
    prepared = prepare(overlapping, ("T1", "T2", "FLAIR"), "T1", "none", VOXEL)
    assert prepared.covered_share < min(prepared.coverage["T2"], prepared.coverage["FLAIR"]) - 0.1
    lines = coverage_warnings(prepared)
    assert [line.split()[0] for line in lines] == ["T2", "FLAIR", "together"]
    assert f"{100 * prepared.covered_share:.0f} %" in lines[-1]


def test_a_slab_input_is_normalised_by_the_tissue_it_shows_and_the_output_is_blank_outside_it(bundle, subject):
    """A FLAIR covering the middle of the head: the zeros filled in around it are not tissue, so they do not
    pull its normalisation down, the result says how much it covers, and nothing is synthesized where it
    has no data (the network would draw something from zeros taken as tissue)."""
    from MRISynthesisLib.pipeline import prepare
    from MRISynthesisLib.preprocess import coverage_on

    t1, flair = subject.sequences["T1"], subject.sequences["FLAIR"]
    n = flair.spatial_shape[0]
    slab = slab_of(flair, n // 3, 2 * n // 3)
    inputs = {"T1": t1, "T2": subject.sequences["T2"], "FLAIR": slab}
    before = slab.array.copy()
    prepared = prepare(inputs, ("T1", "T2", "FLAIR"), "T1", "none", VOXEL)
    assert 0.2 < prepared.coverage["FLAIR"] < 0.7 and prepared.coverage["T1"] == 1.0
    inside = prepared.mask & prepared.covered
    flair_z = prepared.stacked[2]
    # z-scored by the tissue inside its slab: mean 0 there (the old statistics, zeros included, gave ~ +1)
    assert abs(float(flair_z[inside].mean())) < 0.1
    result = synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none",
                        real=subject.sequences["T1ce"])
    np.testing.assert_array_equal(slab.array, before)
    assert 0.2 < result.provenance["input_coverage"]["FLAIR"] < 0.7
    assert any(w.startswith("FLAIR covers") for w in result.provenance["warnings"])
    out = result.volume.array
    slab_on_t1 = coverage_on(slab, t1)
    near = ndimage.binary_dilation(slab_on_t1, iterations=2)  # the model's 4 mm voxels at the slab's edge
    assert (out[~near] == 0).all() and (out[slab_on_t1] > 0).mean() > 0.3
    # scored only where it was synthesized: fewer voxels than the whole head
    full = synthesize({**inputs, "FLAIR": flair}, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu",
                      register="none", real=subject.sequences["T1ce"])
    assert not [w for w in full.provenance["warnings"] if "cover" in w]
    assert full.provenance["input_coverage"]["FLAIR"] == 1.0
    assert result.metrics["n_voxels"] < 0.8 * full.metrics["n_voxels"]


def test_a_slab_real_target_is_scored_on_its_own_slab_of_tissue(subject):
    """Outside a slab real target there is no real image, only the resampler's zeros: counting them would call a
    perfect synthesis wrong, and the zeros would drag the tissue threshold down to count the slab's air."""
    from MRISynthesisLib.pipeline import compare_to_real
    from MRISynthesisLib.preprocess import coverage_on, foreground_mask

    t1ce = subject.sequences["T1ce"]
    n = t1ce.spatial_shape[0]
    slab = slab_of(t1ce, n // 3, 2 * n // 3)
    metrics, _, _ = compare_to_real(t1ce, slab, register="none")  # the synthesis is the real image itself
    volume = {name: m["volume"] for name, m in metrics["metrics"].items()}
    assert volume["nmse"] < 1e-4 and volume["ssim"] > 0.99, volume
    slab_tissue = foreground_mask(slab.array).sum()
    assert 0.9 * slab_tissue <= metrics["n_voxels"] <= 1.1 * slab_tissue
    # within a region given by the caller (where the inputs were), still only the slab's tissue counts
    region = np.zeros(t1ce.shape, bool)
    region[: n // 2] = True
    metrics, _, _ = compare_to_real(t1ce, slab, register="none", region=region)
    inside = coverage_on(slab, t1ce) & region
    assert metrics["n_voxels"] <= inside.sum() and metrics["metrics"]["ssim"]["volume"] > 0.99


def test_a_corrupt_voxel_in_the_real_target_is_named_in_the_warnings(bundle, subject):
    inputs = {k: subject.sequences[k] for k in ("T1", "T2", "FLAIR")}
    real = subject.sequences["T1ce"]
    spiked = real.array.copy()
    spiked[tuple(n // 2 for n in spiked.shape)] = 1000 * np.percentile(spiked, 99)
    result = synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none",
                        real=real.with_array(spiked), check_alignment=False)
    assert result.metrics["outliers_left_out"] == 1
    assert any(w.startswith("1 voxel of the real T1ce lies far outside") for w in result.provenance["warnings"])


@pytest.mark.parametrize("in_air", [False, True])
def test_a_corrupt_voxel_in_the_real_target_is_left_out_of_the_score(subject, in_air):
    """One voxel at 1000 times the real target's 99th percentile had set the data range: a 21 dB synthesis
    scored 47 dB (77 dB with the voxel negative, in the air)."""
    from MRISynthesisLib.pipeline import compare_to_real

    t1ce = subject.sequences["T1ce"]
    wobble = np.sin(np.arange(t1ce.array.size)).reshape(t1ce.shape)  # an imperfect synthesis
    synth = t1ce.with_array(np.clip(t1ce.array + 0.1 * np.ptp(t1ce.array) * wobble, 0, None).astype(np.float32))
    clean, _, _ = compare_to_real(synth, t1ce, register="none")
    spiked = t1ce.array.copy()
    spiked[(1, 1, 1) if in_air else tuple(n // 2 for n in spiked.shape)] = (-1 if in_air else 1) * 1000 * np.percentile(
        t1ce.array, 99)
    scored, _, _ = compare_to_real(synth, t1ce.with_array(spiked), register="none")
    assert scored["outliers_left_out"] == 1 and clean["outliers_left_out"] == 0
    assert scored["data_range"] == pytest.approx(clean["data_range"], rel=0.01)
    for name in ("psnr", "ssim", "nmse"):
        assert scored["metrics"][name]["volume"] == pytest.approx(clean["metrics"][name]["volume"], rel=0.01), name


def test_a_real_target_that_barely_meets_the_output_is_refused_by_name(subject):
    from MRISynthesisLib.pipeline import compare_to_real

    t1ce = subject.sequences["T1ce"]
    n = t1ce.spatial_shape[0]
    edge = slab_of(t1ce, n - 2, n)  # two slices above the head: air, and a few voxels the threshold takes
    with pytest.raises(InputError, match=r"only \d+ voxels of the real target's tissue lie where the output was"):
        compare_to_real(t1ce, edge, register="none")


def test_an_input_whose_field_of_view_misses_the_anatomy_is_named(bundle, subject):
    from MRISynthesisLib.pipeline import prepare

    from MRISynthesisLib.volume import Volume

    flair = subject.sequences["FLAIR"]
    corner = Volume(flair.array[:, :3, :3].copy(), flair.spacing, flair.origin, flair.direction)  # air only
    assert np.ptp(corner.array) > 0  # noise: it does overlap the grid, only not the head
    inputs = {"T1": subject.sequences["T1"], "T2": subject.sequences["T2"], "FLAIR": corner}
    with pytest.raises(InputError, match="FLAIR covers none of the tissue"):
        prepare(inputs, ("T1", "T2", "FLAIR"), "T1", "none", VOXEL)


def test_the_command_says_when_an_input_leaves_part_of_the_head_without_data(bundle, subject, tmp_path,
                                                                              monkeypatch, capsys):
    monkeypatch.setenv("MRISYNTHESIS_MODELS_DIR", str(bundle))
    n = subject.sequences["FLAIR"].spatial_shape[0]
    files = {"T1": write_volume(subject.sequences["T1"], tmp_path / "t1.nii.gz"),
             "T2": write_volume(subject.sequences["T2"], tmp_path / "t2.nii.gz"),
             "FLAIR": write_volume(slab_of(subject.sequences["FLAIR"], n // 4, 3 * n // 4), tmp_path / "flair.nii.gz")}
    assert main(["synthesize", "--model", "unet-ct1", "--input", *(f"{k}={v}" for k, v in files.items()),
                 "--target", "T1ce", "--register", "none", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "t1ce.nii.gz")]) == 0
    printed = capsys.readouterr().out
    assert "warning: FLAIR covers" in printed and "blank where an input has no data" in printed
    report = json.loads((tmp_path / "t1ce.report.json").read_text())
    assert report["provenance"]["input_coverage"]["T2"] == 1.0 and report["provenance"]["warnings"]


def test_one_image_given_for_two_sequences_or_as_the_real_target_is_refused(bundle, subject, tmp_path, capsys):
    """T1=a T2=a (or a copy of a), or the T1 input given as the real T1ce: the model would be fed, or scored
    against, something other than what it is told. Refused by name, by the library and the commands alike."""
    t1 = subject.sequences["T1"]
    inputs = {"T1": t1, "T2": t1.with_array(t1.array.copy()), "FLAIR": subject.sequences["FLAIR"]}
    with pytest.raises(InputError, match="T1 and T2 are the same image"):
        synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none")
    inputs = {k: subject.sequences[k] for k in ("T1", "T2", "FLAIR")}
    with pytest.raises(InputError, match="T1 and real T1ce are the same image"):
        synthesize(inputs, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none", real=t1)
    a, copy = tmp_path / "a.nii.gz", tmp_path / "copy.nii.gz"
    write_volume(t1, a)
    write_volume(t1, copy)
    assert main(["check", "--input", f"T1={a}", f"T2={copy}"]) == 2
    assert f"T1 ({a}) and T2 ({copy}) are the same image" in capsys.readouterr().err
    assert main(["check", "--input", f"T1={a}", f"T2={a}"]) == 2


def test_a_copy_resaved_as_integers_is_the_same_image_and_two_acquisitions_are_not(subject):
    """A T2 re-saved as int16 (rounded by up to 0.5) and given as FLAIR is still one image; two acquisitions
    differ by their noise alone, even two of one sequence (the phantom's T1 and T1ce share its protocol)."""
    from MRISynthesisLib.inputs import same_images

    t2 = subject.sequences["T2"]
    rounded = t2.with_array(np.round(t2.array).astype(np.int16).astype(np.float32))
    assert same_images({"T2": t2, "FLAIR": rounded}) == [("T2", "FLAIR")]
    from MRISynthesisLib.training.data import aligned_sequences

    aligned = aligned_sequences(subject, ("T1", "T1ce"))
    t1 = subject.sequences["T1"]
    assert same_images({"T1": t1, "T1ce": t1.with_array(aligned["T1ce"].array)}) == []
    noisy = t2.with_array(t2.array + np.random.default_rng(0).normal(0, 0.02 * np.percentile(t2.array, 99), t2.shape))
    assert same_images({"T2": t2, "repeat": noisy.with_array(noisy.array.astype(np.float32))}) == []


def test_an_input_whose_header_mirrors_it_is_named_registered_or_not(bundle, subject):
    """No registration undoes a flipped axis and the alignment check does not see one (it moves little and
    gains little); flipped back, the input matches the reference far better. Aligned inputs get no warning."""
    from MRISynthesisLib.pipeline import mirror_warnings, prepare
    from MRISynthesisLib.training.data import aligned_sequences

    t1 = subject.sequences["T1"]
    aligned = {n: t1.with_array(v.array) for n, v in aligned_sequences(subject, ("T1", "T2", "FLAIR")).items()}
    order = ("T1", "T2", "FLAIR")
    assert mirror_warnings(prepare(aligned, order, "T1", "none", VOXEL)) == []
    for axis, named in ((0, "head-foot"), (1, "front-back"), (2, "left-right")):
        flipped = {**aligned, "T2": aligned["T2"].with_array(np.flip(aligned["T2"].array, axis).copy())}
        lines = mirror_warnings(prepare(flipped, order, "T1", "none", VOXEL))
        assert len(lines) == 1 and lines[0].startswith(f"T2 looks mirrored {named} against T1"), (axis, lines)
    flipped = {**aligned, "FLAIR": aligned["FLAIR"].with_array(np.flip(aligned["FLAIR"].array, 1).copy())}
    result = synthesize(flipped, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="rigid")
    assert [w.split(" looks")[0] for w in result.provenance["warnings"] if "mirrored" in w] == ["FLAIR"]
    # batch and compare check alignment once per case (check_alignment=False); mirroring still per synthesis
    result = synthesize(flipped, "T1ce", "unet-ct1", weights_folder=bundle, device="cpu", register="none",
                        check_alignment=False)
    assert [w.split(" looks")[0] for w in result.provenance["warnings"] if "mirrored" in w] == ["FLAIR"]
