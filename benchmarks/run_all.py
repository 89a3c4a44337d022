"""Every benchmark in one go, each printing its table: the suite a user or a reviewer reruns.

Run: python benchmarks/run_all.py [--quick | --complete] [--only synthesis.py ...]
Each script runs in its own process (timings are not disturbed by the previous one's memory), in the
order below. The default settings fit 2 CPU cores in under 15 minutes: one repeat (two for the
registration ratio, on a 2 mm brain), every bundled model at 240 x 240 x 155 but only the 3D U-Net
cT1 (the model whose patches the memory-aware tiling sizes) at 512 x 512 x 300, and the quality table on
one held-out subject (seed 7, the demo's; a second subject took 7 more minutes on 2 cores, which pushed
the suite past 15 minutes). ``--complete`` runs every model at both sizes, the registration at 1 mm and the
quality table on the five held-out subjects of ``evaluate-models`` (about 40 minutes on 2 cores);
``--quick`` is a smoke run. Every script writes
benchmarks/results/<machine>-<name>.json with the machine, package versions and date; this one prints a
summary of which ran and how long each took.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
UNET = "unet-ct1-brain-lite.pt"

#: (script, arguments: default run, --quick, --complete); a script may appear twice with other arguments
SUITE = [
    ("models.py", ["--repeats", "1"], ["--repeats", "1"], ["--repeats", "3"]),
    ("phantom.py", ["--repeats", "1"], ["--resolution", "2", "--repeats", "1"], ["--repeats", "3"]),
    ("registration.py", ["--resolution", "2", "--repeats", "2"], ["--resolution", "2", "--repeats", "1", "--presets", "rigid"],
     ["--repeats", "3"]),
    ("synthesis.py", ["--sizes", "240x240x155"], ["--sizes", "240x240x155", "--models", UNET],
     ["--sizes", "240x240x155", "512x512x300"]),
    ("synthesis.py", ["--sizes", "512x512x300", "--models", UNET, "--name", "synthesis-512"], None, None),
    ("training.py", ["--steps", "3"], ["--steps", "2"], ["--steps", "5"]),
    ("quality.py", ["--seeds", "7"], ["--seeds", "7", "--anatomy", "breast"], []),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller inputs and fewer repeats (a smoke run)")
    size.add_argument("--complete", action="store_true", help="every model at both sizes, five held-out subjects")
    parser.add_argument("--only", nargs="+", help="run only these scripts (for example synthesis.py)")
    args = parser.parse_args()
    summary = []
    began = time.perf_counter()
    for script, default, quick, complete in SUITE:
        arguments = quick if args.quick else complete if args.complete else default
        if arguments is None or (args.only and script not in args.only):
            continue
        print(f"\n=== {script} {' '.join(arguments)} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / script), *arguments], cwd=HERE)
        summary.append((f"{script} {' '.join(arguments)}", code, time.perf_counter() - start))
    print("\n=== summary ===")
    for what, code, seconds in summary:
        print(f"{what[:60]:60s} {'ok' if code == 0 else f'FAILED ({code})':12s} {seconds:7.1f} s")
    print(f"{'total':60s} {'':12s} {time.perf_counter() - began:7.1f} s")
    return 0 if all(code == 0 for _, code, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
