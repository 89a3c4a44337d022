"""Registration overhead: our ``register`` against the bare antspyx calls on the same pair, in one run.

Run: python benchmarks/registration.py [--resolution 1.0] [--repeats 3] [--presets rigid syn]
Prints a table (best of N, seconds, and the ratio ours / bare; the target is < 1.05) and the wrapper's own
cost: our best call's time less the antspyx time measured inside the same call, a share that ANTs'
run-to-run spread (several per cent on shared cores) does not blur. Writes
benchmarks/results/<machine>-registration.json. The pair is a phantom subject's T1 (fixed) and T2
(moving, thick slices, moved by a known rigid motion). Our wrapper adds the conversions, mutual
information before and after, and keeping the transform files. Both run with one ANTs sampling seed, so
they do the same iterations.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _machine import best_of, machine, write_results
from MRISynthesisLib.phantom.brain import sample_brain
from MRISynthesisLib.registration import _repeatable, _run_preset, fields_of_view_overlap, register, to_ants


SEED = 1


def _timed_register(fixed, moving, preset: str) -> tuple[float, float]:
    """(wall seconds of our ``register``, seconds of the antspyx calls inside it)."""
    start = time.perf_counter()
    result = register(fixed, moving, preset, seed=SEED)
    return time.perf_counter() - start, result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["rigid", "syn"])
    args = parser.parse_args()
    subject = sample_brain(21, resolution=args.resolution, n_lesions=1)
    fixed, moving = subject.sequences["T1"], subject.sequences["T2"]

    def bare(preset: str) -> None:
        # the antspyx calls alone, on images already in ANTs' memory, from the start ours would choose and
        # with the same sampling seed: unseeded, ANTs samples other points, converges after another number
        # of iterations and the ratio measures that, not our wrapper
        with tempfile.TemporaryDirectory() as work, _repeatable(SEED, single_thread=False):
            _run_preset(fixed_image, moving_image, preset, Path(work), start_at_identity=start_at_identity)

    fixed_image, moving_image = to_ants(fixed), to_ants(moving)
    start_at_identity = fields_of_view_overlap(fixed, moving)
    rows = []
    for preset in args.presets:
        # interleaved, so a slow spell of the shared machine hits both alike
        pairs = [(best_of(1, lambda: bare(preset)), _timed_register(fixed, moving, preset)) for _ in range(args.repeats)]
        base = min(b for b, _ in pairs)
        ours, inside = min(o for _, o in pairs)
        rows.append({"preset": preset, "bare_s": base, "ours_s": ours, "ratio": ours / base,
                     "wrapper_s": ours - inside, "wrapper_share": (ours - inside) / inside})

    info = machine()
    print(f"Registration overhead — {info['cpu']}, {info['cores']} cores, {info['date']}, package {info['package']}")
    print(f"pair: phantom T1 {fixed.size_xyz} at {fixed.spacing} mm, T2 {moving.size_xyz} at "
          f"{tuple(round(s, 2) for s in moving.spacing)} mm; best of {args.repeats}")
    print(f"{'preset':8s} {'antspyx s':>10s} {'ours s':>8s} {'ours/antspyx':>13s} {'wrapper s':>10s} {'wrapper %':>10s}")
    for row in rows:
        print(f"{row['preset']:8s} {row['bare_s']:10.2f} {row['ours_s']:8.2f} {row['ratio']:13.3f} "
              f"{row['wrapper_s']:10.2f} {100 * row['wrapper_share']:10.1f}")
    write_results("registration", {"machine": info, "resolution_mm": args.resolution, "rows": rows})


if __name__ == "__main__":
    main()
