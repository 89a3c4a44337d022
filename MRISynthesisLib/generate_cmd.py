"""``generate`` and ``evaluate-gan``: de novo multiparametric breast patches with the bundled MP-GAN.

``generate`` writes ``patches.npz`` (``patches.load_patches`` reads it), optionally one NIfTI per channel
(samples stacked along z), and ``sheet.png``: one row per sample (at most 16), one column per channel,
and the sample's mean centre enhancement curve (T1 pre and post 1-4) beside it.

``evaluate-gan`` compares generated patches of each class with real patches of held-out breast phantom
subjects (or a patch file): 1-NN two-sample accuracy (always), FID (when its Inception weights are on
the machine) and the DCE kinetics of each set (washout fraction, time to peak).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import InputError
from .models.mp_gan import CHANNELS, CLASSES, LESION_CLASSES, TRAINING
from .phantom.cases import FIRST_TRAINING_SEED

#: held-out breast phantom seeds for real patches (training uses 10000 and above)
REAL_SEEDS = tuple(range(200, 230))


def held_out_seeds(n: int) -> list[int]:
    """The ``n`` breast phantom seeds of ``--real phantom:breast:N``: 200-229, then 300 on; never a training seed."""
    if n < 1:
        raise InputError(f"--real phantom:breast:{n}: at least one held-out subject is needed")
    seeds = list(REAL_SEEDS[:n]) + list(range(300, 300 + max(0, n - len(REAL_SEEDS))))
    if seeds[-1] >= FIRST_TRAINING_SEED:
        raise InputError(f"--real phantom:breast:{n}: so many subjects would reach the training seeds "
                         f"({FIRST_TRAINING_SEED} on); use at most {FIRST_TRAINING_SEED - 300 + len(REAL_SEEDS)}")
    return seeds


def find_generator(variant: str = "dcgan", weights_folder=None):
    """The bundled MP-GAN entry of ``variant`` and its generator (sha256-checked)."""
    from .weights import load_model

    entry = generator_entry(variant, weights_folder)
    return entry, load_model(entry, weights_folder)


def generator_entry(variant: str = "dcgan", weights_folder=None):
    """The bundled MP-GAN manifest entry of ``variant``."""
    from .weights import read_manifest

    if variant not in TRAINING:
        raise InputError(f"unknown MP-GAN variant '{variant}'; use one of {', '.join(TRAINING)}")
    entries = [e for e in read_manifest(weights_folder)
               if e.model == "mp-gan" and e.build_overrides.get("variant", "dcgan") == variant]
    if not entries:
        raise InputError(f"no bundled MP-GAN {variant} weights; train one with "
                         f"`mri-synthesis train --model mp-gan --data phantom:breast:N` and export it")
    return entries[0]


#: patches made in one call (about 29 KB each in memory): more is a mistake or a job for several seeds
MAX_PATCHES = 10_000


def generate(lesion_class: str, n: int, *, variant: str = "dcgan", seed: int = 0, weights_folder=None) -> np.ndarray:
    """``n`` patches (n, 7, S, S) in [-1, 1] of ``lesion_class`` (benign, malignant or healthy)."""
    if lesion_class not in CLASSES:
        raise InputError(f"unknown class '{lesion_class}'; use one of {', '.join(CLASSES)}")
    if not 1 <= int(n) <= MAX_PATCHES:
        raise InputError(f"--n must be from 1 to {MAX_PATCHES}, not {n} (run again with other seeds for more)")
    if not 0 <= seed < 2 ** 32:
        raise InputError(f"--seed must be from 0 to 2**32 - 1, not {seed}")
    _, generator = find_generator(variant, weights_folder)
    return generator.sample(int(n), lesion_class, seed=seed).float().numpy()


def write_sheet(patches: np.ndarray, path: Path, title: str, rows: int = 16) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .gan_eval import centre_curves

    shown = patches[:rows]
    curves = centre_curves(shown)
    fig, axes = plt.subplots(len(shown), len(CHANNELS) + 1, figsize=(1.3 * (len(CHANNELS) + 1), 1.3 * len(shown)),
                             squeeze=False)
    for r, patch in enumerate(shown):
        for c, name in enumerate(CHANNELS):
            axes[r, c].imshow(patch[c], cmap="gray", vmin=-1, vmax=1)
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(name, fontsize=7)
        axes[r, -1].plot(range(5), curves[r], marker="o", markersize=2)
        axes[r, -1].set_ylim(-1, 1)
        axes[r, -1].set_xticks([])
        axes[r, -1].tick_params(labelsize=5)
    axes[0, -1].set_title("DCE curve", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def run_generate(lesion_class: str, n: int, out: str | Path, *, variant: str = "dcgan", seed: int = 0,
                 nifti: bool = False, weights_folder=None) -> Path:
    from .patches import save_patches
    from .volume import Volume, output_folder, write_volume

    patches = generate(lesion_class, n, variant=variant, seed=seed, weights_folder=weights_folder)
    out = output_folder(out)
    save_patches(out / "patches.npz", patches, np.full(len(patches), CLASSES.index(lesion_class)))
    if nifti:  # the patches stacked along z, at the voxel size the generator was trained at
        mm = generator_entry(variant, weights_folder).voxel_size_mm
        for c, name in enumerate(CHANNELS):
            write_volume(Volume(np.ascontiguousarray(patches[:, c]), (mm, mm, mm)), out / f"{lesion_class}-{name}.nii.gz")
    write_sheet(patches, out / "sheet.png", f"MP-GAN {variant}, {lesion_class}, seed {seed} (research use only)")
    return out


def real_patches(data: str, size: int, foreground: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Real patches: a patch file, or ``phantom:breast[:N]`` held-out subjects (N, default 30), normalised
    within ``foreground`` (the generator's, from its manifest entry; the recipe's when None)."""
    from .patches import extract_patches, load_patches

    if not data.startswith("phantom:"):
        return load_patches(data)
    parts = data.split(":")
    if parts[1] != "breast":
        raise InputError(f"--real {data}: real patches come from breast subjects (phantom:breast[:N])")
    try:
        n = int(parts[2]) if len(parts) > 2 else len(REAL_SEEDS)
    except ValueError as err:
        raise InputError(f"--real {data}: the number of subjects must be an integer") from err
    from .training.data import PhantomSource

    from .training.recipes.mp_gan import MPGANRecipe
    source = PhantomSource("breast", held_out_seeds(n), sequences=("T2", "DCE"), scheme=MPGANRecipe.normalization,
                           resolution=MPGANRecipe.phantom_resolution["lite" if size == 32 else "paper"],
                           foreground=foreground or MPGANRecipe.foreground)
    pools = []
    for k, name in enumerate(source.names()):
        case = source.build(name)
        pools.append(extract_patches(case.volumes, case.labels, case.organ_or_foreground, np.random.default_rng(k),
                                     size=size, healthy=8))
    return np.concatenate([p for p, _ in pools]), np.concatenate([c for _, c in pools])


def run_evaluate_gan(real: str, out: str | Path | None, *, variant: str = "dcgan", n: int = 200, seed: int = 0,
                     device: str = "cpu", weights_folder=None, say=print) -> dict:
    """Per class: 1-NN accuracy, FID (or why not) and kinetics of generated against real patches."""
    from .gan_eval import dce_statistics, fid, one_nn_accuracy

    if out is not None and Path(out).exists() and not Path(out).is_dir():  # before minutes of work
        raise InputError(f"{out}: exists and is not a folder")
    entry, _ = find_generator(variant, weights_folder)
    size = int(entry.build_overrides.get("patch_size", 64))
    patches, classes = real_patches(real, size, entry.foreground)
    report = {"weights": entry.file, "variant": variant, "real": real, "classes": {}}
    if not real.startswith("phantom:"):
        from .patches import patch_source
        origin = patch_source(real)  # a file evaluate-gan wrote from held-out subjects says which
        if origin is not None:
            report.update(real=origin, real_file=str(real))
    for k, name in enumerate(CLASSES):
        mine = patches[classes == k]
        if len(mine) < 2:
            say(f"{name}: {len(mine)} real patches, not enough to compare; skipped")
            continue
        fake = generate(name, max(n, len(mine)), variant=variant, seed=seed + k, weights_folder=weights_folder)
        fid_result = fid(mine, fake, device=device)
        report["classes"][name] = {
            "real_patches": len(mine), "generated_patches": len(fake),
            "one_nn_accuracy": one_nn_accuracy(mine, fake[:len(mine)]),
            "fid": fid_result.value, "fid_note": fid_result.message,
            "real_kinetics": dce_statistics(mine).to_dict(), "generated_kinetics": dce_statistics(fake).to_dict()}
    if not report["classes"]:
        raise InputError("no class has enough real patches to compare")
    if out is not None:
        from .patches import save_patches
        from .volume import output_folder
        folder = output_folder(out)
        (folder / "evaluate-gan.json").write_text(json.dumps(report, indent=1))
        if real.startswith("phantom:"):  # reusable with --real for the next evaluation
            save_patches(folder / "real-patches.npz", patches, classes, source=real)
    return report


def manifest_metrics(report: dict) -> dict[str, str]:
    """The manifest/model-card form of an ``evaluate-gan`` report, with the targets' verdicts."""
    metrics = {"real patches": f"{report['real']} (held-out breast phantom subjects)" if report["real"].startswith(
        "phantom:") else report["real"]}
    for name, row in report["classes"].items():
        real_w, gen_w = row["real_kinetics"]["washout_fraction"], row["generated_kinetics"]["washout_fraction"]
        metrics[f"{name}: 1-NN accuracy"] = f"{row['one_nn_accuracy']:.3f} ({row['real_patches']} real vs as many generated)"
        metrics[f"{name}: washout real / generated"] = f"{real_w:.2f} / {gen_w:.2f} ({100 * abs(gen_w - real_w):.0f} pp)"
        metrics[f"{name}: FID"] = f"{row['fid']:.2f}" if row["fid"] is not None else "unavailable (Inception weights offline)"
    accuracies = [row["one_nn_accuracy"] for row in report["classes"].values()]
    gaps = [abs(row["generated_kinetics"]["washout_fraction"] - row["real_kinetics"]["washout_fraction"])
            for name, row in report["classes"].items() if name in LESION_CLASSES]
    metrics["verdict"] = (f"1-NN accuracy {'below' if max(accuracies) < 0.8 else 'NOT below'} 0.8 for every class "
                          f"(max {max(accuracies):.2f}); washout proportions of {' and '.join(LESION_CLASSES)} "
                          f"{'within' if gaps and max(gaps) <= 0.15 else 'NOT within'} 15 pp of the real ones")
    return metrics
