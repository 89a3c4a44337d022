"""IMPORTANT-Net (models/important_net.py): shapes for n = 1..4 inputs, reconstruction branches, MAPS
fusion, parameter attention, gradients to every parameter, seeding, autocast, discriminator, bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from MRISynthesisLib.models import count_parameters, measure, spec
from MRISynthesisLib.models.important_net import (SPEC, ImportantNet, ImportantNetDiscriminator, ImportantNetOutput,
                                                  build, build_discriminator, example_inputs, maps_interaction)

LITE_FEATURES = (16, 32, 48, 64)
PAPER_FEATURES = (64, 128, 256, 512)
#: parameters of build("paper") (n = 3) and build("lite"); a change in the architecture must be deliberate
PAPER_PARAMETERS = 152_888_292
LITE_PARAMETERS = 3_305_596


def images(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=generator) * 2 - 1


def assert_every_parameter_has_gradient(model: torch.nn.Module) -> None:
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"


def generator_loss(out: ImportantNetOutput, x: torch.Tensor) -> torch.Tensor:
    """Target L1 + reconstruction L1 (Eq. 1, 3) against fixed random targets."""
    target = images(x.shape[0], 1, x.shape[-1], seed=99)
    return (out.synthesized - target).abs().mean() + (out.reconstructions - x).abs().mean()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tensors here are tiny: one intra-op thread is fastest, and on a busy 2-core machine OpenMP
    threads waiting for each other made single steps take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def paper_model() -> ImportantNet:
    torch.manual_seed(0)
    return build("paper")


# ---------------------------------------------------------------- registry and sizes

def test_spec_is_registered_and_measured():
    assert spec("important-net") is SPEC
    assert SPEC.input_size == {"lite": (128, 128), "paper": (224, 224)}
    parameters, macs = measure(SPEC, "lite")
    assert parameters == LITE_PARAMETERS
    assert 0.5e9 < macs < 1.5e9  # about 0.8 GMAC at 128x128
    assert parameters * 2 < 15e6
    assert set(SPEC.extras) == {"discriminator"}


def test_paper_construction_and_parameter_count(paper_model):
    assert count_parameters(paper_model) == PAPER_PARAMETERS
    assert measure(SPEC, "paper")[0] == PAPER_PARAMETERS
    assert paper_model.n_inputs == 3 and len(paper_model.branches) == 3
    # V^- shape: 1024 and 512 filter 3x3 convolutions between the analysis and synthesis paths (Sec. 3.3)
    convs = [m for m in paper_model.bottleneck if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(1024, (3, 3)), (512, (3, 3))]
    assert [m.conv2[0].out_channels for m in paper_model.analysis] == [128, 256, 512, 1024]
    assert [m.conv2[0].out_channels for m in paper_model.synthesis] == [256, 128, 64, 32]


def test_example_inputs_match_the_configuration():
    model = build("lite")
    (x,) = example_inputs(model, "lite", 2)
    assert x.shape == (2, 3, 128, 128) and x.abs().max() <= 1
    (x,) = example_inputs(build("lite", n_inputs=2), "lite", 1)
    assert x.shape == (1, 2, 128, 128)
    with torch.device("meta"):
        model = build("paper")
        assert example_inputs(model, "paper", 1)[0].shape == (1, 3, 224, 224)


# ---------------------------------------------------------------- forward shapes, any n

@pytest.mark.parametrize("n_inputs", [1, 2, 3, 4])
def test_lite_shapes_attention_reconstructions_and_gradients_for_any_n(n_inputs):
    torch.manual_seed(0)
    model = build("lite", n_inputs=n_inputs).train()
    x = images(2, n_inputs, 32)
    out = model(x)
    assert isinstance(out, ImportantNetOutput)
    assert out.synthesized.shape == (2, 1, 32, 32)
    assert out.reconstructions.shape == (2, n_inputs, 32, 32)  # one reconstruction per input
    assert out.synthesized.abs().max() <= 1 and out.reconstructions.abs().max() <= 1
    widths = list(LITE_FEATURES) + list(reversed(LITE_FEATURES))  # MPFA1-4 then MPFA5-8
    factor = n_inputs + 4 if n_inputs > 1 else 1
    assert len(out.attention) == 8
    for weights, width in zip(out.attention, widths):
        assert weights.shape == (2, width * factor, 1, 1)
        assert (weights > 0).all() and (weights < 1).all()
    generator_loss(out, x).backward()
    assert_every_parameter_has_gradient(model)


def test_paper_forward_and_gradients_at_reduced_size(paper_model):
    paper_model.train()
    paper_model.zero_grad()
    x = images(2, 3, 32)
    out = paper_model(x)
    assert out.synthesized.shape == (2, 1, 32, 32)
    assert out.reconstructions.shape == (2, 3, 32, 32)
    assert [a.shape[1] for a in out.attention] == [7 * w for w in PAPER_FEATURES + PAPER_FEATURES[::-1]]
    generator_loss(out, x).backward()
    assert_every_parameter_has_gradient(paper_model)
    paper_model.zero_grad(set_to_none=True)


def test_reconstruction_channel_i_depends_only_on_input_i():
    torch.manual_seed(0)
    model = build("lite").train()  # batch statistics: untrained running statistics shrink the signal
    x = images(1, 3, 32)
    changed = x.clone()
    changed[:, 0] = images(1, 1, 32, seed=5)[:, 0]
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert not torch.allclose(a.reconstructions[:, 0], b.reconstructions[:, 0])
    assert torch.equal(a.reconstructions[:, 1:], b.reconstructions[:, 1:])
    assert not torch.allclose(a.synthesized, b.synthesized)  # the fusion sees input 0


def test_list_input_and_plain_tensor_path_agree():
    torch.manual_seed(0)
    model = build("lite").eval()
    x = images(1, 3, 32)
    with torch.no_grad():
        from_tensor = model(x)
        from_list = model([x[:, i:i + 1] for i in range(3)])
        plain = model.synthesize(x)
    assert torch.equal(from_tensor.synthesized, from_list.synthesized)
    assert torch.equal(from_tensor.synthesized, plain)


def test_a_few_steps_reduce_the_loss():
    """The lite generator trains: 25 Adam steps on one small batch lower target + reconstruction L1."""
    torch.manual_seed(0)
    model = build("lite").train()
    x = images(2, 3, 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = generator_loss(model(x), x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


# ---------------------------------------------------------------- MAPS fusion

def test_maps_for_two_inputs_exact_values():
    a = torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1)
    b = torch.tensor([2.0, 1.0, -1.0]).view(1, 3, 1, 1)
    out = maps_interaction([a, b])
    assert out.shape == (1, 18, 1, 1)
    expected = torch.cat([a, b, torch.maximum(a, b), (a + b) / 2, a * b, (a - b).abs()], dim=1)
    assert torch.equal(out, expected)


def test_maps_for_three_inputs_uses_pairwise_means_and_ignores_order():
    x = [images(1, 2, 4, seed=s) for s in range(3)]
    out = maps_interaction(x)
    assert out.shape == (1, 2 * 7, 4, 4)
    pairs = list(itertools.combinations(range(3), 2))
    product = sum(x[i] * x[j] for i, j in pairs) / 3
    subtract = sum((x[i] - x[j]).abs() for i, j in pairs) / 3
    torch.testing.assert_close(out[:, 6:8], torch.maximum(torch.maximum(x[0], x[1]), x[2]))
    torch.testing.assert_close(out[:, 8:10], (x[0] + x[1] + x[2]) / 3)
    torch.testing.assert_close(out[:, 10:12], product)
    torch.testing.assert_close(out[:, 12:14], subtract)
    permuted = maps_interaction([x[2], x[0], x[1]])
    torch.testing.assert_close(permuted[:, 6:], out[:, 6:])


def test_maps_for_one_input_is_the_input_itself():
    x = images(1, 3, 4)
    assert maps_interaction([x]) is x
    with pytest.raises(ValueError, match="at least one"):
        maps_interaction([])


# ---------------------------------------------------------------- seeding and autocast

def test_lite_same_seed_same_weights_and_outputs():
    x = images(2, 3, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = build("lite").eval()
        with torch.no_grad():
            outs.append((model(x), model(x), build_discriminator("lite")(x, images(2, 1, 32))))
    (a, a_again, da), (b, _, db) = outs
    assert torch.equal(a.synthesized, a_again.synthesized)  # no randomness in forward at eval
    assert torch.equal(a.synthesized, b.synthesized) and torch.equal(a.reconstructions, b.reconstructions)
    assert torch.equal(da, db)
    torch.manual_seed(8)
    with torch.no_grad():
        assert not torch.equal(build("lite").eval()(x).synthesized, a.synthesized)


def test_paper_same_seed_same_weights_and_outputs(paper_model):
    torch.manual_seed(0)
    twin = build("paper")
    for (name, p), q in zip(paper_model.named_parameters(), twin.parameters()):
        assert torch.equal(p, q), name
    x = images(2, 3, 32)
    paper_model.train()
    twin.train()  # batch statistics: the outputs depend on the weights only
    with torch.no_grad():
        assert torch.equal(paper_model(x).synthesized, twin(x).synthesized)


@pytest.mark.parametrize("config,size", [("lite", 64), ("paper", 64)])
def test_cuda_autocast_is_close_to_cpu_float32(config, size):
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    # batch statistics: with untrained running statistics the eval-mode signal is ~1e-12, which would make
    # the comparison vacuous (and underflow in float16)
    model = build(config).train()
    discriminator = build_discriminator(config).train()
    x, y = images(2, 3, size), images(2, 1, size, seed=3)
    with torch.no_grad():
        ref, ref_d = model(x), discriminator(x, y)
        model, discriminator = model.cuda(), discriminator.cuda()
        with torch.autocast("cuda", dtype=torch.float16):
            out, out_d = model(x.cuda()), discriminator(x.cuda(), y.cuda())
    torch.testing.assert_close(out.synthesized.float().cpu(), ref.synthesized, atol=3e-2, rtol=0)
    torch.testing.assert_close(out.reconstructions.float().cpu(), ref.reconstructions, atol=3e-2, rtol=0)
    torch.testing.assert_close(out_d.float().cpu(), ref_d, atol=3e-2 * ref_d.abs().max().item() + 1e-3, rtol=0)


# ---------------------------------------------------------------- discriminator

@pytest.mark.parametrize("config,features", [("lite", LITE_FEATURES), ("paper", PAPER_FEATURES)])
def test_discriminator_shapes_and_gradients(config, features):
    torch.manual_seed(0)
    discriminator = build_discriminator(config).train()
    assert isinstance(discriminator, ImportantNetDiscriminator)
    assert discriminator.model[0][0].in_channels == 4  # three inputs + the target (conditional, Eq. 3)
    assert [discriminator.model[k][0].out_channels for k in range(4)] == list(features)
    x, y = images(2, 3, 64), images(2, 1, 64, seed=1)
    logits = discriminator(x, y)
    assert logits.shape == (2, 1, 4, 4)  # one logit per patch, H/16
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    assert_every_parameter_has_gradient(discriminator)


def test_discriminator_follows_the_generators_n():
    discriminator = build_discriminator("lite", n_inputs=2)
    assert discriminator(images(1, 2, 32), images(1, 1, 32)).shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="sources must have 2 channel"):
        discriminator(images(1, 3, 32), images(1, 1, 32))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("shape,message", [
    ((1, 2, 64, 64), r"input must have 3 channel\(s\), one per input sequence .*n_inputs=3.*but it has 2"),
    ((1, 4, 64, 64), r"input must have 3 channel\(s\).*but it has 4"),
    ((3, 64, 64), r"input must be 4D .* but it is 3D"),
    ((1, 3, 16, 16), r"too small: at least 32"),
    ((1, 3, 48, 64), r"must be a multiple of 32"),
])
def test_wrong_generator_input_is_a_clear_error(shape, message):
    model = build("lite")
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(shape))


def test_wrong_list_input_is_a_clear_error():
    model = build("lite", n_inputs=2)
    with pytest.raises(ValueError, match="built for n_inputs=2 sequences, but 3 were given"):
        model([torch.zeros(1, 1, 32, 32)] * 3)
    with pytest.raises(ValueError, match="same shape"):
        model([torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 64, 64)])
    with pytest.raises(ValueError, match="input sequence 1 must have 1 channel"):
        model([torch.zeros(1, 1, 32, 32), torch.zeros(1, 2, 32, 32)])


def test_wrong_discriminator_input_is_a_clear_error():
    discriminator = build_discriminator("lite")
    with pytest.raises(ValueError, match="target must have 1 channel"):
        discriminator(images(1, 3, 32), images(1, 2, 32))
    with pytest.raises(ValueError, match="same batch and spatial size"):
        discriminator(images(1, 3, 32), images(1, 1, 64))
    with pytest.raises(ValueError, match="multiple of 16"):
        discriminator(images(1, 3, 40), images(1, 1, 40))


@pytest.mark.parametrize("kwargs,message", [
    ({"n_inputs": 0}, "`n_inputs` must be an integer >= 1, not 0"),
    ({"n_inputs": 2.0}, "`n_inputs` must be an integer"),
    ({"features": (16, 32, 64)}, "`features` must be 4 integers"),
    ({"bottleneck_features": (128,)}, "`bottleneck_features` must be 2 integers"),
    ({"norm": "group"}, "unknown normalisation 'group'"),
])
def test_wrong_constructor_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImportantNet(**kwargs)


def test_unknown_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown configuration 'huge'"):
        build("huge")
    with pytest.raises(ValueError, match="unknown configuration 'huge'"):
        build_discriminator("huge")
