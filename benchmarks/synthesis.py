"""Whole-volume synthesis: time and peak memory per bundled model and volume size, on CPU (and CUDA).

Run: python benchmarks/synthesis.py [--sizes 240x240x155 512x512x300] [--device cpu] [--register none]
Each (model, size) runs in a fresh process, so its peak resident memory (RSS; on CUDA also the peak
allocated GPU memory) is its own. The inputs are smooth synthetic volumes at 1 mm on the given grid
(timing does not depend on anatomy); the pipeline resamples them to the model's voxel size, normalises,
predicts and maps back. Printed per row: total seconds, the share spent in registration (``--register``;
``none`` by default, ``rigid`` shows its share), in the network and in the rest (resampling,
normalisation), the peak memory, and the ratio total / network: how much the pipeline adds to the bare
network pass measured in the same run. Results go to benchmarks/results/<machine>-synthesis.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from _machine import machine, write_results


def _inputs(size: tuple[int, int, int], names) -> dict:
    from scipy import ndimage

    from MRISynthesisLib.volume import Volume

    x, y, z = size
    rng = np.random.default_rng(0)
    grid = np.indices((z // 8 + 1, y // 8 + 1, x // 8 + 1)).astype(np.float32)
    volumes = {}
    for k, name in enumerate(names):
        coarse = rng.uniform(200, 1200, grid.shape[1:]).astype(np.float32)
        array = ndimage.zoom(coarse, (z / coarse.shape[0], y / coarse.shape[1], x / coarse.shape[2]), order=1)
        zz, yy, xx = np.ogrid[:z, :y, :x]
        inside = ((zz - z / 2) / (0.45 * z)) ** 2 + ((yy - y / 2) / (0.45 * y)) ** 2 + ((xx - x / 2) / (0.45 * x)) ** 2 < 1
        volumes[name] = Volume(np.where(inside, array, 0).astype(np.float32), (1.0, 1.0, 1.0))
    return volumes


def _one(model_file: str, size: str, device: str, register: str) -> dict:
    """Child process: one synthesis with stage timings and this process's peak memory."""
    import torch

    from MRISynthesisLib import inference, pipeline
    from MRISynthesisLib.weights import read_manifest

    entry = next(e for e in read_manifest() if e.file == model_file)
    shape = tuple(int(v) for v in size.split("x"))
    inputs = _inputs(shape, entry.inputs)
    spent = {"network": 0.0, "registration": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return wrapper

    pipeline.predict_patches = timed("network", inference.predict_patches)
    pipeline.predict_slices = timed("network", inference.predict_slices)
    pipeline.run_registration = timed("registration", pipeline.run_registration)
    start = time.perf_counter()
    pipeline.synthesize(inputs, entry.targets[0], entry.model, anatomy=entry.anatomy, register=register, device=device)
    total = time.perf_counter() - start
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"model": entry.file, "size": size, "device": device, "register": register, "total_s": total,
            "registration_s": spent["registration"], "network_s": spent["network"],
            "rest_s": total - spent["network"] - spent["registration"],
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak_gpu_gib": peak_gpu,
            "ratio_total_over_network": total / max(spent["network"], 1e-9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["240x240x155", "512x512x300"], help="x by y by z voxels (1 mm)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--register", default="none", choices=("none", "rigid", "affine", "syn"))
    parser.add_argument("--models", nargs="*", help="weight files (default: every bundled one with a synthesis plan)")
    parser.add_argument("--one", nargs=2, metavar=("FILE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one[0], args.one[1], args.device, args.register)))
        return

    from MRISynthesisLib.predictors import _PLANS
    from MRISynthesisLib.weights import read_manifest

    files = args.models or [e.file for e in read_manifest() if e.model in _PLANS]
    rows = []
    print(f"{'weights':34} {'size':>12} {'total s':>8} {'reg %':>6} {'net %':>6} {'rest %':>6} {'RSS GiB':>8} "
          f"{'total/net':>9}")
    for file in files:
        for size in args.sizes:
            done = subprocess.run([sys.executable, __file__, "--one", file, size, "--device", args.device,
                                   "--register", args.register], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{file:34} {size:>12} failed: {done.stderr.strip().splitlines()[-1:]}")
                rows.append({"model": file, "size": size, "error": done.stderr[-2000:]})
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            share = {k: 100 * row[f"{k}_s"] / row["total_s"] for k in ("registration", "network", "rest")}
            print(f"{file:34} {size:>12} {row['total_s']:8.1f} {share['registration']:6.1f} {share['network']:6.1f} "
                  f"{share['rest']:6.1f} {row['peak_rss_gib']:8.2f} {row['ratio_total_over_network']:9.2f}")
    write_results("synthesis", {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
