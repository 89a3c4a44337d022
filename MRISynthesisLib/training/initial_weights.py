"""Start a training run from existing weights (fine-tuning) instead of a random initialisation.

Researchers adapt a bundled model to their own data, or to a changed phantom, in a fraction of the steps a
run from scratch needs. ``--init-from`` names where the generator's starting weights come from:

* ``bundled``: the bundled weights of the same model, anatomy and configuration, checked against the
  manifest's sha256 as inference checks them;
* a weight file exported by ``mri-synthesis export`` (a plain state dict, fp16 or fp32);
* a training checkpoint (``checkpoints/best.pt`` or ``last.pt`` of a run): its inference network.

Only the generator starts from them (and the recipe's inference copy of it, MP-GAN's running average);
discriminators, segmenters, optimisers, schedulers and the step count start afresh, so the run's own
recipe (warm-up phases included) runs whole.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError

BUNDLED = "bundled"


def _load_file(path: Path, network: str) -> dict[str, torch.Tensor]:
    from ..weights import read_weights

    if not path.is_file():
        raise InputError(f"--init-from {path}: no such weight file")
    state = read_weights(path)
    if isinstance(state, dict) and "recipe" in state:  # a training checkpoint
        try:
            state = state["recipe"]["networks"][network]
        except (KeyError, TypeError) as err:
            raise InputError(f"--init-from {path}: a checkpoint without a {network!r} network") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"--init-from {path}: not a state dict of tensors (an exported weight file or a checkpoint)")
    return state


def _bundled(model: str, config: str, anatomy: str | None, folder,
             stem: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The bundled weights of ``model`` for ``anatomy``; where several are (MP-GAN's two variants), the one
    this run would export as ``stem`` (its file name without ``.pt``, which names the variant)."""
    from ..weights import find, load_model, models_dir, read_manifest

    fitting = [e for e in read_manifest(folder) if e.model == model and (anatomy is None or e.anatomy == anatomy)]
    if len(fitting) > 1 and stem is not None and any(e.file == f"{stem}.pt" for e in fitting):
        fitting = [e for e in fitting if e.file == f"{stem}.pt"]
    if len(fitting) > 1:
        raise InputError(f"--init-from bundled: several bundled {model} weights fit ({', '.join(e.file for e in fitting)}); "
                         f"name one, e.g. --init-from {models_dir(folder) / fitting[0].file}")
    entry = fitting[0] if fitting else find(model, anatomy=anatomy, folder=folder)  # find names what is bundled
    if entry.config != config:
        raise InputError(f"--init-from bundled: the bundled {entry.file} is the {entry.config} configuration; "
                         f"this run trains {config} (pass --config {entry.config})")
    return load_model(entry, folder).state_dict(), f"{entry.file} (sha256 {entry.sha256[:12]}…)"


def initial_state(spec: str, model: str, config: str, anatomy: str | None, network: str = "generator",
                  folder: str | Path | None = None, stem: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """(the starting state dict, a description for the log and run.json) for ``--init-from spec``; ``stem``:
    the file name this run exports, which picks among several bundled weights of one model."""
    if spec == BUNDLED:
        return _bundled(model, config, anatomy, folder, stem)
    path = Path(spec)
    return _load_file(path, network), str(path)


def apply_initial_state(net: torch.nn.Module, state: dict[str, torch.Tensor], described: str) -> None:
    """Load ``state`` into ``net`` in the network's own precision; weights of another architecture are refused
    with both named."""
    current = net.state_dict()
    try:
        net.load_state_dict({k: v.to(current[k].dtype) if k in current else v for k, v in state.items()})
    except RuntimeError as err:  # the run stops here, before its folder is made
        raise InputError(f"--init-from {described}: the weights do not fit this run's network "
                         f"({' '.join(str(err).split())[:200]})") from err


def initialise_generator(recipe, spec: str, model: str, config: str, anatomy: str | None,
                         stem: str | None = None) -> str:
    """Start ``recipe``'s generator (and its inference copy) from ``spec``; returns what it started from."""
    state, described = initial_state(spec, model, config, anatomy, recipe.inference_network, stem=stem)
    for name in dict.fromkeys(("generator", recipe.inference_network)):
        apply_initial_state(recipe.networks[name], state, described)
    return described
