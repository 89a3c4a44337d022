"""Model sizes and CPU forward time: parameters, MACs, and time per slice or patch, per configuration.

Run: python benchmarks/models.py [--repeats 3] [--paper-timing]
Prints a table and writes benchmarks/results/<machine>-models.json. Parameters and MACs are counted on
the meta device at each configuration's input size (the papers' sizes for ``paper``). Time is one
forward pass, batch 1, of the lite configuration on the CPU (and of the paper one with
``--paper-timing``, slow on a CPU), with the ratio paper / lite measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _machine import machine, write_results
from MRISynthesisLib.models import available, measure


def _time_forward(model, inputs, repeats: int) -> float:
    model.eval()
    with torch.no_grad():
        model(*inputs)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(*inputs)
            times.append(time.perf_counter() - start)
    return float(np.min(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper-timing", action="store_true", help="also time the paper configurations")
    args = parser.parse_args()
    rows = []
    for spec in available():
        times = {}
        for config in ("lite", "paper"):
            parameters, macs = measure(spec, config)
            seconds = None
            if config == "lite" or args.paper_timing:
                torch.manual_seed(0)
                model = spec.build(config)
                seconds = _time_forward(model, spec.example_inputs(model, config, 1), args.repeats)
            times[config] = seconds
            rows.append({"model": spec.name, "config": config, "form": spec.form,
                         "input_size": list(spec.input_size[config]), "parameters_m": parameters / 1e6,
                         "macs_g": macs / 1e9, "cpu_seconds_per_forward": seconds,
                         "paper_parameters_m": spec.paper_parameters_m, "paper_macs_g": spec.paper_macs_g})
        if times["paper"] and times["lite"]:
            rows[-1]["paper_over_lite_time"] = times["paper"] / times["lite"]
    info = machine()
    print(f"Models — {info['cpu']}, {info['cores']} cores, torch {torch.__version__}, {info['date']}")
    print(f"{'model':14s} {'config':6s} {'input':>12s} {'params M':>9s} {'GMACs':>8s} {'CPU s/fwd':>10s} {'paper M/G':>12s}")
    for r in rows:
        size = "x".join(map(str, r["input_size"]))
        t = f"{r['cpu_seconds_per_forward']:.3f}" if r["cpu_seconds_per_forward"] is not None else "-"
        paper = (f"{r['paper_parameters_m']}/{r['paper_macs_g']}" if r["config"] == "paper" and r["paper_parameters_m"]
                 else "")
        print(f"{r['model']:14s} {r['config']:6s} {size:>12s} {r['parameters_m']:9.2f} {r['macs_g']:8.2f} {t:>10s} {paper:>12s}")
    write_results("models", {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
