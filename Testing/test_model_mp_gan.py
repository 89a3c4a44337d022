"""MP-GAN (class-conditional DCGAN / WGAN): shapes, gradients, determinism, AMP, input checks, the condition,
reproducible sampling and the paper's layout (four resize-convolutions, seven channels, tanh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.models import blocks, count_parameters, measure, spec
from MRISynthesisLib.models.mp_gan import (ADVERSARY, CHANNELS, CLASSES, PATCH_SIZE, SPEC, TRAINING, Critic,
                                           Discriminator, Generator, build, build_critic, build_discriminator,
                                           class_indices, example_inputs, stack_channels)

CONFIGS = ("lite", "paper")
NETWORKS = ("generator", "discriminator", "critic")
BUILDERS = {"generator": build, "discriminator": build_discriminator, "critic": build_critic}


def _seeded(network: str, config: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return BUILDERS[network](config, **overrides)


def _z(batch: int, latent: int = 100, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, latent, generator=torch.Generator().manual_seed(seed))


def _patches(batch: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, len(CHANNELS), PATCH_SIZE, PATCH_SIZE, generator=g) * 2 - 1


def _run(network: str, model: nn.Module, batch: int = 4) -> torch.Tensor:
    classes = torch.arange(batch) % 3
    return model(_z(batch), classes) if network == "generator" else model(_patches(batch), classes)


def test_registry_finds_the_spec_and_its_adversaries():
    assert spec("mp-gan") is SPEC
    assert SPEC.input_size["paper"] == (64, 64) and SPEC.form == "noise -> 2D"
    assert set(SPEC.extras) == {"discriminator", "critic"} and set(ADVERSARY.values()) == set(SPEC.extras)
    assert isinstance(SPEC.extras["critic"]("lite"), Critic)
    assert type(SPEC.extras["discriminator"]("lite")) is Discriminator
    assert CHANNELS == ("T2", "T1_pre", "T1_post1", "T1_post2", "T1_post3", "T1_post4", "Sub")
    assert CLASSES == ("benign", "malignant", "healthy")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("network", NETWORKS)
def test_forward_shapes(network, config):
    model = _seeded(network, config).eval()
    with torch.no_grad():
        out = _run(network, model)
    expected = (4, 7, 64, 64) if network == "generator" else (4, 1)
    assert out.shape == expected and torch.isfinite(out).all()


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("network", NETWORKS)
def test_every_parameter_gets_a_gradient(network, config):
    model = _seeded(network, config).train()
    out = _run(network, model)
    weights = torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape)
    (out * weights).sum().backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("network", NETWORKS)
def test_same_seed_gives_identical_outputs(network, config):
    a, b, c = (_seeded(network, config, seed).eval() for seed in (5, 5, 6))
    with torch.no_grad():
        out_a, out_b, out_c = _run(network, a), _run(network, b), _run(network, c)
        again = _run(network, a)
    assert torch.equal(out_a, out_b) and torch.equal(out_a, again)
    assert not torch.equal(out_a, out_c)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("network", NETWORKS)
def test_cuda_autocast_is_close_to_cpu_float32(network, config):
    if not torch.cuda.is_available():
        print("no CUDA device")
        pytest.skip("no CUDA device")
    model = _seeded(network, config).eval()
    classes = torch.tensor([0, 1, 2, 1])
    x = _z(4) if network == "generator" else _patches(4)
    with torch.no_grad():
        reference = model(x, classes)
        model = model.cuda()
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(x.cuda(), classes.cuda())
    tolerance = 1e-2 * max(1.0, reference.abs().max().item())
    assert out.shape == reference.shape and (out.float().cpu() - reference).abs().max() < tolerance


def test_generator_output_depends_on_the_class():
    model = _seeded("generator", "lite").eval()
    z = _z(1).expand(3, -1)
    with torch.no_grad():
        out = model(z, torch.tensor([0, 1, 2]))
        by_name = model(z[:1], "malignant")
    for i in range(3):
        for j in range(i + 1, 3):
            difference = (out[i] - out[j]).abs().max()
            assert difference > 0.01 * out.abs().max(), f"{CLASSES[i]} and {CLASSES[j]} give the same patch"
    assert torch.allclose(by_name[0], out[1], atol=1e-6)


@pytest.mark.parametrize("network", ("discriminator", "critic"))
def test_adversary_score_depends_on_the_class(network):
    model = _seeded(network, "lite").eval()
    x = _patches(1).expand(3, -1, -1, -1)
    with torch.no_grad():
        score = model(x, torch.tensor([0, 1, 2]))
    assert len(set(score.flatten().tolist())) == 3


def test_sample_is_reproducible_in_range_with_seven_channels():
    model = _seeded("generator", "lite").train()
    a = model.sample(3, "benign", seed=7)
    b = model.sample(3, "benign", seed=7)
    c = model.sample(3, "benign", seed=8)
    d = model.sample(3, "healthy", seed=7)
    assert a.shape == (3, 7, 64, 64) and not a.requires_grad
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)
    assert a.min() >= -1 and a.max() <= 1
    assert model.training  # restored after sampling
    assert model.sample(3, ["benign", "malignant", "no findings"], seed=1).shape[0] == 3


def test_output_is_bounded_by_tanh_even_when_saturated():
    model = _seeded("generator", "lite").eval()
    with torch.no_grad():
        model.last[1][0].weight.mul_(1000)
        out = model(_z(4), torch.tensor([0, 1, 2, 0]))
    assert out.abs().max() <= 1.0 and out.abs().max() > 0.99


def test_generator_layout_is_four_resize_convolutions_with_batch_norm_and_a_tanh_output():
    model = _seeded("generator", "paper")
    resize = [m for m in model.modules() if isinstance(m, blocks.ResizeConv)]
    assert len(resize) == 4 and all(isinstance(m[0], nn.Upsample) and m[0].mode == "nearest" for m in resize)
    assert not any(isinstance(m, (nn.ConvTranspose2d,)) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4  # projection + 3 hidden, not output
    assert isinstance(model.last[1][2], nn.Tanh) and model.last[1][0].out_channels == 7
    assert model.project.in_features == 100 + 3  # one-hot class concatenated to z
    assert [m[1][0].out_channels for m in resize] == [256, 128, 64, 7]


def test_discriminator_has_batch_norm_and_the_critic_has_none():
    disc, critic = _seeded("discriminator", "paper"), _seeded("critic", "paper")
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 4 and [c.out_channels for c in convs] == [64, 128, 256, 512]
    assert convs[0].in_channels == 7 + 3  # patch + tiled one-hot class
    assert sum(isinstance(m, nn.BatchNorm2d) for m in disc.modules()) == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in critic.modules())
    assert disc.head.in_features == 512 * 4 * 4 and critic.head.in_features == 512 * 4 * 4


def test_critic_weight_clipping():
    critic = _seeded("critic", "lite")
    critic.clip_weights_(TRAINING["wgan"]["clip"])
    assert max(p.abs().max().item() for p in critic.parameters()) <= 0.01
    assert max(p.abs().max().item() for p in critic.parameters()) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="clip value must be positive"):
        critic.clip_weights_(0)


def test_sizes_and_variants():
    assert count_parameters(build("paper")) > count_parameters(build("lite"))
    for config in CONFIGS:
        parameters, macs = measure(SPEC, config)
        assert parameters == count_parameters(build(config)) and macs > 0
    assert count_parameters(build("lite")) < 1e6 and count_parameters(build_discriminator("lite")) < 1e6
    assert build("lite", variant="wgan").variant == "wgan" and build("lite").variant == "dcgan"
    with pytest.raises(ValueError, match="unknown `variant` 'began'"):
        build("lite", variant="began")
    assert TRAINING["wgan"]["critic_steps"] == 5 and TRAINING["dcgan"]["batch"] == 64


@pytest.mark.parametrize(("cls", "message"), [
    ("cyst", r"unknown class 'cyst'; use one of benign, malignant, healthy"),
    (3, r"unknown class index 3; classes are 0=benign, 1=malignant, 2=healthy"),
    (torch.tensor([0, -1]), r"unknown class index -1"),
    (torch.tensor([0.0, 1.0]), r"integer tensor"),
    (["benign"], r"1 classes given for a batch of 2"),
])
def test_unknown_class_is_a_clear_value_error(cls, message):
    model = _seeded("generator", "lite").eval()
    with pytest.raises(ValueError, match=message):
        model(_z(2), cls)
    with pytest.raises(InputError, match=message):
        _seeded("discriminator", "lite").eval()(_patches(2), cls)


@pytest.mark.parametrize(("network", "x", "message"), [
    ("generator", torch.zeros(2, 64), r"z must have shape \(batch, 100\), not \(2, 64\)"),
    ("generator", torch.zeros(2, 100, 2, 2), r"z must have shape \(batch, 100\)"),
    ("discriminator", torch.zeros(2, 6, 64, 64), r"must have 7 channel\(s\), but it has 6"),
    ("critic", torch.zeros(2, 7, 64, 64, 1), r"must be 4D"),
    ("critic", torch.zeros(2, 7, 32, 32), r"too small"),
    ("discriminator", torch.zeros(2, 7, 96, 64), r"patch must be 64 x 64, not \(96, 64\)"),
])
def test_wrong_input_is_a_clear_value_error(network, x, message):
    model = _seeded(network, "lite").eval()
    with pytest.raises(ValueError, match=message):
        model(x, 0)


def test_class_names_aliases_and_dcgan_shaped_noise():
    assert class_indices("No Findings", 2).tolist() == [2, 2]
    assert class_indices(["malignant", 0, "healthy"], 3).tolist() == [1, 0, 2]
    model = _seeded("generator", "lite").eval()
    z = _z(2)
    with torch.no_grad():
        assert torch.equal(model(z[:, :, None, None], 1), model(z, 1))


def test_smaller_patch_size():
    model = Generator(base_filters=8, patch_size=32).eval()
    disc = Discriminator(base_filters=8, patch_size=32).eval()
    with torch.no_grad():
        out = model(_z(2), [0, 2])
        assert out.shape == (2, 7, 32, 32) and disc(out, [0, 2]).shape == (2, 1)
    with pytest.raises(ValueError, match="multiple of 16"):
        Generator(patch_size=40)


def test_example_inputs_cycle_the_classes():
    model = build("lite")
    z, classes = example_inputs(model, "lite", 4)
    assert z.shape == (4, 100) and classes.tolist() == [0, 1, 2, 0]


def test_stack_channels_builds_the_subtraction_in_range():
    t2 = np.full((4, 4), 0.1, dtype=np.float32)
    dce = np.stack([np.full((4, 4), v, dtype=np.float32) for v in (-1.0, 1.0, 0.5, 0.2, 0.0)])
    stacked = stack_channels(t2, dce)
    assert stacked.shape == (7, 4, 4)
    assert stacked[:, 0, 0].tolist() == pytest.approx([0.1, -1.0, 1.0, 0.5, 0.2, 0.0, 1.0])
    tensor = stack_channels(torch.from_numpy(t2), torch.from_numpy(dce))
    assert isinstance(tensor, torch.Tensor) and torch.allclose(tensor, torch.from_numpy(stacked))
    with pytest.raises(ValueError, match="DCE"):
        stack_channels(t2, dce[:4])
