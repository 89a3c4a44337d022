"""Physical sanity of the phantom, asserted on generated subjects (small grids: 3 mm brain, 2.5 mm breast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.phantom import sample
from MRISynthesisLib.phantom.brain import sample_brain
from MRISynthesisLib.phantom.breast import sample_breast
from MRISynthesisLib.preprocess import resample_to

CLEAN = dict(snr=None, bias_field=False, misalign=False, native_grids=False)


def _mean(volume, mask) -> float:
    assert mask.any(), "the mask selects no voxel: the subject lacks the tissue the test needs"
    return float(volume.array[mask].mean())


@pytest.fixture(scope="module", params=[(11, 1.5), (12, 3.0), (13, 1.5), (14, 3.0)],
                ids=lambda p: f"seed{p[0]}-{p[1]}T")
def brain(request):
    seed, field = request.param
    return sample_brain(seed, resolution=2.0, n_lesions=2, field_strength=field, **CLEAN)


def test_brain_subjects_cover_both_t1_protocols():
    kinds = {sample_brain(s, resolution=6, n_lesions=0, **CLEAN).info["protocol"]["T1"]["kind"] for s in range(11, 15)}
    assert kinds == {"spoiled_gradient_echo", "spin_echo"}


def test_brain_tissue_contrast_orders(brain):
    f = {k: brain.fractions[k].array for k in ("gm", "wm", "csf")}
    pure = {k: v > (0.95 if k == "csf" else 0.7) for k, v in f.items()}
    pure["csf"] &= brain.fractions["choroid"].array < 0.005  # choroid plexus is bright on FLAIR
    t1, t2, flair = (brain.sequences[k] for k in ("T1", "T2", "FLAIR"))
    assert _mean(t1, pure["wm"]) > _mean(t1, pure["gm"]) > _mean(t1, pure["csf"])
    assert _mean(t2, pure["csf"]) > _mean(t2, pure["gm"]) > _mean(t2, pure["wm"])
    assert _mean(flair, pure["csf"]) < 0.10 * _mean(flair, pure["gm"])


def test_t1ce_exceeds_t1_only_where_contrast_agent_is(brain):
    t1, t1ce = brain.sequences["T1"].array, brain.sequences["T1ce"].array
    conc = brain.concentration.array
    np.testing.assert_allclose(t1ce[conc == 0], t1[conc == 0], rtol=1e-5)
    assert (t1ce[conc > 0.02] > t1[conc > 0.02]).all()


def test_tumour_compartments(brain):
    labels = brain.labels.array
    t1, t1ce, flair = (brain.sequences[k] for k in ("T1", "T1ce", "FLAIR"))
    enhancing = _mean(t1ce, labels == 3)
    assert enhancing > _mean(t1ce, labels == 2)
    if (labels == 1).any():
        assert enhancing > _mean(t1ce, labels == 1)
    # necrosis takes up no contrast agent: what little its label gains comes from partial volume
    assert "necrosis" not in brain.info["contrast"]["concentration_mM"]
    def enhancement(mask):
        return (_mean(t1ce, mask) - _mean(t1, mask)) / _mean(t1, mask)
    if (labels == 1).any():
        assert enhancement(labels == 1) < 0.5 * enhancement(labels == 3)
    wm = brain.fractions["wm"].array > 0.7
    gm = brain.fractions["gm"].array > 0.7
    assert _mean(flair, labels == 2) > 1.3 * max(_mean(flair, wm), _mean(flair, gm))


def test_some_subject_has_a_necrotic_core():
    # over a few seeds necrosis appears and is labelled 1 (the compartment test above then checks it)
    found = any((sample_brain(s, resolution=2.5, n_lesions=1, **CLEAN).labels.array == 1).any() for s in range(30, 36))
    assert found


def test_no_voxelwise_linear_map_solves_the_phantom(brain):
    """The best least-squares linear map from the other sequences leaves large errors where it matters."""
    seq = brain.sequences
    brain_mask = (brain.fractions["gm"].array + brain.fractions["wm"].array + brain.fractions["csf"].array) > 0.5
    lesion = brain.labels.array > 0
    for target, sources in (("FLAIR", ("T1", "T2", "PD")), ("T1ce", ("T1", "T2", "FLAIR", "PD"))):
        def design(mask):
            return np.stack([seq[s].array[mask] for s in sources] + [np.ones(int(mask.sum()))], -1).astype(np.float64)
        y = seq[target].array[brain_mask].astype(np.float64)
        coef, *_ = np.linalg.lstsq(design(brain_mask), y, rcond=None)
        r2 = 1 - (y - design(brain_mask) @ coef).var() / y.var()
        y_lesion = seq[target].array[lesion].astype(np.float64)
        lesion_error = np.abs(design(lesion) @ coef - y_lesion).mean() / y_lesion.mean()
        assert r2 < 0.96, f"{target} is {r2:.3f} linear in {sources}"
        assert lesion_error > 0.1, f"{target} in lesions is predicted within {lesion_error:.1%} by a linear map"


def test_same_seed_same_subject_and_different_seeds_differ():
    a = sample("brain", 5, resolution=4)
    b = sample("brain", 5, resolution=4)
    c = sample("brain", 6, resolution=4)
    for name in a.sequences:
        np.testing.assert_array_equal(a.sequences[name].array, b.sequences[name].array)
    gm_a, gm_c = a.fractions["gm"].array, c.fractions["gm"].array
    assert np.abs(gm_a - gm_c).mean() > 0.02
    assert a.info["deformation"] != c.info["deformation"]


def test_options_switch_one_effect_and_keep_the_rest():
    noisy = sample_brain(8, resolution=4, n_lesions=1, bias_field=False, misalign=False, native_grids=False)
    clean = sample_brain(8, resolution=4, n_lesions=1, **CLEAN)
    np.testing.assert_array_equal(noisy.labels.array, clean.labels.array)
    diff = noisy.sequences["T2"].array - clean.sequences["T2"].array
    sigma = noisy.info["acquisition"]["T2"]["noise_sigma"]
    background = clean.sequences["T2"].array == 0
    # Rician noise in air has mean sigma * sqrt(pi / 2)
    assert abs(float(diff[background].mean()) / (sigma * np.sqrt(np.pi / 2)) - 1) < 0.1


def _matrix_to_sitk(matrix) -> sitk.AffineTransform:
    m = np.asarray(matrix)
    t = sitk.AffineTransform(3)
    t.SetMatrix(tuple(m[:3, :3].ravel()))
    t.SetTranslation(tuple(m[:3, 3]))
    return t


def test_recorded_misalignment_equals_what_is_applied():
    options = dict(resolution=3, n_lesions=1, snr=None, bias_field=False, native_grids=False)
    moved = sample_brain(21, misalign=True, **options)
    still = sample_brain(21, misalign=False, **options)
    reference = still.sequences["T1"]
    mask = (still.fractions["gm"].array + still.fractions["wm"].array) > 0.5
    for name in ("T2", "FLAIR", "T1ce"):
        angles = moved.info["acquisition"][name]["motion"]["angles_deg"]
        assert max(abs(a) for a in angles) <= 5.0
        recorded = moved.transforms[name]
        truth = still.sequences[name].array[mask]

        def error(matrix) -> float:
            undone = resample_to(moved.sequences[name], reference, transform=_matrix_to_sitk(matrix))
            return float(np.abs(undone.array[mask] - truth).mean())

        shifted = recorded.copy()
        shifted[:3, 3] += 1.5  # 1.5 mm off along each axis
        assert error(recorded) < 0.08 * truth.mean(), name
        assert error(recorded) < 0.7 * error(shifted), name
        assert error(recorded) < 0.7 * error(np.eye(4)), name
    np.testing.assert_allclose(moved.transforms["T1"], np.eye(4), atol=1e-9)


def test_native_grids_have_thick_slices():
    subject = sample_brain(3, resolution=3)
    assert subject.sequences["T1"].spacing == (3.0, 3.0, 3.0)
    for name in ("T2", "FLAIR", "PD"):
        assert 3.0 <= subject.sequences[name].spacing[2] <= 5.5
        assert subject.sequences[name].spatial_shape[0] < subject.sequences["T1"].spatial_shape[0]


@pytest.mark.parametrize("bad, match", [
    (dict(snr=-5), "snr"), (dict(snr=0), "snr"), (dict(n_lesions=4), "n_lesions"),
    (dict(resolution=0.1), "resolution"), (dict(field_strength=7.0), "field_strength"),
    (dict(sequences=("T1", "DWI")), "DWI"),
])
def test_bad_brain_options(bad, match):
    with pytest.raises(InputError, match=match):
        sample_brain(0, **bad)


def test_unknown_anatomy():
    with pytest.raises(InputError, match="unknown anatomy 'knee'"):
        sample("knee", 0)


# --------------------------------------------------------------------- breast
def _lesion_curve(subject, label: int) -> np.ndarray:
    mask = subject.labels.array == label
    assert mask.any()
    return np.array([subject.sequences["DCE"].array[i][mask].mean() for i in range(subject.sequences["DCE"].shape[0])])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_breast_kinetics_by_class(seed):
    malignant = sample_breast(seed, lesion_class="malignant", n_cysts=0, resolution=2.5, **CLEAN)
    benign = sample_breast(seed, lesion_class="benign", n_cysts=0, resolution=2.5, **CLEAN)
    curve_m, curve_b = _lesion_curve(malignant, 2), _lesion_curve(benign, 1)
    peak = int(np.argmax(curve_m))
    assert 0 < peak < len(curve_m) - 1, "malignant curve peaks before the last phase"
    assert curve_m[-1] < 0.95 * curve_m[peak], "malignant lesion washes out"
    assert curve_b[-1] >= 0.97 * curve_b.max(), "benign lesion keeps rising or plateaus"
    assert curve_b[-1] > 1.1 * curve_b[0], "benign lesion enhances"
    adc_m = _mean(malignant.sequences["ADC"], malignant.labels.array == 2)
    adc_b = _mean(benign.sequences["ADC"], benign.labels.array == 1)
    assert adc_m < adc_b


def test_breast_cysts_bright_on_t2_and_do_not_enhance():
    subject = sample_breast(4, lesion_class="healthy", n_cysts=2, resolution=2.5, **CLEAN)
    cyst = subject.labels.array == 3
    t2 = subject.sequences["T2"]
    assert _mean(t2, cyst) > 1.5 * _mean(t2, subject.fractions["fgt"].array > 0.8)
    assert _mean(t2, cyst) > 1.5 * _mean(t2, subject.fractions["fat"].array > 0.8)
    core = subject.fractions["cyst"].array > 0.97
    dce = subject.sequences["DCE"].array
    assert all(c == 0 for c in subject.info["concentration_mM"]["cyst"])
    np.testing.assert_allclose(dce[-1][core], dce[0][core], rtol=0.03)  # partial volume with FGT only
    assert subject.info["lesion_class"] == "healthy"
    assert not np.isin(subject.labels.array, [1, 2]).any()


def test_breast_series_metadata_and_grids():
    subject = sample_breast(5, resolution=2.5, n_post=4)
    dce, dwi = subject.sequences["DCE"], subject.sequences["DWI"]
    assert dce.shape[0] == 5 and [f["time_min"] for f in dce.frames][0] == 0.0
    assert [f["b_value"] for f in dwi.frames] == [0.0, 800.0]
    assert dwi.spacing[0] == 2 * subject.sequences["T1"].spacing[0]
    assert subject.sequences["ADC"].spatial_shape == dwi.spatial_shape
    json.dumps(subject.truth_json())  # everything in the truth is JSON-ready


@pytest.mark.parametrize("bad, match", [(dict(lesion_class="cancer"), "lesion class"), (dict(n_post=7), "n_post"),
                                        (dict(snr=-1), "snr"), (dict(n_cysts=5), "n_cysts")])
def test_bad_breast_options(bad, match):
    with pytest.raises(InputError, match=match):
        sample_breast(0, **bad)


@pytest.mark.parametrize("anatomy", ["brain", "breast"])
def test_the_recorded_phantom_orientation_is_the_one_its_subjects_have(anatomy):
    """Exported weights record it as their training orientation (``WeightsEntry.orientation``)."""
    from MRISynthesisLib.phantom import ORIENTATIONS, sample
    from MRISynthesisLib.pipeline import direction_of

    subject = sample(anatomy, 3, resolution=4.0)
    for volume in subject.sequences.values():
        np.testing.assert_allclose(volume.direction_matrix, direction_of(ORIENTATIONS[anatomy]), atol=1e-9)
