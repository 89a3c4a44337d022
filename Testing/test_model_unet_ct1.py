"""U-Net cT1 (3D pix2pix generator): shapes, gradients, determinism, AMP, input checks and the thesis's sizes.

The paper configuration is never run on a whole 160 x 192 x 160 volume here: it is counted, shape-checked on
PyTorch's ``meta`` device (no arithmetic) and run on small crops only.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from MRISynthesisLib.models import blocks, count_parameters, measure, spec
from MRISynthesisLib.models.unet_ct1 import (ENHANCEMENT_THRESHOLD, PAPER_SIZE, SPEC, UNetCT1, build,
                                             enhancement_mask, example_inputs)

CONFIGS = ("lite", "paper")
#: small crops: (batch, spatial) per configuration; a multiple of 2**5 per axis, more than one bottleneck value
SMALL = {"lite": (2, (64, 64, 64)), "paper": (2, (64, 32, 32))}


def _seeded(config: str, seed: int = 0, **overrides) -> UNetCT1:
    torch.manual_seed(seed)
    return build(config, **overrides)


def _input(batch: int, size: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *size, generator=g) * 2 - 1


def test_registry_finds_the_spec():
    assert spec("unet-ct1") is SPEC
    assert SPEC.input_size == {"lite": PAPER_SIZE, "paper": PAPER_SIZE} and PAPER_SIZE == (160, 192, 160)
    assert SPEC.extras == {}  # the thesis trains no discriminator


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_shape_and_range_on_a_small_crop(config):
    batch, size = SMALL[config]
    model = _seeded(config).eval()
    with torch.no_grad():
        out = model(_input(batch, size))
    assert out.shape == (batch, 1, *size)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0


def test_paper_config_takes_the_whole_crop_on_meta_device():
    """Shapes only: the 160 x 192 x 160 volume goes through the paper model without arithmetic."""
    with torch.device("meta"):
        model = build("paper").eval()
        out = model(*example_inputs(model, "paper", 1))
    assert out.shape == (1, 1, *PAPER_SIZE)


def test_paper_parameter_count_is_the_tensorflow_pix2pix_layout_in_3d():
    """64-128-256-512-512 encoder, 512-256-128-64 decoder with skips, 4x4x4 kernels, batch norm, 1 output."""
    model = build("paper")
    assert model.widths == (64, 128, 256, 512, 512)
    k = 4 ** 3
    down = [(3, 64), (64, 128), (128, 256), (256, 512), (512, 512)]
    up = [(512, 512), (1024, 256), (512, 128), (256, 64)]
    expected = sum(k * i * o for i, o in down) + 64  # the first conv keeps its bias
    expected += sum(2 * o for _, o in down[1:])  # batch norm scale and shift
    expected += sum(k * i * o + 2 * o for i, o in up)
    expected += k * 128 * 1 + 1  # output transposed convolution with bias
    assert count_parameters(model) == expected
    parameters, macs = measure(SPEC, "paper")
    assert parameters == expected and 2e11 < macs < 3e11


def test_lite_is_small_and_fast_on_a_whole_volume():
    model = _seeded("lite").eval()
    assert count_parameters(model) < 3e6  # < 6 MB in fp16, well under the 15 MB limit
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = example_inputs(model, "lite", 1)
        start = time.perf_counter()
        with torch.no_grad():
            out = model(*x)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    assert out.shape == (1, 1, *PAPER_SIZE)
    assert seconds < 60, f"a whole volume took {seconds:.1f} s on 2 threads"


@pytest.mark.parametrize("config", CONFIGS)
def test_every_parameter_gets_a_gradient(config):
    batch, size = SMALL[config]
    model = _seeded(config).train()
    out = model(_input(batch, size))
    weights = torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape)
    (out * weights).sum().backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize("config", CONFIGS)
def test_same_seed_gives_identical_weights_and_outputs(config):
    x = _input(1, (32, 32, 32))
    first, second = _seeded(config, 3).eval(), _seeded(config, 3).eval()
    with torch.no_grad():
        a, b, again = first(x), second(x), first(x)
    assert torch.equal(a, b) and torch.equal(a, again)  # eval: no dropout, no randomness
    del second
    with torch.no_grad():
        other = _seeded(config, 4).eval()(x)
    assert not torch.equal(a, other)


def test_dropout_only_in_training_and_in_the_three_innermost_decoder_levels():
    model = _seeded("lite")
    dropouts = [name for name, m in model.named_modules() if isinstance(m, nn.Dropout3d)]
    assert [name.split(".")[1] for name in dropouts] == ["0", "1", "2"]
    assert all(m.p == 0.5 for m in model.modules() if isinstance(m, nn.Dropout3d))
    x = _input(2, (64, 64, 64))
    torch.manual_seed(0)
    a = model.train()(x)
    b = model(x)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("config", CONFIGS)
def test_cuda_autocast_is_close_to_cpu_float32(config):
    if not torch.cuda.is_available():
        print("no CUDA device")
        pytest.skip("no CUDA device")
    model = _seeded(config).eval()
    x = _input(1, (64, 64, 64))
    with torch.no_grad():
        reference = model(x)
        model = model.cuda()
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(x.cuda())
    assert out.shape == reference.shape
    assert (out.float().cpu() - reference).abs().max() < 2e-2


@pytest.mark.parametrize(("shape", "message"), [
    ((1, 2, 32, 32, 32), r"must have 3 channel\(s\), but it has 2"),
    ((1, 3, 32, 32), r"must be 5D \(batch, channels, z, y, x\), but it is 4D"),
    ((1, 3, 16, 32, 32), r"too small: at least 32 per axis"),
    ((1, 3, 32, 48, 32), r"must be a multiple of 32 per axis"),
])
def test_wrong_input_is_a_clear_value_error(shape, message):
    model = _seeded("lite").eval()
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(shape))


def test_crop_must_be_divisible_by_the_downsampling_factor():
    """160 and 192 are multiples of 2**5, not of 2**6: a sixth level would break the skip connections."""
    assert all(s % 2 ** 5 == 0 for s in PAPER_SIZE) and any(s % 2 ** 6 for s in PAPER_SIZE)
    with torch.device("meta"):
        model = build("paper", levels=6).eval()
        with pytest.raises(ValueError, match=r"\(160, 192, 160\) must be a multiple of 64"):
            model(torch.zeros(1, 3, *PAPER_SIZE))


def test_single_bottleneck_voxel_in_training_is_a_clear_error():
    model = _seeded("lite").train()
    with pytest.raises(ValueError, match="single bottleneck voxel"):
        model(torch.zeros(1, 3, 32, 32, 32))
    assert model(torch.zeros(1, 3, 64, 32, 32)).shape == (1, 1, 64, 32, 32)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown configuration 'huge'"):
        build("huge")
    with pytest.raises(ValueError, match="unknown `init` 'he'"):
        UNetCT1(init="he")
    with pytest.raises(ValueError, match="`levels` must be at least 1"):
        UNetCT1(levels=0)


def test_initialisation_follows_tensorflow_pix2pix_or_xavier():
    torch.manual_seed(0)
    normal = UNetCT1(base_filters=8, max_filters=32, levels=3)
    convs = [m for m in normal.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 2e-3 and abs(weights.mean().item()) < 2e-3
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in normal.modules()
               if isinstance(m, nn.BatchNorm3d))
    torch.manual_seed(0)
    xavier = UNetCT1(base_filters=8, max_filters=32, levels=3, init="xavier")
    fan_in, fan_out = 3 * 4 ** 3, 8 * 4 ** 3
    assert abs(xavier.down[0][0].weight.std().item() - (2 / (fan_in + fan_out)) ** 0.5) < 5e-3


def test_encoder_uses_tensorflow_leaky_slope_and_no_norm_on_the_first_level():
    model = _seeded("lite")
    assert isinstance(model.down[0][1], nn.Identity)
    assert all(isinstance(level[1], nn.BatchNorm3d) for level in model.down[1:])
    assert all(isinstance(level[2], nn.LeakyReLU) and level[2].negative_slope == 0.3 for level in model.down)
    assert all(isinstance(level, blocks.UNetUp) for level in model.up)
    assert isinstance(model.last[1], nn.Tanh)


def test_enhancement_mask_thresholds_ct1_minus_t1():
    assert ENHANCEMENT_THRESHOLD == 0.3
    t1 = torch.tensor([0.0, 0.0, 0.5, -1.0])
    ct1 = torch.tensor([0.29, 0.31, 0.5, 0.0])
    assert enhancement_mask(t1, ct1).tolist() == [0.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="same shape"):
        enhancement_mask(t1, ct1[:2])
