"""Quality of every bundled model on held-out phantom subjects, beside voxel-wise baselines.

Run: python benchmarks/quality.py [--anatomy brain] [--seeds 7 8 9 11 12]
Prints SSIM, PSNR (dB), NMSE and MAE (mean ± SD over subjects; inside the foreground, on z-scored
intensities) for each model, for linear-regression and gradient-boosting baselines fitted on
training-seed subjects and for the ceiling (each target without noise and bias field; see
MRISynthesisLib.quality), and writes benchmarks/results/<machine>-quality.json.
"""

from __future__ import annotations

import argparse

from _machine import machine, write_results
from MRISynthesisLib.quality import HEADLINE, HELD_OUT_SEEDS, evaluate_bundled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anatomy")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(HELD_OUT_SEEDS))
    args = parser.parse_args()
    results = evaluate_bundled(args.anatomy, tuple(args.seeds))
    info = machine()
    print(f"\nQuality on held-out phantom subjects — {info['date']}, package {info['package']}")
    print(f"{'weights':28s} {'target':6s} {'method':14s} " + " ".join(f"{k.upper():>15s}" for k in HEADLINE))
    for r in results:
        for method, stats in r["methods"].items():
            cells = " ".join(f"{stats[k]['mean']:8.3f} ± {stats[k]['sd']:5.3f}" for k in HEADLINE)
            print(f"{r['weights']:28s} {r['target']:6s} {method:14s} {cells}")
    write_results("quality", {"machine": info, "results": results})


if __name__ == "__main__":
    main()
