"""Phantom generation speed: time per subject, and what each sequence adds to the anatomy alone.

Run: python benchmarks/phantom.py [--resolution 1.0] [--repeats 3]
Prints a table and writes benchmarks/results/<machine>-phantom.json. Per-sequence costs are reported as
a ratio to the anatomy-only baseline measured in the same run (absolute seconds depend on the machine).
"""

from __future__ import annotations

import argparse
import time

from MRISynthesisLib import __version__
from MRISynthesisLib.phantom import brain, sample

from _machine import best_of, machine, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=float, default=1.0, help="brain reference voxel size, mm")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    sample("brain", 0, resolution=args.resolution, sequences=())
    cold = time.perf_counter() - start  # includes loading the MNI template once per process
    rows = []
    anatomy = best_of(args.repeats, lambda: sample("brain", 1, resolution=args.resolution, sequences=()))
    rows.append(("brain anatomy only (baseline)", anatomy, 1.0))
    for seq in brain.BRAIN_SEQUENCES:
        t = best_of(args.repeats, lambda: sample("brain", 1, resolution=args.resolution, sequences=(seq,)))
        rows.append((f"brain + {seq}", t, t / anatomy))
    full = best_of(args.repeats, lambda: sample("brain", 1, resolution=args.resolution))
    rows.append(("brain subject, all sequences", full, full / anatomy))
    breast_t = best_of(args.repeats, lambda: sample("breast", 1))
    rows.append(("breast subject, all sequences (1.25 mm)", breast_t, breast_t / anatomy))

    info = machine()
    print(f"Phantom generation — {info['cpu']}, {info['cores']} cores, {info['date']}, package {__version__}")
    print(f"brain reference grid {args.resolution} mm; first call (template load) {cold:.2f} s; best of {args.repeats}")
    print(f"{'what':44s} {'seconds':>8s} {'x anatomy':>10s}")
    for name, seconds, ratio in rows:
        print(f"{name:44s} {seconds:8.2f} {ratio:10.2f}")
    write_results("phantom", {"machine": info, "resolution_mm": args.resolution, "first_call_s": cold,
                              "rows": [{"what": n, "seconds": s, "ratio_to_anatomy": r} for n, s, r in rows]})


if __name__ == "__main__":
    main()
