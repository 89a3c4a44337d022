"""TC-MGAN (generator, WGAN-GP critic with modality classifier, tumour segmenter): shapes, gradients,
determinism, AMP, input checks, the code's sizes, the modality label and the frozen segmenter."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from MRISynthesisLib.models import count_parameters, measure, spec
from MRISynthesisLib.models.tc_mgan import (LOSS_WEIGHTS, PAPER_SIZE, SPEC, TARGET_SEQUENCES, CriticOutput,
                                            TCMGANCritic, TumourSegmenter, build, build_critic,
                                            build_segmenter, dice_loss, example_inputs, freeze_segmenter,
                                            target_code)

CONFIGS = ("lite", "paper")
NETWORKS = ("generator", "critic", "segmenter")
BUILDERS = {"generator": build, "critic": build_critic, "segmenter": build_segmenter}


def _seeded(network: str, config: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return BUILDERS[network](config, **overrides)


def _image(batch: int = 2, size: tuple[int, int] = PAPER_SIZE, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, *size, generator=g) * 2 - 1


def _run(network: str, model: nn.Module, batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """One forward of ``network`` at 128 x 128 with per-sample targets; the outputs as a tuple."""
    x = _image(batch, seed=seed)
    targets = [i % 3 for i in range(batch)]
    if network == "generator":
        return (model(x, targets),)
    if network == "critic":
        return tuple(model(x, _image(batch, seed=seed + 1)))
    return (model(x, targets),)


def test_registry_finds_the_spec_and_its_three_networks():
    assert spec("tc-mgan") is SPEC
    assert SPEC.input_size == {"lite": (128, 128), "paper": (128, 128)}
    assert set(SPEC.extras) == {"critic", "discriminator", "segmenter"}
    assert isinstance(SPEC.extras["critic"]("lite"), TCMGANCritic)
    assert isinstance(SPEC.extras["segmenter"]("lite"), TumourSegmenter)
    assert SPEC.paper_parameters_m is None and SPEC.paper_macs_g is None  # the paper gives no sizes
    assert TARGET_SEQUENCES == ("FLAIR", "T1ce", "T1")  # the code's label order
    assert LOSS_WEIGHTS == {"l1": 0.1, "cls": 10.0, "seg": 50.0, "gp": 100.0}  # §3.1


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_shapes_of_the_three_networks(config):
    with torch.no_grad():
        out = _seeded("generator", config).eval()(_image(2), [0, 2])
        assert out.shape == (2, 1, *PAPER_SIZE) and out.abs().max() <= 1.0
        result = _seeded("critic", config)(_image(2), out)
        assert isinstance(result, CriticOutput)
        score, logits = result
        assert score.shape == (2, 1, 4, 4) and logits.shape == (2, 3)
        assert result.value.shape == (2,) and torch.allclose(result.value, score.sum(dim=(1, 2, 3)))
        mask = _seeded("segmenter", config).eval()(out, [0, 2])
        assert mask.shape == (2, 1, *PAPER_SIZE) and mask.min() >= 0 and mask.max() <= 1


def test_lite_generator_trains_on_64x64_phantom_slices():
    model = _seeded("generator", "lite").train()
    out = model(_image(1, (64, 64)), "T1ce")
    assert out.shape == (1, 1, 64, 64)
    critic = _seeded("critic", "lite", image_size=64)
    assert critic(_image(1, (64, 64)), out).logits.shape == (1, 3)


def test_paper_sizes_are_the_codes():
    """The code's unet_128 (41.8 M less the biases instance norm cancels), netD 11.2 M, Unet 6.1 M."""
    generator = build("paper")
    assert generator.widths == (64, 128, 256, 512, 512, 512, 512)
    k = 16
    down = [(4, 64), (64, 128), (128, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    up = [(512, 512), (1024, 512), (1024, 512), (1024, 256), (512, 128), (256, 64)]
    code = sum(k * i * o + o for i, o in down) + sum(k * i * o + o for i, o in up) + k * 128 * 1 + 1
    cancelled = sum(o for _, o in down[1:-1]) + sum(o for _, o in up)  # biases followed by instance norm
    assert code == 41_822_593 and cancelled == 3_904
    assert count_parameters(generator) == code - cancelled
    parameters, macs = measure(SPEC, "paper")
    assert parameters == code - cancelled and 1.4e9 < macs < 1.6e9

    widths = [2, 64, 128, 256, 512, 1024]
    critic = sum(16 * i * o + o for i, o in zip(widths, widths[1:])) + 1024 * 9 + 1024 * 3 * 16
    assert count_parameters(build_critic("paper")) == critic == 11_203_520
    assert 6.0e6 < count_parameters(build_segmenter("paper")) < 6.2e6


def test_lite_is_small_and_a_whole_volume_runs_in_under_a_minute_on_two_cores():
    model = _seeded("generator", "lite").eval()
    assert count_parameters(model) < 3e6  # < 6 MB in fp16
    assert count_parameters(build_critic("lite")) < 1e6 and count_parameters(build_segmenter("lite")) < 1e6
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        volume = torch.zeros(155, 1, 240, 240)
        start = time.perf_counter()
        with torch.no_grad():
            out = torch.cat([model.synthesize(volume[i:i + 32], targets=["T1ce"]) for i in range(0, 155, 32)])
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    assert out.shape == (155, 1, 240, 240)
    assert seconds < 60, f"a whole volume took {seconds:.1f} s on 2 threads"


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("network", NETWORKS)
def test_every_parameter_gets_a_gradient(network, config):
    model = _seeded(network, config).train()
    outputs = _run(network, model)
    loss = sum((out * torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape)).sum() for out in outputs)
    loss.backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("network", NETWORKS)
def test_same_seed_gives_identical_outputs(network, config):
    first, second = _seeded(network, config, 3).eval(), _seeded(network, config, 3).eval()
    with torch.no_grad():
        a, b, again = _run(network, first), _run(network, second), _run(network, first)
        other = _run(network, _seeded(network, config, 4).eval())
    assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, again))
    assert not all(torch.equal(x, y) for x, y in zip(a, other))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("network", NETWORKS)
def test_cuda_autocast_is_close_to_cpu_float32(network, config):
    if not torch.cuda.is_available():
        print("no CUDA device")
        pytest.skip("no CUDA device")
    model = _seeded(network, config).eval()
    x, y = _image(2), _image(2, seed=2)
    args = (x, y) if network == "critic" else (x, [0, 2])
    with torch.no_grad():
        reference = model(*args)
        model = model.cuda()
        cuda_args = (x.cuda(), y.cuda()) if network == "critic" else (x.cuda(), [0, 2])
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(*cuda_args)
    reference = reference if isinstance(reference, tuple) else (reference,)
    out = out if isinstance(out, tuple) else (out,)
    for r, o in zip(reference, out):
        assert o.shape == r.shape
        scale = max(r.abs().max().item(), 1.0)
        assert (o.float().cpu() - r).abs().max() / scale < 2e-2


@pytest.mark.parametrize(("t2", "target", "message"), [
    (torch.zeros(1, 2, 64, 64), 0, r"T2 source must have 1 channel\(s\), but it has 2"),
    (torch.zeros(1, 64, 64), 0, r"T2 source must be 4D \(batch, channels, y, x\), but it is 3D"),
    (torch.zeros(1, 1, 32, 64), 0, r"too small: at least 64 per axis"),
    (torch.zeros(1, 1, 96, 64), 0, r"must be a multiple of 64 per axis"),
    (torch.zeros(1, 1, 64, 64), 3, r"unknown target label 3: TC-MGAN knows 3 labels \(0=FLAIR, 1=T1ce, 2=T1\)"),
    (torch.zeros(1, 1, 64, 64), -1, r"unknown target label -1"),
    (torch.zeros(1, 1, 64, 64), "T2", r"unknown target sequence 'T2' for TC-MGAN"),
    (torch.zeros(1, 1, 64, 64), "flare", r"unknown sequence name 'flare' \(did you mean FLAIR\?\)"),
    (torch.zeros(1, 1, 64, 64), 1.0, r"must be an int, a sequence name or a tensor, not float"),
    (torch.zeros(2, 1, 64, 64), torch.tensor([0, 1, 2]), r"3 targets for a batch of 2 samples"),
    (torch.zeros(1, 1, 64, 64), torch.tensor([0.5, 0.5, 0.0]), r"must be one-hot"),
    (torch.zeros(1, 1, 64, 64), torch.tensor([1.0, 0.0]), r"must have shape \(3,\) or \(batch, 3\)"),
    (torch.zeros(2, 1, 64, 64), torch.eye(3), r"has 3 rows but the batch has 2 samples"),
])
def test_wrong_generator_input_is_a_clear_value_error(t2, target, message):
    model = _seeded("generator", "lite").eval()
    with pytest.raises(ValueError, match=message):
        model(t2, target)


def test_wrong_critic_and_segmenter_input_is_a_clear_value_error():
    critic = _seeded("critic", "lite")
    with pytest.raises(ValueError, match=r"critic T2 source is \(64, 64\) but the critic was built for \(128, 128\)"):
        critic(_image(1, (64, 64)), _image(1, (64, 64)))
    with pytest.raises(ValueError, match=r"critic image is \(64, 64\) but .* build it with image_size="):
        critic(_image(1), _image(1, (64, 64)))
    with pytest.raises(ValueError, match=r"critic image must have 1 channel\(s\), but it has 3"):
        critic(_image(1), torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"T2 source has 2 samples but the image has 1"):
        critic(_image(2), _image(1))
    with pytest.raises(ValueError, match=r"`image_size` 100 must be a positive multiple of 2\*\*levels = 32"):
        build_critic("lite", image_size=100)
    segmenter = _seeded("segmenter", "lite")
    with pytest.raises(ValueError, match=r"segmenter image spatial size \(40, 40\) must be a multiple of 16"):
        segmenter(_image(1, (40, 40)), 0)
    with pytest.raises(ValueError, match=r"unknown target label 5"):
        segmenter(_image(1), 5)
    with pytest.raises(ValueError, match=r"unknown configuration 'huge'"):
        build("huge")


def test_generator_output_depends_on_the_target_label():
    model = _seeded("generator", "lite").eval()
    x = _image(1, (64, 64))
    with torch.no_grad():
        outs = [model(x, label) for label in range(3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert (outs[i] - outs[j]).abs().max() > 1e-4, f"labels {i} and {j} give the same image"


def test_every_target_form_gives_the_same_code_and_samples_may_differ():
    model = _seeded("generator", "lite").eval()
    x = _image(3, (64, 64))
    with torch.no_grad():
        by_index = model(x, 1)
        for form in ("T1ce", "t1c", torch.tensor(1), torch.tensor([1, 1, 1]), torch.tensor([0.0, 1.0, 0.0]),
                     torch.eye(3)[[1, 1, 1]], [1, "T1ce", 1]):
            assert torch.equal(model(x, form), by_index), f"target {form!r}"
        mixed = model(x, ["FLAIR", "T1ce", "T1"])
        separate = [model(x[i:i + 1], i) for i in range(3)]
    assert torch.allclose(mixed, torch.cat(separate), atol=1e-6)
    assert torch.equal(target_code("flair", 2), torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]))


def test_synthesize_gives_every_target_for_any_slice_size():
    model = _seeded("generator", "lite").eval()
    x = _image(2, (64, 64))
    with torch.no_grad():
        all_targets = model.synthesize(x)
        assert all_targets.shape == (2, 3, 64, 64)
        for k in range(3):
            assert torch.allclose(all_targets[:, k:k + 1], model(x, k), atol=1e-6)
        odd = model.synthesize(_image(1, (70, 90)), targets=["T1"])
    assert odd.shape == (1, 1, 70, 90) and torch.isfinite(odd).all()


def test_critic_returns_a_score_map_and_modality_logits():
    critic = _seeded("critic", "lite")
    t2, image = _image(4), _image(4, seed=2)
    score, logits = critic(t2, image)
    assert score.shape == (4, 1, 4, 4) and logits.shape == (4, 3)
    # the classifier and the score see the image: changing it changes both
    other = critic(t2, -image)
    assert not torch.allclose(other.logits, logits) and not torch.allclose(other.score, score)
    # the gradient penalty needs the gradient of D_src with respect to the (interpolated) image
    x_hat = image.clone().requires_grad_(True)
    grad, = torch.autograd.grad(critic(t2, x_hat).value.sum(), x_hat)
    assert grad.shape == x_hat.shape and grad.abs().sum() > 0
    # the classification loss of Eq. 2 trains the classification head, not the source head
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    assert critic.class_head.weight.grad.abs().sum() > 0 and critic.source_head.weight.grad is None


def test_frozen_segmenter_passes_gradients_to_the_generator_only():
    generator = _seeded("generator", "lite").train()
    segmenter = freeze_segmenter(_seeded("segmenter", "lite"))
    assert not any(p.requires_grad for p in segmenter.parameters())
    assert sum(p.numel() for p in segmenter.parameters() if p.requires_grad) == 0
    assert not segmenter.training
    nn.Sequential(generator, segmenter).train()  # a parent's train() must not wake batch norm up
    assert not segmenter.training and generator.training
    stats = segmenter.down[0][1].running_mean.clone()

    labels = [0, 2]
    mask = (torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(5)) > 0.7).float()
    fake = generator(_image(2, (64, 64)), labels)
    loss = LOSS_WEIGHTS["seg"] * dice_loss(segmenter(fake, labels), mask)
    loss.backward()
    assert all(p.grad is None for p in segmenter.parameters())
    assert torch.equal(segmenter.down[0][1].running_mean, stats)  # eval: running statistics untouched
    dead = [name for name, p in generator.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"generator parameters without gradient from the Dice loss: {dead}"

    segmenter.unfreeze()  # the paper's "TC-MGAN bw" / the code's in-loop updates
    assert segmenter.training and all(p.requires_grad for p in segmenter.parameters())


def test_dice_loss_values():
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1
    assert dice_loss(mask, mask).item() == pytest.approx(0.0, abs=1e-7)
    assert dice_loss(1 - mask, mask).item() == pytest.approx(1 - 1 / 65, abs=1e-6)  # (0 + 1) / (48 + 16 + 1)
    assert dice_loss(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0  # empty predicted empty
    with pytest.raises(ValueError, match=r"must have the same shape"):
        dice_loss(mask, mask[:1])


def test_example_inputs_run_on_the_meta_device():
    with torch.device("meta"):
        model = build("paper")
        out = model(*example_inputs(model, "paper", 2))
    assert out.shape == (2, 1, *PAPER_SIZE)
