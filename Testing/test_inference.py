"""Inference engine: slice, 2.5D and patch-wise prediction equal the direct forward; progress and cancel."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.inference import Cancelled, batch_size_for, choose_device, predict_patches, predict_slices


def _volume(shape=(2, 9, 16, 12), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_slices_equal_a_direct_forward():
    torch.manual_seed(0)
    model = nn.Conv2d(2, 1, 3, padding=1)
    volume = _volume()
    before = volume.copy()
    out = predict_slices(model, volume, batch_size=4, device="cpu")
    with torch.no_grad():
        direct = model(torch.from_numpy(volume).permute(1, 0, 2, 3)).permute(1, 0, 2, 3).numpy()
    np.testing.assert_allclose(out, direct, atol=1e-6)
    np.testing.assert_array_equal(volume, before)


def test_two_and_a_half_d_stacks_neighbours_and_keeps_the_centre():
    volume = _volume((1, 5, 4, 4))

    def predictor(x: torch.Tensor) -> torch.Tensor:  # returns the 3-slice stack itself
        assert x.shape[1] == 3
        return x

    out = predict_slices(predictor, volume, context=1, batch_size=2, device="cpu")
    np.testing.assert_array_equal(out, volume)  # the centre of each stack is the slice itself

    def previous(x: torch.Tensor) -> torch.Tensor:  # a 1-channel output: the slice before, edge repeated
        return x[:, :1]

    shifted = predict_slices(previous, volume, context=1, batch_size=3, device="cpu")
    np.testing.assert_array_equal(shifted[0, 1:], volume[0, :-1])
    np.testing.assert_array_equal(shifted[0, 0], volume[0, 0])


def test_patches_blend_to_the_whole_volume_forward():
    torch.manual_seed(0)
    model = nn.Conv3d(2, 1, 1)  # pointwise: any tiling must give exactly the whole-volume result
    volume = _volume((2, 20, 18, 22))
    out = predict_patches(model, volume, patch_size=(8, 8, 8), overlap=0.5, batch_size=3, device="cpu")
    with torch.no_grad():
        direct = model(torch.from_numpy(volume)[None])[0].numpy()
    np.testing.assert_allclose(out, direct, atol=1e-5)
    small = predict_patches(model, volume[:, :5, :5, :5], patch_size=(8, 8, 8), batch_size=1, device="cpu")
    assert small.shape == (1, 5, 5, 5)


@pytest.mark.parametrize("mode", ["slices", "patches"])
def test_progress_reaches_one_and_cancel_stops_within_a_batch(mode):
    calls = []
    model = nn.Conv3d(1, 1, 1) if mode == "patches" else nn.Conv2d(1, 1, 1)
    volume = _volume((1, 12, 16, 16))

    def run(progress):
        if mode == "patches":
            return predict_patches(model, volume, patch_size=(8, 8, 8), batch_size=1, device="cpu", progress=progress)
        return predict_slices(model, volume, batch_size=2, device="cpu", progress=progress)

    run(lambda f, m: calls.append(f))
    assert calls[0] == 0.0 and calls[-1] == pytest.approx(1.0) and calls == sorted(calls)

    forwards = []
    counting = model.register_forward_hook(lambda *a: forwards.append(1))
    with pytest.raises(Cancelled):
        run(lambda f, m: f < 0.2)  # cancel once a fifth is done
    counting.remove()
    assert 0 < len(forwards) < len(calls) - 1  # stopped early, within one batch of the request


def test_bad_input_and_devices():
    with pytest.raises(InputError, match=r"\(channels, z, y, x\)"):
        predict_slices(nn.Identity(), np.zeros((4, 4, 4), np.float32), device="cpu")
    bad = _volume((1, 3, 4, 4))
    bad[0, 1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        predict_slices(nn.Identity(), bad, device="cpu")
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            choose_device("cuda")
    assert choose_device("auto").type in ("cpu", "cuda")
    assert batch_size_for(512 * 512, 64, torch.device("cpu")) >= 1
    assert batch_size_for(10, 1, torch.device("cpu"), limit=5) == 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: CUDA autocast not exercised")
def test_cuda_autocast_close_to_cpu():
    torch.manual_seed(0)
    model = nn.Conv2d(2, 1, 3, padding=1)
    volume = _volume()
    cpu = predict_slices(model, volume, device="cpu")
    gpu = predict_slices(model.cuda(), volume, device="cuda", amp=True)
    np.testing.assert_allclose(gpu, cpu, atol=2e-2)


def test_slices_are_padded_to_the_networks_multiple_and_cut_back():
    volume = np.random.default_rng(0).normal(size=(2, 3, 37, 45)).astype(np.float32)
    seen = []

    def doubling(x):
        seen.append(tuple(x.shape[-2:]))
        return x[:, :1] * 2

    out = predict_slices(doubling, volume, multiple=32, device="cpu")
    assert seen and all(h % 32 == 0 and w % 32 == 0 for h, w in seen)
    assert out.shape == (1, 3, 37, 45) and np.allclose(out[0], volume[0] * 2)
    with pytest.raises(InputError, match="`multiple` must be at least 1"):
        predict_slices(doubling, volume, multiple=0, device="cpu")


def test_slices_are_padded_as_training_pads_a_crop_larger_than_its_slice():
    """A network trained on whole slices learns the edge between the slice and training's padding: inference
    must pad with the same value (a slice of 37 x 45 in a 64 x 64 training crop, and up to 32's multiple)."""
    from MRISynthesisLib.inference import PADDING
    from MRISynthesisLib.training.sampling import _fit

    volume = np.random.default_rng(1).uniform(-0.3, 1, size=(1, 1, 37, 45)).astype(np.float32)
    seen = []

    def keep(x):
        seen.append(x.detach().cpu().numpy().copy())
        return x

    predict_slices(keep, volume, multiple=32, device="cpu")
    padded = seen[0][0, 0]
    trained = _fit(volume[0, 0], (64, 64), (18, 22))
    assert padded.shape == trained.shape == (64, 64)
    np.testing.assert_array_equal(padded == PADDING, trained == PADDING)
    assert (padded[0] == PADDING).all() and PADDING == -1.0


def test_a_model_without_a_synthesis_plan_is_refused():
    from MRISynthesisLib.predictors import plan_for
    from MRISynthesisLib.weights import read_manifest

    entry = read_manifest()[0]
    with pytest.raises(InputError, match="mp-gan has no synthesis plan"):
        plan_for(replace(entry, model="mp-gan"), None, entry.targets[0], entry.inputs)
    with pytest.raises(InputError, match="cannot produce FLAIR"):
        plan_for(entry, None, "FLAIR", entry.inputs)


def test_cpu_budget_follows_the_memory_left(monkeypatch):
    """Plenty of memory: the 1 GiB budget; little: a quarter of it; unknown: the 1 GiB budget."""
    from MRISynthesisLib import inference

    monkeypatch.setattr(inference, "cpu_headroom_bytes", lambda: 64 << 30)
    assert inference.cpu_budget_bytes() == inference.CPU_BUDGET_BYTES
    monkeypatch.setattr(inference, "cpu_headroom_bytes", lambda: 400 << 20)
    assert inference.cpu_budget_bytes() == 100 << 20
    monkeypatch.setattr(inference, "cpu_headroom_bytes", lambda: None)
    assert inference.cpu_budget_bytes() == inference.CPU_BUDGET_BYTES


def test_headroom_sees_an_address_space_limit():
    """Under ``ulimit -v`` (RLIMIT_AS) the headroom is what the limit leaves above the process's size."""
    import subprocess
    import sys

    code = ("import resource, sys\n"
            "from MRISynthesisLib.inference import _proc_kib, cpu_headroom_bytes\n"
            "size = _proc_kib('/proc/self/status', 'VmSize')\n"
            "resource.setrlimit(resource.RLIMIT_AS, (size + (300 << 20), resource.RLIM_INFINITY))\n"
            "print(cpu_headroom_bytes())\n")
    if not __import__("os").path.exists("/proc/self/status"):
        pytest.skip("no /proc: the address-space headroom is read on Linux only")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 250 << 20 < int(done.stdout.split()[-1]) <= 300 << 20


def test_headroom_without_the_posix_resource_module(monkeypatch):
    """Windows has no ``resource`` module: the headroom is then what the system reports, not a crash of
    every CPU run."""
    from MRISynthesisLib import inference

    monkeypatch.setitem(sys.modules, "resource", None)
    headroom = inference.cpu_headroom_bytes()
    available = inference._proc_kib("/proc/meminfo", "MemAvailable")
    if available is None:
        assert headroom is None
    else:
        assert 0 <= headroom <= available
    assert inference.cpu_budget_bytes() > 0


def test_a_volume_smaller_than_a_patch_is_padded_with_its_own_edges_not_zero():
    """On z-scored inputs 0 is the tissue's mean: a field of view smaller than a patch must be continued
    by what lies at its edges, not framed by a tissue training never showed there. The network here answers
    every voxel with the brightest input of its patch, which the padding must not change."""
    volume = _volume((2, 10, 12, 14), seed=3) * 0.4 - 0.6  # z-scored-like, everything below 0
    def brightest(x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x[:, :1]) * x.amax(dim=(1, 2, 3, 4), keepdim=True)
    out = predict_patches(brightest, volume, patch_size=(16, 16, 16), device="cpu", amp=False, batch_size=1)
    assert out.shape == (1, 10, 12, 14)
    np.testing.assert_allclose(out, volume[0].max(), atol=1e-3)  # the Gaussian blend, to float precision


def test_patches_shrink_to_fit_and_give_the_same_volume(monkeypatch):
    """With too little memory for one 96^3 patch the engine takes smaller patches (multiples of the
    network's factor, never under twice it) instead of failing; a voxel-wise network gives the same
    volume whatever the tiling."""
    from MRISynthesisLib import inference

    cpu = torch.device("cpu")
    monkeypatch.setattr(inference, "cpu_budget_bytes", lambda: 1 << 40)
    assert inference.fitting_patch((96, 96, 96), 32, cpu, 32) == (96, 96, 96)
    monkeypatch.setattr(inference, "cpu_budget_bytes", lambda: 64 ** 3 * 32 * 12)
    assert inference.fitting_patch((96, 96, 96), 32, cpu, 32) == (64, 64, 64)
    monkeypatch.setattr(inference, "cpu_budget_bytes", lambda: 1)
    assert inference.fitting_patch((96, 96, 96), 32, cpu, 32) == (64, 64, 64)  # the floor, not zero

    torch.manual_seed(0)
    model = nn.Conv3d(2, 1, 1)
    volume = _volume((2, 70, 80, 75))
    monkeypatch.setattr(inference, "cpu_budget_bytes", lambda: 1 << 40)
    whole = predict_patches(model, volume, patch_size=(96, 96, 96), multiple=16, device="cpu")
    monkeypatch.setattr(inference, "cpu_budget_bytes", lambda: 40 ** 3 * 32 * 12)
    seen = []
    tiled = predict_patches(lambda x: seen.append(tuple(x.shape[2:])) or model(x), volume, patch_size=(96, 96, 96),
                            multiple=16, device="cpu")
    assert seen and max(max(s) for s in seen) <= 48
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def _x_ramp_predictor(x: torch.Tensor) -> torch.Tensor:
    """Not mirror-symmetric: the first channel times a ramp along x (the last axis) plus its x index."""
    ramp = torch.linspace(0.0, 1.0, x.shape[-1], dtype=x.dtype)
    return x[:, :1] * ramp + ramp


@pytest.mark.parametrize("patch_size", [None, (4, 8, 8)])
def test_mirroring_averages_with_the_mirrored_prediction_of_the_mirrored_input(patch_size):
    from MRISynthesisLib.predictors import Plan, run_plan

    volume = _volume((2, 4, 8, 8), seed=3)
    before = volume.copy()
    plan = Plan(_x_ramp_predictor, ("T1", "T2"), patch_size=patch_size)
    plain = run_plan(plan, volume, "cpu")
    mirrored = run_plan(plan, volume, "cpu", mirror=True)
    ramp = np.linspace(0.0, 1.0, 8, dtype=np.float32)
    np.testing.assert_allclose(plain, volume[0] * ramp + ramp, atol=1e-5)
    symmetric = (ramp + ramp[::-1]) / 2  # the flipped prediction weighs each voxel by the ramp read backwards
    np.testing.assert_allclose(mirrored, volume[0] * symmetric + symmetric, atol=1e-5)
    # mirrored inference is mirror-equivariant, whatever the network
    flipped = run_plan(plan, np.ascontiguousarray(volume[..., ::-1]), "cpu", mirror=True)
    np.testing.assert_allclose(flipped, mirrored[..., ::-1], atol=1e-5)
    np.testing.assert_array_equal(volume, before)
