"""The registry: every model it lists builds, runs and is measured; the `models` command prints the table."""

from __future__ import annotations

import json

import pytest
import torch

from MRISynthesisLib.cli import main
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.models import CONFIGS, NAMES, available, build, count_macs, count_parameters, measure, spec


def test_unknown_model_and_config_are_clear_errors():
    with pytest.raises(InputError, match="unknown model 'pix2pix'; known models: important-net"):
        spec("pix2pix")
    if available():
        with pytest.raises(InputError, match="unknown configuration 'huge'"):
            build(available()[0].name, "huge")


def test_every_model_of_the_design_is_registered():
    assert set(NAMES) == {"important-net", "seq2seq", "tc-mgan", "unet-ct1", "mp-gan"}


@pytest.mark.parametrize("model_spec", available(), ids=lambda s: s.name)
def test_lite_generator_runs_and_is_small(model_spec):
    torch.manual_seed(0)
    model = model_spec.build("lite").eval()
    parameters = count_parameters(model)
    assert parameters * 2 < 15e6, "lite weights must stay under 15 MB in fp16"
    # the lite forward at a reduced batch works on CPU and ends in the tanh range
    with torch.no_grad():
        out = model(*model_spec.example_inputs(model, "lite", 1))
    tensor = out if isinstance(out, torch.Tensor) else next(v for v in (out.values() if isinstance(out, dict) else vars(out).values()) if isinstance(v, torch.Tensor))
    assert torch.isfinite(tensor).all() and tensor.abs().max() <= 1.0


@pytest.mark.parametrize("model_spec", available(), ids=lambda s: s.name)
@pytest.mark.parametrize("config", CONFIGS)
def test_meta_measurement_matches_a_real_count(model_spec, config):
    parameters, macs = measure(model_spec, config)
    assert parameters > 0 and macs > 0
    if config == "lite":  # the meta-device count equals one on real tensors
        model = model_spec.build("lite")
        assert count_parameters(model) == parameters
        assert count_macs(model, model_spec.example_inputs(model, "lite", 1)) == macs


def test_count_macs_of_a_known_layer():
    layer = torch.nn.Conv2d(2, 4, 3, padding=1, bias=False)
    assert count_macs(layer, (torch.zeros(1, 2, 8, 8),)) == 2 * 4 * 9 * 8 * 8
    assert count_parameters(layer) == 2 * 4 * 9


def test_models_command_prints_every_available_model(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for model_spec in available():  # lite and paper rows
        assert sum(line.startswith(model_spec.name + " ") for line in out.splitlines()) == 2
    assert out.splitlines()[-1].startswith("Bundled weights: ")
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 * len(available())
