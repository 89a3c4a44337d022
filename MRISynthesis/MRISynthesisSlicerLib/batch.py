"""Headless synthesis inside Slicer: the same arguments as ``mri-synthesis synthesize``.

    Slicer --no-main-window --python-script <module folder>/MRISynthesisSlicerLib/batch.py -- \\
        --model unet-ct1 --input T1=t1.nii.gz T2=t2.nii.gz FLAIR=flair.nii.gz --target T1ce --out t1ce.nii.gz \\
        [--reference T1] [--register rigid] [--real t1ce-real.nii.gz --error-map err.nii.gz] [--device auto]

Volumes are read with Slicer's readers (so anything Slicer opens works), turned into the library's
volumes by the module's MRML logic, synthesized with the same pipeline as the CLI, and written with
Slicer's writers; the JSON report beside the output is the CLI's. Exit code 2 and one ``error:`` line
for bad input, as the CLI; 1 with the traceback for anything else, so that Slicer exits rather than waits.

It lives in the package, not beside MRISynthesis.py: Slicer loads every ``.py`` at the top of a module
folder as a module of its own at start-up.
"""

import json
import os
import sys
import traceback

import slicer

MODULE_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds MRISynthesisSlicerLib
for folder in (os.path.dirname(MODULE_FOLDER), MODULE_FOLDER):  # a source checkout's root holds MRISynthesisLib
    if folder not in sys.path:
        sys.path.insert(0, folder)


def main(argv):
    from MRISynthesisLib.cli import build_parser
    from MRISynthesisLib.errors import InputError
    from MRISynthesisLib.inputs import SERIES_SEQUENCES
    from MRISynthesisLib.sequences import canonical, parse_assignments
    from MRISynthesisLib.synthesize_cmd import check_outputs, synthesis_report
    from MRISynthesisLib.volume import read_volume, refuse_overwrite, report_path, write_volume
    from MRISynthesisSlicerLib.logic import SynthesisLogic
    from MRISynthesisSlicerLib.nodes import sequence_behind, series_from_node, series_node

    args = build_parser().parse_args(["synthesize", *argv])
    try:
        files = parse_assignments(args.input)
        protected = [*files.values(), *([args.real] if args.real else [])]
        check_outputs(args.out, args.error_map, canonical(args.target), protected)
        if args.error_map and not args.real:
            raise InputError("--error-map needs --real (the acquired target to compare with)")

        def load(seq, path):
            if not os.path.exists(path):
                raise InputError(f"{path}: no such file")
            if canonical(seq) in SERIES_SEQUENCES:  # 4D: the library's reader keeps the frames' JSON sidecar
                return series_node(slicer.mrmlScene, read_volume(path), os.path.basename(path))[0]
            return slicer.util.loadVolume(str(path))

        def save(node, path):
            if sequence_behind(node) is not None:  # a series result: every frame, not the one the views show
                write_volume(series_from_node(node), path, protect=protected)
            else:
                slicer.util.saveNode(node, str(path))

        nodes = {seq: load(seq, path) for seq, path in files.items()}
        real = load(args.target, args.real) if args.real else None
        run = SynthesisLogic(slicer.mrmlScene).synthesize(
            nodes, canonical(args.target), args.model, reference=args.reference and canonical(args.reference),
            register=args.register, device=args.device, real=real, phases=args.phases, mirror=args.mirror)
        save(run.synthesized, args.out)
        if run.error_map is not None and args.error_map:
            save(run.error_map, args.error_map)
        # the CLI's report, from the pipeline's own result (full-precision metrics, registrations, provenance)
        report = synthesis_report(run.result, args.out, args.error_map if run.error_map is not None else None)
        sidecar = report_path(args.out)  # named as the command line names it
        refuse_overwrite(sidecar, protected)
        sidecar.write_text(json.dumps(report, indent=1, allow_nan=False))
        print(f"wrote {args.out}")
        for warning in run.warnings:
            print(f"warning: {warning}")
        return 0
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - a bug, or a reader's RuntimeError: report it and exit, never hang
        traceback.print_exc()
        return 1


def leave(code):
    """Exit Slicer with ``code`` (slicer.util.exit keeps a --testing run from overwriting it), or Python."""
    if getattr(slicer, "app", None) is None:
        sys.exit(code)
    exit_slicer = getattr(getattr(slicer, "util", None), "exit", None)
    exit_slicer(code) if exit_slicer is not None else slicer.app.exit(code)


if __name__ == "__main__":
    leave(main(sys.argv[1:]))
