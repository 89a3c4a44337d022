"""Registration overhead: our ``register`` against the bare antspyx calls on the same pair, in one run.

Run: python benchmarks/registration.py [--resolution 1.0] [--repeats 3] [--presets rigid syn]
Prints a table (best of N, seconds, and the ratio ours / bare; the target is < 1.05) and writes
benchmarks/results/<machine>-registration.json. The pair is a phantom subject's T1 (fixed) and T2
(moving, thick slices, moved by a known rigid motion). Our wrapper adds the conversions, mutual
information before and after, and keeping the transform files.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _machine import best_of, machine, write_results
from MRISynthesisLib.phantom.brain import sample_brain
from MRISynthesisLib.registration import _run_preset, fields_of_view_overlap, register, to_ants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["rigid", "syn"])
    args = parser.parse_args()
    subject = sample_brain(21, resolution=args.resolution, n_lesions=1)
    fixed, moving = subject.sequences["T1"], subject.sequences["T2"]

    def bare(preset: str) -> None:
        # the antspyx calls alone, on images already in ANTs' memory, from the start ours would choose
        with tempfile.TemporaryDirectory() as work:
            _run_preset(fixed_image, moving_image, preset, Path(work), start_at_identity=start_at_identity)

    fixed_image, moving_image = to_ants(fixed), to_ants(moving)
    start_at_identity = fields_of_view_overlap(fixed, moving)
    rows = []
    for preset in args.presets:
        base = best_of(args.repeats, lambda: bare(preset))
        ours = best_of(args.repeats, lambda: register(fixed, moving, preset, seed=1))
        rows.append({"preset": preset, "bare_s": base, "ours_s": ours, "ratio": ours / base})

    info = machine()
    print(f"Registration overhead — {info['cpu']}, {info['cores']} cores, {info['date']}, package {info['package']}")
    print(f"pair: phantom T1 {fixed.size_xyz} at {fixed.spacing} mm, T2 {moving.size_xyz} at "
          f"{tuple(round(s, 2) for s in moving.spacing)} mm; best of {args.repeats}")
    print(f"{'preset':8s} {'antspyx s':>10s} {'ours s':>8s} {'ours/antspyx':>13s}")
    for row in rows:
        print(f"{row['preset']:8s} {row['bare_s']:10.2f} {row['ours_s']:8.2f} {row['ratio']:13.3f}")
    write_results("registration", {"machine": info, "resolution_mm": args.resolution, "rows": rows})


if __name__ == "__main__":
    main()
