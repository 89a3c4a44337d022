"""Whole-volume synthesis: time and peak memory per bundled model and volume size, on CPU (and CUDA).

Run: python benchmarks/synthesis.py [--sizes 240x240x155 512x512x300] [--device cpu] [--register none]
Each (model, size) runs in a fresh process, so its peak resident memory (RSS; on CUDA also the peak
allocated GPU memory) is its own; on Linux the RSS peak is counted from the start of the synthesis, with
its inputs already in memory (as after reading them from files), not from building them. The inputs are smooth synthetic volumes at 1 mm on the given grid
(timing does not depend on anatomy); the pipeline resamples them to the model's voxel size, normalises,
predicts and maps back. On CUDA each row is the second synthesis in its process (the first, which
pays for the CUDA context and cuDNN's kernel choice, is shown as "1st s"). Printed per row: total
seconds, the share spent in registration (``--register``;
``none`` by default, ``rigid`` shows its share), in the network and in the rest (resampling,
normalisation), the peak memory, the ratio total / network: how much the pipeline adds to the bare
network pass measured in the same run, and the throughput: how many slices (2D and 2.5D models) or 3D
patches the network was given, and how many per second of network time. Results go to
benchmarks/results/<machine>-synthesis.json.
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

    from MRISynthesisLib.inputs import SERIES_SEQUENCES
    from MRISynthesisLib.volume import Volume

    x, y, z = size
    rng = np.random.default_rng(0)
    grid = np.indices((z // 8 + 1, y // 8 + 1, x // 8 + 1)).astype(np.float32)
    # one float32 ellipsoid for all sequences: the inputs should not cost more memory than the synthesis
    zz, yy, xx = (np.linspace(-1, 1, n, dtype=np.float32) / 0.9 for n in (z, y, x))
    inside = zz[:, None, None] ** 2 + yy[None, :, None] ** 2 + xx[None, None, :] ** 2 < 1
    volumes = {}
    for k, name in enumerate(names):
        coarse = rng.uniform(200, 1200, grid.shape[1:]).astype(np.float32)
        array = ndimage.zoom(coarse, (z / coarse.shape[0], y / coarse.shape[1], x / coarse.shape[2]), order=1)
        np.multiply(array, inside, out=array)
        if name in SERIES_SEQUENCES:
            # a 4D input (DWI, DCE) as a two-frame series, filled in place (no stacked copies): the
            # pipeline feeds the model the frame it was trained on, or every frame
            series = np.empty((2, *array.shape), np.float32)
            series[0] = array
            np.multiply(array, np.float32(1.2), out=series[1])
            array = series
        volumes[name] = Volume.adopting(array, (1.0, 1.0, 1.0))  # held once, as a reader's output is
    return volumes


def _peak_rss_gib() -> float:
    """The process's peak resident memory since :func:`_reset_peak_rss` (Linux), else since it started."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 2**20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _reset_peak_rss() -> None:
    """Start the peak-memory count afresh (Linux: ``5`` to ``/proc/self/clear_refs``), so the peak is the
    synthesis's, with its inputs resident, and not that of building the synthetic inputs."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def _limit_address_space(gib: float | None) -> None:
    """``ulimit -v`` for this (child) process, set before torch is imported so the limit binds it all."""
    if gib:
        limit = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _one(model_file: str, size: str, device: str, register: str, fixed_budget: bool = False) -> dict:
    """Child process: one synthesis with stage timings, the batches and patches it chose, and this
    process's peak memory."""
    import torch

    from MRISynthesisLib import inference, pipeline, predictors
    from MRISynthesisLib.weights import read_manifest

    entry = next(e for e in read_manifest() if e.file == model_file)
    shape = tuple(int(v) for v in size.split("x"))
    target = entry.targets[0]
    inputs = _inputs(shape, [s for s in entry.inputs if s != target])  # an any-to-any model: every other one
    spent = {"network": 0.0, "registration": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return wrapper

    processed = {"slices": 0, "patches": 0}

    def counted(unit, fn):
        """``fn`` with its predictor wrapped to count the slices or patches the network is given."""
        def wrapper(predictor, *args, **kwargs):
            def counting(batch):
                processed[unit] += int(batch.shape[0])
                return predictor(batch)
            return fn(counting, *args, **kwargs)
        return wrapper

    predictors.predict_patches = timed("network", counted("patches", inference.predict_patches))
    predictors.predict_slices = timed("network", counted("slices", inference.predict_slices))
    pipeline.run_registration = timed("registration", pipeline.run_registration)
    chosen = {"batch": [], "patch": []}
    choose_batch, choose_patch = inference.batch_size_for, inference.fitting_patch

    def record_batch(*args, **kwargs):
        chosen["batch"].append(choose_batch(*args, **kwargs))
        return chosen["batch"][-1]

    def record_patch(*args, **kwargs):
        chosen["patch"].append(list(choose_patch(*args, **kwargs)))
        return tuple(chosen["patch"][-1])
    inference.batch_size_for, inference.fitting_patch = record_batch, record_patch
    if fixed_budget:  # the baseline: the engine's 1 GiB budget whatever memory is left
        inference.cpu_budget_bytes = lambda: inference.CPU_BUDGET_BYTES
    def run() -> float:
        _reset_peak_rss()
        start = time.perf_counter()
        pipeline.synthesize(inputs, target, entry.model, anatomy=entry.anatomy, register=register, device=device)
        return time.perf_counter() - start

    on_cuda = device.startswith("cuda")
    first_s = None
    if on_cuda:  # the first call pays for the CUDA context and cuDNN's kernel choice: time the second
        first_s = run()
        spent.update(network=0.0, registration=0.0)
        chosen.update(batch=[], patch=[])
        processed.update(slices=0, patches=0)
        torch.cuda.reset_peak_memory_stats()
    total = run()
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if on_cuda else None
    units = "patches" if processed["patches"] else "slices"
    return {"model": entry.file, "size": size, "device": device, "register": register, "total_s": total,
            "registration_s": spent["registration"], "network_s": spent["network"],
            "rest_s": total - spent["network"] - spent["registration"],
            "peak_rss_gib": _peak_rss_gib(), "peak_gpu_gib": peak_gpu,
            "ratio_total_over_network": total / max(spent["network"], 1e-9), "first_call_s": first_s,
            "batch_sizes": sorted(set(chosen["batch"])), "patch": chosen["patch"][0] if chosen["patch"] else None,
            "units": units, "processed": processed[units],
            "per_network_s": processed[units] / max(spent["network"], 1e-9)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["240x240x155", "512x512x300"], help="x by y by z voxels (1 mm)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--register", default="none", choices=("none", "rigid", "affine", "syn"))
    parser.add_argument("--models", nargs="*", help="weight files (default: every bundled one with a synthesis plan)")
    parser.add_argument("--address-space-gib", type=float,
                        help="run each synthesis under this address-space limit (ulimit -v): the engine must "
                             "tile finer (smaller batches and patches) instead of failing")
    parser.add_argument("--fixed-budget", action="store_true",
                        help="baseline: ignore the memory left and use the 1 GiB CPU budget (what a memory-blind "
                             "engine would do)")
    parser.add_argument("--name", help="results file name (default: synthesis, with the limit and budget)")
    parser.add_argument("--one", nargs=2, metavar=("FILE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _limit_address_space(args.address_space_gib)
        print(json.dumps(_one(args.one[0], args.one[1], args.device, args.register, args.fixed_budget)))
        return 0

    from MRISynthesisLib.predictors import _PLANS
    from MRISynthesisLib.weights import read_manifest

    files = args.models or [e.file for e in read_manifest() if e.model in _PLANS]
    rows = []
    if args.address_space_gib:
        print(f"address space limited to {args.address_space_gib:g} GiB per synthesis (ulimit -v)")
    on_cuda = args.device.startswith("cuda")
    info = machine()
    print(f"Synthesis — {info['cpu']}, {info['cores']} cores, GPU {info['gpu'] or 'none'}, device {args.device}, "
          f"torch {info['versions']['torch']}, {info['date']}")
    gpu_header = f" {'GPU GiB':>8} {'1st s':>6}" if on_cuda else ""
    print(f"{'weights':34} {'size':>12} {'total s':>8} {'reg %':>6} {'net %':>6} {'rest %':>6} {'RSS GiB':>8} "
          f"{'total/net':>9} {'batch':>6} {'patch':>10} {'through the network':>22}{gpu_header}")
    for file in files:
        for size in args.sizes:
            limit = ["--address-space-gib", str(args.address_space_gib)] if args.address_space_gib else []
            limit += ["--fixed-budget"] if args.fixed_budget else []
            done = subprocess.run([sys.executable, __file__, "--one", file, size, "--device", args.device,
                                   "--register", args.register, *limit], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{file:34} {size:>12} failed: {done.stderr.strip().splitlines()[-1:]}")
                rows.append({"model": file, "size": size, "error": done.stderr[-2000:]})
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            share = {k: 100 * row[f"{k}_s"] / row["total_s"] for k in ("registration", "network", "rest")}
            print(f"{file:34} {size:>12} {row['total_s']:8.1f} {share['registration']:6.1f} {share['network']:6.1f} "
                  f"{share['rest']:6.1f} {row['peak_rss_gib']:8.2f} {row['ratio_total_over_network']:9.2f} "
                  f"{','.join(map(str, row['batch_sizes'])):>6} {'x'.join(map(str, row['patch'] or ['-'])):>10}"
                  f" {row['processed']:5d} {row['units']:7s} {row['per_network_s']:6.1f}/s"
                  + (f" {row['peak_gpu_gib']:8.2f} {row['first_call_s']:6.1f}" if on_cuda else ""))
    suffixes = ["" if args.device == "cpu" else "-" + args.device.replace(":", ""),
                f"-limit-{args.address_space_gib:g}gib" if args.address_space_gib else "",
                "-fixed-budget" if args.fixed_budget else ""]
    name = args.name or "synthesis" + "".join(suffixes)
    write_results(name, {"machine": info, "address_space_gib": args.address_space_gib, "rows": rows})
    # a failed row fails the script (run_all reports it), except under a memory limit, where failing is a result
    return 1 if any("error" in r for r in rows) and not args.address_space_gib else 0


if __name__ == "__main__":
    sys.exit(main())
