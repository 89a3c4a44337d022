"""Training throughput per model with a recipe: samples/s on the CPU (and CUDA when present), with the
time spent drawing batches shown apart from the optimisation step, so a starved GPU is visible.

Run: python benchmarks/training.py [--steps 5] [--device auto]
Uses two phantom subjects at the recipe's phantom resolution, cached in a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from _machine import machine, write_results
from MRISynthesisLib.errors import InputError
from MRISynthesisLib.inference import choose_device
from MRISynthesisLib.training.data import CaseCache, PhantomSource, load_cases
from MRISynthesisLib.training.recipes import NAMES, recipe_for


def _options(recipe_cls) -> dict:
    """Measure the full loss where its weights exist; TC-MGAN's steps timed in the GAN phase."""
    import torchvision.models as tvm

    from MRISynthesisLib.perceptual import checkpoint_path

    options = {}
    if recipe_cls.uses_perceptual:
        options["perceptual"] = "imagenet" if checkpoint_path(tvm.VGG19_Weights.IMAGENET1K_V1).exists() else "off"
    if recipe_cls.model == "tc-mgan":
        options["segmenter_steps"] = 0
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = choose_device(args.device)
    rows = []
    for name in NAMES:
        try:
            recipe_cls = recipe_for(name)
        except InputError as err:
            print(f"{name}: {err}")
            continue
        source = PhantomSource(recipe_cls.anatomy, [10000, 10001], sequences=recipe_cls.sequences,
                               scheme=recipe_cls.normalization, resolution=recipe_cls.phantom_resolution["lite"])
        with tempfile.TemporaryDirectory() as folder:
            cases = load_cases(source, source.names(), CaseCache(folder))
        torch.manual_seed(0)
        recipe = recipe_cls("lite", device, **_options(recipe_cls))
        batch_size = recipe.batch_size["lite"]
        data_s = step_s = 0.0
        for step in range(args.steps + 1):  # the first step warms up and is not counted
            began = time.perf_counter()
            batch = recipe.to_tensors(recipe.make_batch(cases, np.random.default_rng([0, step]), batch_size))
            loaded = time.perf_counter()
            recipe.train_step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:
                data_s += loaded - began
                step_s += time.perf_counter() - loaded
        total = data_s + step_s
        rows.append({"model": name, "config": "lite", "device": str(device), "batch": batch_size,
                     "perceptual": _options(recipe_cls).get("perceptual", "-"),
                     "samples_per_s": args.steps * batch_size / total, "data_share": data_s / total})
    info = machine()
    print(f"Training throughput — {info['cpu']}, {info['cores']} cores, {device}, {info['date']}")
    print(f"{'model':14s} {'config':6s} {'batch':>5s} {'perceptual':>10s} {'samples/s':>10s} {'data share':>11s}")
    for r in rows:
        print(f"{r['model']:14s} {r['config']:6s} {r['batch']:5d} {r['perceptual']:>10s} {r['samples_per_s']:10.2f} "
              f"{r['data_share']:10.1%}")
    write_results("training", {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
