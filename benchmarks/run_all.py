"""Every benchmark in one go, each printing its table: the suite a user or a reviewer reruns.

Run: python benchmarks/run_all.py [--quick]
Each script runs in its own process (timings are not disturbed by the previous one's memory), in the
order below, with the settings that fit 2 CPU cores in about 15 minutes (``--quick``: smaller volumes
and fewer repeats, for a smoke run). Every script writes benchmarks/results/<machine>-<name>.json with
the machine, package versions and date; this one prints a summary of which ran and how long each took.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (script, arguments for the full run, arguments for --quick)
SUITE = [
    ("models.py", ["--repeats", "2"], ["--repeats", "1"]),
    ("phantom.py", ["--repeats", "2"], ["--resolution", "2", "--repeats", "1"]),
    ("registration.py", ["--repeats", "2"], ["--resolution", "2", "--repeats", "1", "--presets", "rigid"]),
    ("synthesis.py", ["--sizes", "240x240x155", "512x512x300"], ["--sizes", "240x240x155"]),
    ("training.py", ["--steps", "3"], ["--steps", "2"]),
    ("quality.py", [], ["--seeds", "7"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs and fewer repeats (a smoke run)")
    parser.add_argument("--only", nargs="+", help="run only these scripts (for example synthesis.py)")
    args = parser.parse_args()
    summary = []
    for script, full, quick in SUITE:
        if args.only and script not in args.only:
            continue
        print(f"\n=== {script} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / script), *(quick if args.quick else full)], cwd=HERE)
        summary.append((script, code, time.perf_counter() - start))
    print("\n=== summary ===")
    for script, code, seconds in summary:
        print(f"{script:18s} {'ok' if code == 0 else f'FAILED ({code})':12s} {seconds:7.1f} s")
    return 0 if all(code == 0 for _, code, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
