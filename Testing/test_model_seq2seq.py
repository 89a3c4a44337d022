"""Seq2Seq (HyperConv, ConvLSTM, 2.5D) and its per-sequence PatchGAN: shapes, gradients, determinism,
clear errors, the HyperConv and ConvLSTM behaviour the paper relies on, and the paper's Table 1 figures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from MRISynthesisLib.models import count_macs, count_parameters, measure, spec
from MRISynthesisLib.models import seq2seq as s2s

CONFIGS = ("lite", "paper")
SIZE = 16  # reduced spatial size for the tests: 4x4 at the bottleneck


@pytest.fixture(scope="module")
def generators() -> dict[str, s2s.Seq2Seq]:
    built = {}
    for config in CONFIGS:
        torch.manual_seed(0)
        built[config] = s2s.build(config)
    return built


@pytest.fixture(scope="module")
def discriminators() -> dict[str, s2s.SequenceDiscriminator]:
    built = {}
    for config in CONFIGS:
        torch.manual_seed(0)
        built[config] = s2s.build_discriminator(config)
    return built


def _inputs(batch: int = 2, phases: int | None = None, size: int = SIZE, channels: int = 3, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, channels, size, size) if phases is None else (batch, phases, channels, size, size)
    return torch.rand(shape, generator=generator) * 2 - 1


def _dead_biases(model: nn.Module) -> set[int]:
    """Biases of a convolution that feeds a non-affine InstanceNorm directly: the norm removes them, so their
    gradient is zero by construction (blocks.ConvNormAct keeps such a bias, as pix2pix does)."""
    dead = set()
    for module in model.modules():
        children = list(module.children())
        for first, second in zip(children, children[1:]):
            if (isinstance(first, nn.modules.conv._ConvNd) and first.bias is not None
                    and isinstance(second, nn.modules.instancenorm._InstanceNorm) and not second.affine):
                dead.add(id(first.bias))
    return dead


def _check_gradients(model: nn.Module, loss: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    loss.backward()
    dead = _dead_biases(model)
    for name, parameter in model.named_parameters():
        if id(parameter) in dead:
            assert parameter.grad is None or parameter.grad.abs().max() < 1e-4, name
            continue
        assert parameter.grad is not None, f"{name} gets no gradient"
        assert parameter.grad.abs().sum() > 0, f"{name} gets a zero gradient"


# --- generator ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS)
def test_generator_shapes_2p5d_in_equals_out(generators, config):
    model = generators[config].eval()
    with torch.no_grad():
        x = _inputs()
        y = model(x, "T2")
        assert y.shape == x.shape == (2, 3, SIZE, SIZE)  # three slices in, the same three out
        assert y.abs().max() <= 1.0
        x5 = _inputs(phases=3)
        assert model(x5, 0).shape == (2, 1, 3, SIZE, SIZE)
        assert model(x5, 0, phases=4).shape == (2, 4, 3, SIZE, SIZE)
        # a 4D input is the same as one phase of a 5D input
        assert torch.allclose(model(x.unsqueeze(1), "T2")[:, 0], y, atol=1e-6)
        assert model.encode(x5).shape == (2, model.decoder.blocks[0].conv1.kernel_shape[0], SIZE // 4, SIZE // 4)


def test_lite_generator_runs_at_its_input_size_and_a_whole_brain_slice_size(generators):
    model = generators["lite"].eval()
    with torch.no_grad():
        out = model(*s2s.example_inputs(model, "lite", 1))
        assert out.shape == (1, 3, 192, 192)
        assert model(torch.zeros(1, 3, 240, 240), "FLAIR").shape == (1, 3, 240, 240)


def test_targets_by_index_name_alias_and_one_hot_agree(generators):
    model = generators["lite"].eval()
    x = _inputs()
    one_hot = torch.zeros(2, model.code_length)
    one_hot[:, 1] = 1
    with torch.no_grad():
        outputs = [model(x, 1), model(x, "T1ce"), model(x, "t1c"), model(x, torch.tensor([1, 1])),
                   model(x, one_hot), model(x, one_hot[0])]
        other = model(x, "FLAIR")
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])
    assert not torch.allclose(other, outputs[0])


@pytest.mark.parametrize("config", CONFIGS)
def test_every_generator_parameter_gets_a_gradient(generators, config):
    model = generators[config].train()
    # two phases in and two out, so the ConvLSTMs' forget gates and recurrent weights are used too
    out = model(_inputs(batch=1, phases=2), "FLAIR", phases=2)
    _check_gradients(model, (out - 0.3).abs().mean())


@pytest.mark.parametrize("config", CONFIGS)
def test_same_seed_same_generator_and_output(generators, config):
    torch.manual_seed(0)
    again = s2s.build(config).eval()
    model = generators[config].eval()
    x = _inputs(batch=1)
    with torch.no_grad():
        first = model(x, 2)
        assert torch.equal(first, again(x, 2))
        if config == "lite":  # no randomness at eval (the forward is the same code for both configurations)
            assert torch.equal(first, model(x, 2))


@pytest.mark.parametrize("config", CONFIGS)
def test_cuda_autocast_is_close_to_cpu_float32(generators, discriminators, config):
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        pytest.skip("no CUDA device")
    model = generators[config].eval()
    x = _inputs(batch=1, size=32)
    with torch.no_grad():
        reference = model(x, "T1ce")
        gpu = model.cuda()
        try:
            with torch.autocast("cuda", dtype=torch.float16):
                mixed = gpu(x.cuda(), "T1ce")
        finally:
            model.cpu()
    assert mixed.dtype in (torch.float16, torch.float32)
    assert torch.allclose(mixed.float().cpu(), reference, atol=5e-2), (mixed.float().cpu() - reference).abs().max()
    critic = discriminators[config].eval()
    with torch.no_grad():
        reference = critic(_inputs(batch=1, size=64))
        try:
            with torch.autocast("cuda", dtype=torch.float16):
                mixed = critic.cuda()(_inputs(batch=1, size=64).cuda())
        finally:
            critic.cpu()
    assert torch.allclose(mixed.float().cpu(), reference, atol=5e-2 * max(1.0, reference.abs().max().item()))


@pytest.mark.parametrize(("shape", "message"), [
    ((2, 1, 16, 16), "must have 3 channel"),
    ((2, 3, 18, 16), "multiple of 4"),
    ((2, 3, 4, 4), "too small"),
    ((3, 16, 16), "must be \\(batch, channels, y, x\\) or \\(batch, phases"),
    ((2, 0, 3, 16, 16), "at least one sample and one phase"),
    ((2, 2, 1, 16, 16), "must have 3 channel"),
])
def test_wrong_input_is_a_clear_error(generators, shape, message):
    with pytest.raises(ValueError, match=message):
        generators["lite"](torch.zeros(shape), 0)


def test_wrong_phases_is_a_clear_error(generators):
    model = generators["lite"]
    with pytest.raises(ValueError, match="`phases` .* must be an int >= 1"):
        model(_inputs(phases=1), 0, phases=0)
    with pytest.raises(ValueError, match="need a 5D input"):
        model(_inputs(), 0, phases=2)


# --- model-specific checks ------------------------------------------------------------------------------------

def test_unknown_target_code_is_a_clear_error(generators):
    model = generators["lite"]
    x = _inputs()
    with pytest.raises(ValueError, match="unknown target code 8: this model knows 8 sequences"):
        model(x, 8)
    with pytest.raises(ValueError, match="unknown target code -1"):
        model(x, -1)
    with pytest.raises(ValueError, match="unknown target code 8"):
        model(x, torch.tensor([8, 8]))
    with pytest.raises(ValueError, match="one target per batch"):
        model(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="must be one-hot"):
        model(x, torch.full((model.code_length,), 0.5))
    with pytest.raises(ValueError, match="shape \\(8,\\) or \\(batch, 8\\)"):
        model(x, torch.zeros(5))
    with pytest.raises(ValueError, match="unknown sequence name 'T3'"):
        model(x, "T3")
    # a code longer than the sequence list (as the paper's 64): the unused entries are unknown targets
    brats = s2s.Seq2Seq(channels=(4, 8), encoder_blocks=1, decoder_blocks=1, lstm_layers=1, code_length=16,
                        bank_size=2, sequences=("T1", "T1ce", "T2", "FLAIR"))
    code = torch.zeros(16)
    code[10] = 1
    with pytest.raises(ValueError, match="unknown target code 10: this model knows 4 sequences \\(0=T1, 1=T1ce"):
        brats(torch.zeros(1, 3, 8, 8), code)
    with pytest.raises(ValueError, match="unknown target sequence 'DCE'"):
        brats(torch.zeros(1, 3, 8, 8), "DCE")


def test_hyperconv_kernels_differ_between_codes_and_repeat_for_the_same_code():
    torch.manual_seed(0)
    layer = s2s.HyperConv(2, 4, 5, 3, code_length=8, bank_size=4)
    nn.init.normal_(layer.bias_bank)  # the bias bank starts at zero; make it show the mixing too
    codes = torch.eye(8)
    w0, b0 = layer.kernel(codes[0])
    w0_again, b0_again = layer.kernel(codes[0].clone())
    w1, b1 = layer.kernel(codes[1])
    assert w0.shape == (5, 4, 3, 3) and b0.shape == (5,)
    assert torch.equal(w0, w0_again) and torch.equal(b0, b0_again)
    assert not torch.allclose(w0, w1) and not torch.allclose(b0, b1)
    x = _inputs(channels=4, size=8)
    assert layer(x, codes[0]).shape == (2, 5, 8, 8)
    assert not torch.allclose(layer(x, codes[0]), layer(x, codes[1]))
    # inside the generator: every HyperConv's kernel depends on the target, through the shared code MLP
    torch.manual_seed(0)
    model = s2s.build("lite")
    t1 = model.code_mlp(model.target_code("T1"))
    flair = model.code_mlp(model.target_code("FLAIR"))
    for conv in model.decoder.hyper_convs():
        assert torch.equal(conv.kernel(t1)[0], conv.kernel(model.code_mlp(model.target_code(0)))[0])
        assert not torch.allclose(conv.kernel(t1)[0], conv.kernel(flair)[0])


def test_hyperconv_is_algorithm_1():
    torch.manual_seed(0)
    layer = s2s.HyperConv(2, 2, 3, 3, code_length=4, bank_size=5, padding_mode="zeros")
    code = torch.tensor([0.0, 1.0, 0.0, 0.0])
    f = layer.weight_mixer(code)
    expected = sum(layer.weight_bank[..., i] * f[i] for i in range(5))
    assert torch.allclose(layer.kernel(code)[0], expected, atol=1e-6)
    x = _inputs(channels=2, size=6)
    bias = layer.bias_bank @ layer.bias_mixer(code)
    assert torch.allclose(layer(x, code), nn.functional.conv2d(x, expected, bias, padding=1), atol=1e-5)


@pytest.mark.parametrize("phases", [1, 2, 5])
def test_convlstm_takes_any_number_of_phases(generators, phases):
    model = generators["lite"].eval()
    lstm = s2s.ConvLSTM(2, 6, 7, num_layers=2)
    assert lstm(torch.zeros(2, phases, 6, 5, 5)).shape == (2, phases, 7, 5, 5)
    with torch.no_grad():
        x = _inputs(phases=phases)
        assert model.encode(x).shape == (2, model.encoder_lstm.cells[-1].hidden_channels, SIZE // 4, SIZE // 4)
        assert model(x, "T1").shape == (2, 1, 3, SIZE, SIZE)


def test_convlstm_links_the_phases(generators):
    """The fused representation depends on the order of the phases (ConvLSTM), not only on their mean."""
    model = generators["lite"].eval()
    x = _inputs(batch=1, phases=3)
    with torch.no_grad():
        forward = model.encode(x)
        backward = model.encode(x.flip(1))
    assert not torch.allclose(forward, backward)


def test_representation_is_the_time_average_of_the_convlstm_states(generators):
    """The paper's 4D-wise average: the mean of the last ConvLSTM layer's hidden states over the phases."""
    model = generators["lite"].eval()
    x = _inputs(batch=1, phases=3)
    with torch.no_grad():
        states = model.encoder_lstm(model.encoder(x.flatten(0, 1)).unflatten(0, (1, 3)))
        assert torch.allclose(model.encode(x), states.mean(dim=1), atol=1e-6)
        assert not torch.allclose(model.encode(x), states[:, -1])


def test_three_d_mode_runs():
    torch.manual_seed(0)
    model = s2s.Seq2Seq(channels=(4, 8), encoder_blocks=1, decoder_blocks=1, lstm_layers=1, code_length=8,
                        bank_size=2, in_channels=1, out_channels=1, dims=3).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 8, 8, 8), "T2").shape == (1, 1, 8, 8, 8)
        assert model(torch.zeros(1, 2, 1, 8, 8, 8), "T2").shape == (1, 1, 1, 8, 8, 8)


# --- discriminator -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS)
def test_discriminator_shapes_and_target_selection(discriminators, config):
    critic = discriminators[config].eval()
    x = _inputs(size=64)
    with torch.no_grad():
        maps = critic(x)
        assert maps.shape == (2, len(s2s.SEQUENCE_ORDER), 6, 6)  # 70x70 PatchGAN on 64x64: 6x6 patches
        assert torch.equal(critic(x, "FLAIR"), maps[:, 3:4])
    with pytest.raises(ValueError, match="must have 3 channel"):
        critic(torch.zeros(2, 1, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        critic(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="unknown target code 9"):
        critic(x, 9)


@pytest.mark.parametrize("config", CONFIGS)
def test_every_discriminator_parameter_gets_a_gradient(discriminators, config):
    critic = discriminators[config].train()
    _check_gradients(critic, (critic(_inputs(size=64), "T1") - 1).pow(2).mean())


@pytest.mark.parametrize("config", CONFIGS)
def test_same_seed_same_discriminator(discriminators, config):
    torch.manual_seed(0)
    again = s2s.build_discriminator(config).eval()
    x = _inputs(size=64)
    with torch.no_grad():
        assert torch.equal(discriminators[config].eval()(x), again(x))


# --- sizes -----------------------------------------------------------------------------------------------------

def test_spec_is_registered_with_the_papers_figures():
    model_spec = spec("seq2seq")
    assert model_spec is s2s.SPEC and model_spec.form == "2.5D"
    assert model_spec.paper_parameters_m == 35.8 and model_spec.paper_macs_g == 83.4
    assert model_spec.input_size["paper"] == (192, 192)
    assert "discriminator" in model_spec.extras


def test_paper_configuration_sizes_match_the_docstring_and_table_1():
    parameters, macs = measure(s2s.SPEC, "paper")
    # what PyTorch counts (module docstring): 155.1 M and 105.5 GMACs per 3x192x192 slice
    assert abs(parameters / 1e6 - 155.1) < 0.1 and abs(macs / 1e9 - 105.45) < 0.1
    with torch.device("meta"):
        model = s2s.build("paper")
        table_parameters, table_macs = s2s.paper_table_size(model, *s2s.example_inputs(model, "paper", 1))
    # counted as the paper's Table 1 (banks and HyperConv convolutions left out): 35.8 M and 83.4 GMACs
    assert abs(table_parameters / 1e6 - 35.8) / 35.8 < 0.01
    assert abs(table_macs / 1e9 - 83.4) / 83.4 < 0.01


def test_lite_configuration_is_small(generators):
    model = generators["lite"]
    parameters = count_parameters(model)
    assert parameters * 2 < 15e6 and parameters < 3e6
    assert count_macs(model, s2s.example_inputs(model, "lite", 1)) < 2e9
