"""From a training run to a bundled model: fp16 weights, manifest entry and model card."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..weights import WeightsEntry, export, models_dir
from ..phantom import ORIENTATIONS as PHANTOM_ORIENTATIONS
from .checkpoint import read_record
from .data import CaseCache, cached_voxel_size
from .recipes import recipe_for


#: how a model card describes the foreground its intensities were normalised within
_FOREGROUND_WORDS = {"body": "tissue against air, triangle threshold",
                     "otsu": "Otsu's bright-tissue split, which misses dark tissue such as fat-suppressed breast"}

def export_run(run_dir: str | Path, *, anatomy: str | None = None, which: str = "best",
               folder: str | Path | None = None, command: str = "", metrics: dict | None = None,
               overwrite: bool = True) -> WeightsEntry:
    """Export ``<run_dir>/checkpoints/<which>.pt`` as ``<model>-<anatomy>-<config>.pt`` with its card.

    ``anatomy`` defaults to the run's (recorded in run.json); ``overwrite=False`` refuses to replace a
    weight file of the same name in ``folder``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").exists():
        raise InputError(f"{run_dir}: not a training run folder (no run.json)")
    run = read_record(run_dir / "run.json", ("model", "config", "options"))
    recipe = recipe_for(run["model"])
    config = run["config"]
    options = run["options"]
    if config not in recipe.batch_size:
        raise InputError(f"{run_dir / 'run.json'}: unknown configuration {config!r} for {run['model']}")
    missing = ["options"] if not isinstance(options, dict) else [
        f"options.{key}" for key in ("data", "seed", "batch_size") if key not in options]
    if missing or not isinstance(options.get("data"), str):
        raise InputError(f"{run_dir / 'run.json'}: damaged, it lacks {', '.join(missing) or 'options.data'}")
    if not (run_dir / "split.json").exists():
        raise InputError(f"{run_dir / 'split.json'}: missing (train writes it when the run begins)")
    anatomy = anatomy or options.get("anatomy") or recipe.anatomy
    inputs, targets, _ = recipe.task_for(anatomy)
    checkpoint_path = run_dir / "checkpoints" / f"{which}.pt"
    if not checkpoint_path.exists():
        raise InputError(f"{checkpoint_path}: no such checkpoint (has the run saved one yet?)")
    name = recipe.file_stem(anatomy, config, options.get("recipe_options", {})) + ".pt"
    if not overwrite and (models_dir(folder) / name).exists():
        raise InputError(f"{models_dir(folder) / name}: exists; pass --overwrite to replace it")
    from .checkpoint import load
    state = load(checkpoint_path)
    split = read_record(run_dir / "split.json", ("train", "validation"))
    warm_up = recipe.warm_up_steps(config, options.get("recipe_options", {}))
    fields = {
        "file": name, "model": run["model"], "config": config, "anatomy": anatomy,
        "inputs": inputs, "targets": targets, "normalization": recipe.normalization,
        "foreground": recipe.foreground,
        "voxel_size_mm": _trained_voxel_size(run_dir, options, recipe, config, split),
        # a folder of cases is read in each reference's own orientation, so only the phantom's is known
        "orientation": PHANTOM_ORIENTATIONS[anatomy] if options["data"].startswith("phantom") else None,
        "patch_size": recipe.inference_size[config],
        "frames": {k: v for k, v in recipe.frames.items() if k in inputs},
        "series": dict(recipe.series.get(anatomy, {})),
        "training": {"command": command or options.get("command", ""), "data": options["data"], "train_cases": split["train"],
                     "validation_cases": split["validation"], "steps": state["step"], "checkpoint": which,
                     **_best_validation(state, recipe), "seed": options["seed"],
                     "batch_size": options["batch_size"],
                     **({"warm_up_steps": warm_up, "steps_run": _steps_run(run_dir, state, which)} if warm_up else {}),
                     **({"initialised_from": run["initialised_from"]} if run.get("initialised_from") else {})},
        "metrics": metrics or {},
        "build_overrides": {**recipe.build_overrides.get(config, {}),
                            **{k: v for k, v in options.get("recipe_options", {}).items() if k in recipe.model_options}},
    }
    entry = export(checkpoint_path, fields, folder, network=recipe.inference_network)
    write_model_card(entry, folder)
    return entry


def _trained_voxel_size(run_dir: Path, options: dict, recipe, config: str, split: dict) -> float:
    """The grid the run's cases were trained on: the phantom's (its recipe's), ``--voxel-size``'s, or a folder's
    own, read from the cases the run cached."""
    if options["data"].startswith("phantom"):
        return recipe.phantom_resolution[config]
    if options.get("voxel_size_mm"):
        return float(options["voxel_size_mm"])
    if not (run_dir / "cache").is_dir():
        raise InputError(f"{run_dir / 'cache'}: missing; the voxel size the run's cases were trained at is read "
                         "from its cached cases")
    return cached_voxel_size(CaseCache(run_dir / "cache"), split["train"] + split["validation"])


def _orientation_words(orientation: str | None) -> str:
    """The card's words on the grid's orientation: the one trained in, or the reference's own."""
    if orientation is None:
        return "Orientation: the reference's own voxel orientation (not recorded for these weights)"
    return (f"Orientation: voxel axes turned to {orientation}, the orientation it was trained in; the result\n"
            "  returns to the reference's grid")


def _frames_line(frames: dict[str, int], series: dict[str, int]) -> str:
    """The model card's line on 4D inputs: which frame of each series the network sees, or that it takes
    and makes whole series."""
    if series:
        said = ", ".join(f"{name} ({n} frames when synthesized)" for name, n in series.items())
        return (f"\n- 4D series: {said} are taken and made whole, every frame (a series target gets the real "
                "series' frame count when one is given for comparison).")
    if not frames:
        return ""
    said = ", ".join(f"{name} frame {'-1 (the last)' if index == -1 else index}" for name, index in frames.items())
    return f"\n- 4D series: the network sees one frame of each ({said}, counting from 0); the pipeline picks it."


def _best_validation(state: dict, recipe) -> dict:
    """The manifest's record of the checkpoint's best validation figure: PSNR in dB as always, or the
    recipe's own figure (the MP-GAN's 1-NN accuracy), named and described."""
    if "best_score" not in state:  # saved before recipes chose their figure: it is PSNR
        return {"best_validation_psnr_db": round(float(state["best_psnr"]), 3)}
    if state["selection"] == "val_psnr":
        return {"best_validation_psnr_db": round(float(state["best_score"]), 3)}
    return {"best_validation": {"figure": state["selection"], "label": recipe.selection_label,
                                "value": round(float(state["best_score"]), 4)}}


def _validation_line(training: dict) -> str:
    """The card's words for the best validation figure (after "best validation")."""
    if "best_validation" in training:
        best = training["best_validation"]
        return f"{best['label']}: {best['value']}"
    return f"PSNR on normalised patches: {training.get('best_validation_psnr_db')} dB"


def _initialised_line(training: dict) -> str:
    """A fine-tuned model's card names the weights it started from (its steps count from there)."""
    start = training.get("initialised_from")
    return f"\n- Fine-tuned: the generator started from `{start}`; the steps above count from there." if start else ""


def _warm_up_line(training: dict) -> str:
    """The card's limit line when the kept checkpoint comes from a warm-up before the paper's training."""
    warm_up, step = training.get("warm_up_steps", 0), training.get("steps", 0)
    if not warm_up or step > warm_up:
        return ""
    if training.get("steps_run", warm_up + 1) <= warm_up:  # the adversarial phase never began
        return (f"- The run stopped at step {training['steps_run']}, within the warm-up that precedes the paper's "
                f"adversarial training (which begins after step {warm_up}): these weights are the paper's generator "
                "trained without its adversarial terms.\n")
    return (f"- The kept checkpoint (step {step}) is from the warm-up that precedes the paper's adversarial training "
            f"(which begins after step {warm_up}): the adversarial phase scored lower on validation PSNR within "
            "its patience, so these weights are the paper's generator trained without its adversarial terms.\n")


def _steps_run(run_dir: Path, kept: dict, which: str) -> int:
    """How far the run went: its last checkpoint's step (the kept one's, not read again, when that is the last)."""
    from .checkpoint import load

    last = run_dir / "checkpoints" / "last.pt"
    return int(load(last)["step"]) if which != "last" and last.exists() else int(kept["step"])


def write_model_card(entry: WeightsEntry, folder: str | Path | None = None) -> Path:
    """A Markdown model card beside the weights: intended use, inputs, training, measured metrics, limits."""
    from ..selection import translates

    training = entry.training
    data = str(training.get("data", ""))
    phantom = data.startswith("phantom:")
    if translates(entry.model):
        title = f"{' + '.join(entry.inputs)} -> {' + '.join(entry.targets)}"
        preparation = f"""- Sequences, in channel order: {', '.join(entry.inputs)}; output: {', '.join(entry.targets)}.
- Registered to the reference sequence (T1) and resampled to an isotropic {entry.voxel_size_mm:g} mm grid
  (the pipeline does both).
- {_orientation_words(entry.orientation)}.
- Intensities: `{entry.normalization}` normalisation within the `{entry.foreground}` foreground mask
  ({_FOREGROUND_WORDS[entry.foreground]}); the output is mapped back to the reference sequence's intensity scale.
- Inference: {'3D patches of ' + 'x'.join(map(str, entry.patch_size)) + ' voxels, Gaussian-blended' if entry.patch_size else 'whole slices'}.{_frames_line(entry.frames, entry.series)}"""
    else:
        size = entry.build_overrides.get("patch_size", 64)
        title = f"de novo {size} x {size} multiparametric patches ({entry.build_overrides.get('variant', 'dcgan')})"
        preparation = f"""- A generator: noise and a class (benign, malignant, healthy) in, a {size} x {size} patch out with seven
  channels (T2, T1 pre, T1 post 1-4, subtraction post 1 - pre) in [-1, 1], as `mri-synthesis generate` writes.
- Real patches it imitates: {"breast phantom" if phantom else "the training"} cases at {entry.voxel_size_mm:g} mm, `{entry.normalization}` normalisation
  (each series clipped to [0, 2 x p99] within the `{entry.foreground}` foreground mask, {_FOREGROUND_WORDS[entry.foreground]},
  and mapped to [-1, 1])."""
    metric_lines = "\n".join(f"| {k} | {v} |" for k, v in entry.metrics.items()) or "| (not measured yet) | |"
    widths = entry.build_overrides.get("channels")  # train --widths
    configuration = entry.config + (f", widths {'-'.join(map(str, widths))}" if widths else "")
    text = f"""# {entry.model} ({configuration}), {entry.anatomy}: {title}

**Research use only.** {"Trained on the built-in physics phantom only" if phantom else
f"Trained on the cases of `{data}`"}; not validated {"on patient data" if phantom else "clinically"}; not
for diagnosis or treatment decisions.

## Intended use
{"Demonstrating and testing MRISynthesis end to end, and as a starting point for fine-tuning on real data"
 + chr(10) + "(`mri-synthesis train`). Expect it to fail on real scans until retrained on them." if phantom else
 "Research on scans like its training cases (same protocol, scanner and preparation). Measure it on held-out"
 + chr(10) + "cases of your own before relying on it (`mri-synthesis compare`, `mri-synthesis evaluate`)."}

## Inputs and their preparation
{preparation}

## Training
- Command: `{training.get('command', '')}`
- Data: `{training.get('data')}` ({len(training.get('train_cases', []))} training and
  {len(training.get('validation_cases', []))} validation subjects, subject-level split).
- Steps: {training.get('steps')}; checkpoint: {training.get('checkpoint')}; best validation
  {_validation_line(training)}.{_initialised_line(training)}

## Measured{" on held-out phantom subjects" if phantom or entry.metrics else ""}
| metric | value |
| --- | --- |
{metric_lines}

## Limits
- {"Phantom anatomy and contrast only; real scanners, protocols, field strengths and pathologies differ." if phantom
 else f"Learnt from {len(training.get('train_cases', []))} cases only; other scanners, protocols and pathologies differ."}
- Trained at {entry.voxel_size_mm:g} mm; small lesions below that scale are not reproduced.
{"- Trained without the paper's VGG19 perceptual term (its ImageNet weights cannot be had offline)." + chr(10)
 if "--without-perceptual" in training.get("command", "") else ""}{
"- Trained without the adversarial term of the paper's Eq. 2 (on the phantom it cost validation PSNR; the "
"authors' public code trains without one too)." + chr(10)
 if "--without-adversarial" in training.get("command", "") else ""}{_warm_up_line(training)}- File: `{entry.file}`, fp16, sha256 `{entry.sha256}`, {entry.size_bytes} bytes.
"""
    path = models_dir(folder) / f"{Path(entry.file).stem}.md"
    path.write_text(text)
    return path
