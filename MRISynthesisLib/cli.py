"""The ``mri-synthesis`` command line (also ``python -m MRISynthesisLib``).

One contract for users, tests and batch scripts (see ``design.md``): exit 0 on success; 2 for bad input
or usage, with a single ``error: …`` line on stderr and no traceback; 1 only for a bug. No command ever
writes over an input file.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Callable, Sequence

from . import __version__, RESEARCH_USE_NOTICE
from .errors import InputError

ANATOMIES = ("brain", "breast")
TRANSFORMS = ("rigid", "affine", "syn")
MODEL_NAMES = ("important-net", "seq2seq", "tc-mgan", "unet-ct1", "mp-gan")
#: the models that synthesize a sequence from others (MP-GAN generates lesion patches from noise instead)
SYNTHESIS_MODELS = tuple(m for m in MODEL_NAMES if m != "mp-gan")
MIRROR_HELP = ("test-time mirroring: average with the mirrored prediction of the mirrored inputs "
               "(twice the inference time, a few tenths of a dB)")


class _Parser(argparse.ArgumentParser):
    """argparse with the contract's one-line error and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


# --------------------------------------------------------------------- handlers
def _cmd_check(args: argparse.Namespace) -> int:
    from .inputs import check_files
    from .sequences import parse_assignments

    volumes, problems = check_files(parse_assignments(args.input), same_grid=args.same_grid)
    for name, vol in volumes.items():
        frames = f", {vol.shape[0]} frames" if vol.is_series else ""
        spacing = "x".join(f"{s:g}" for s in vol.spacing)
        print(f"{name}: {vol.size_xyz[0]}x{vol.size_xyz[1]}x{vol.size_xyz[2]} voxels at {spacing} mm{frames}, "
              f"range [{float(vol.array.min()):g}, {float(vol.array.max()):g}]")
    for problem in problems:  # every bad file, not only the first: one line each
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 2
    print("ok: every input is readable, finite and non-empty" + (", on one grid" if args.same_grid else ""))
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    from .register_cmd import run_register

    if args.single_thread:  # before ANTs' first use: it reads the thread count once per process
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    run_register(args.fixed, args.moving, args.transform, args.out, seed=args.seed, single_thread=args.single_thread)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate_cmd import run_evaluate

    return run_evaluate(args.real, args.synth, args.mask, args.json, data_range=args.data_range)


def _cmd_synthesize(args: argparse.Namespace) -> int:
    from .synthesize_cmd import run_synthesize

    run_synthesize(args.model, args.input, args.target, args.out, reference=args.reference, register=args.register,
                   real=args.real, error_map_path=args.error_map, device=args.device, phases=args.phases,
                   progress="lines" if args.progress_lines else not args.quiet, mirror=args.mirror,
                   anatomy=args.anatomy)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .synthesize_cmd import run_demo

    run_demo(args.out, args.anatomy, args.model, args.device, args.seed)
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command as the user typed it, for run records and model cards."""
    import shlex

    return "mri-synthesis " + shlex.join(args.argv)


def _variant_option(model: str, variant: str | None) -> dict:
    if variant is None:
        return {}
    if model != "mp-gan":
        raise InputError(f"--variant is for mp-gan; {model} has no variants")
    return {"variant": variant}


def _adversarial_option(model: str, without: bool) -> dict:
    """``--without-adversarial``: Seq2Seq's Eq. 2 term left out (on the phantom it costs PSNR; see README)."""
    if not without:
        return {}
    if model != "seq2seq":
        raise InputError(f"--without-adversarial is for seq2seq; {model}'s adversarial training is its method")
    return {"adversarial": False}


def _widths_option(model: str, widths: str | None) -> dict:
    """``--widths A,B,C``: Seq2Seq's three encoder/decoder widths (full, half and quarter resolution)."""
    if widths is None:
        return {}
    if model != "seq2seq":
        raise InputError(f"--widths is for seq2seq; {model}'s widths are those of its configuration")
    try:
        channels = [int(w) for w in widths.split(",")]
    except ValueError:
        channels = []
    if len(channels) != 3 or min(channels) < 1:
        raise InputError(f"--widths takes three positive integers separated by commas (like 24,48,96), not {widths!r}")
    return {"channels": channels}


def _perceptual_option(model: str, without: bool) -> dict:
    """``--without-perceptual`` for recipes with a perceptual term; for others it has nothing to leave out."""
    from .training.recipes import recipe_for

    return {"perceptual": "off"} if without and recipe_for(model).uses_perceptual else {}


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.trainer import TrainOptions, train

    options = TrainOptions(model=args.model, out=args.out, config=args.config, data=args.data, steps=args.steps,
                           steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, seed=args.seed,
                           device=args.device, amp=args.amp, resume=args.resume, init_from=args.init_from,
                           checkpoint_every=args.checkpoint_every,
                           workers=args.workers, anatomy=args.anatomy, command=_command_line(args),
                           voxel_size_mm=args.voxel_size,
                           recipe_options={**_perceptual_option(args.model, args.without_perceptual),
                                           **_variant_option(args.model, args.variant),
                                           **_adversarial_option(args.model, args.without_adversarial),
                                           **_widths_option(args.model, args.widths)})
    summary = train(options, progress=not args.quiet)
    print(f"trained {summary['model']} ({summary['config']}) for {summary['steps']} steps; best validation "
          f"{summary['selection']} {summary['best_score']:.4g}; checkpoints in {summary['run_dir']}/checkpoints")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .training.export import export_run

    entry = export_run(args.run, which=args.which, folder=args.out, overwrite=args.overwrite)
    print(f"exported {entry.file} ({entry.size_bytes / 1e6:.1f} MB, sha256 {entry.sha256[:12]}…) to {args.out}")
    return 0


def _cmd_rank(args: argparse.Namespace) -> int:
    from .rank_cmd import run_rank
    from .synthesize_cmd import progress_lines

    result = run_rank(args.data, args.model, args.out, anatomy=args.anatomy, device=args.device,
                      bootstrap=args.bootstrap, progress=not (args.quiet or args.progress_lines),
                      score_within=args.score_within, register=args.register,
                      on_pair=progress_lines()[1] if args.progress_lines else None)
    print(f"pair metrics within the {result.extra['scored_within']}")
    print(f"{'sequence':10} {'C_t':>7} {'rank':>4} {'C_d':>7} {'rank':>4}")
    for row in result.table():
        print(f"{row['sequence']:10} {row['C_t']:7.3f} {row['rank_t']:4d} {row['C_d']:7.3f} {row['rank_d']:4d}")
    contrast = result.extra.get("md_enhancing_over_normal")
    if contrast and contrast["subjects"]:
        said = ", ".join(f"{name} {value:.1f}" for name, value in contrast["subjects"].items())
        print(f"M_d({contrast['sequence']}) inside enhancing tissue over normal {contrast['normal']}: {said}; "
              f"over all of them {contrast['pooled']:.1f}")
    print(f"tables, charts and M_d maps in {args.out}")
    return 0


def _cmd_maps(args: argparse.Namespace) -> int:
    from .maps_cmd import run_maps

    run_maps(args.input, args.out, model=args.model, reference=args.reference, register=args.register,
             device=args.device, anatomy=args.anatomy, progress="lines" if args.progress_lines else not args.quiet)
    return 0


def _cmd_evaluate_models(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace
    from pathlib import Path

    from .quality import HEADLINE, HELD_OUT_SEEDS, evaluate_bundled, manifest_metrics
    from .training.export import write_model_card
    from .weights import read_manifest, write_manifest

    from .phantom.cases import FIRST_TRAINING_SEED

    seeds = tuple(args.seeds or HELD_OUT_SEEDS)
    if any(s < 0 or s >= FIRST_TRAINING_SEED for s in seeds):
        raise InputError(f"--seeds must be held-out subjects, from 0 to {FIRST_TRAINING_SEED - 1} (seeds from "
                         f"{FIRST_TRAINING_SEED} are training subjects)")
    if args.json and (not args.json.endswith(".json") or Path(args.json).is_dir()):  # checked before the work
        raise InputError(f"--json {args.json}: give a .json file to write the results to")
    if args.mirror and args.update_manifest:
        raise InputError("--mirror with --update-manifest: the manifest holds the figures of the default "
                         "inference, without mirroring")
    results = evaluate_bundled(args.anatomy, seeds, model=args.model, targets=tuple(args.target or ()),
                               mirror=args.mirror)
    if not results:
        raise InputError("no bundled sequence-to-sequence model matches --anatomy/--model/--target")
    print(f"{'weights':28s} {'target':6s} {'method':14s} " + " ".join(f"{k.upper():>15s}" for k in HEADLINE))
    for r in results:
        for method, stats in r["methods"].items():
            cells = " ".join(f"{stats[k]['mean']:8.3f} ± {stats[k]['sd']:5.3f}" for k in HEADLINE)
            print(f"{r['weights']:28s} {r['target']:6s} {method:14s} {cells}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.update_manifest:
        entries = read_manifest()
        for k, entry in enumerate(entries):
            mine = [r for r in results if r["weights"] == entry.file]
            if mine:
                entries[k] = replace(entry, metrics=manifest_metrics(mine, seeds))
                write_model_card(entries[k])
        write_manifest(entries)
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .generate_cmd import run_generate

    if args.model != "mp-gan":
        raise InputError(f"{args.model} is not a generator; only mp-gan generates patches de novo")
    out = run_generate(args.lesion_class, args.n, args.out, variant=args.variant, seed=args.seed, nifti=args.nifti)
    print(f"{args.n} {args.lesion_class} patches ({args.variant}) in {out}")
    return 0


def _cmd_evaluate_gan(args: argparse.Namespace) -> int:
    from .generate_cmd import run_evaluate_gan

    report = run_evaluate_gan(args.real, args.out, variant=args.variant, n=args.n, seed=args.seed, device=args.device)
    print(f"{'class':10} {'real':>5} {'1-NN acc':>8} {'FID':>8} {'washout real':>12} {'washout gen':>11}")
    for name, row in report["classes"].items():
        fid_text = f"{row['fid']:8.2f}" if row["fid"] is not None else "     n/a"
        print(f"{name:10} {row['real_patches']:5d} {row['one_nn_accuracy']:8.3f} {fid_text} "
              f"{row['real_kinetics']['washout_fraction']:12.2f} {row['generated_kinetics']['washout_fraction']:11.2f}")
    notes = {row["fid_note"] for row in report["classes"].values() if row["fid_note"]}
    for note in notes:
        print(f"note: FID unavailable: {note}")
    if args.update_manifest:
        from dataclasses import replace

        from .generate_cmd import manifest_metrics
        from .training.export import write_model_card
        from .weights import read_manifest, write_manifest

        entries = [replace(e, metrics=manifest_metrics(report)) if e.file == report["weights"] else e
                   for e in read_manifest()]
        write_manifest(entries)
        write_model_card(next(e for e in entries if e.file == report["weights"]))
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch

    results = run_batch(args.data, args.out, model=args.model, anatomy=args.anatomy, brasyn=args.brasyn,
                        register=args.register, device=args.device, overwrite=args.overwrite, progress=not args.quiet)
    failed = [r for r in results if r.status == "failed"]
    if failed:  # the contract's one error line; each failure is also in the log above
        raise InputError(f"{len(failed)} of {len(results)} cases failed; {failed[0].case}: {failed[0].detail}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import HEADLINE, run_compare
    from .synthesize_cmd import progress_lines

    report = run_compare(args.data, args.out, models=tuple(args.models or ()), anatomy=args.anatomy,
                         register=args.register, device=args.device, progress=not (args.quiet or args.progress_lines),
                         on_step=progress_lines()[1] if args.progress_lines else None)
    print(f"{'target':6} {'model':14} {'cases':>5} " + " ".join(f"{k.upper():>8}" for k in HEADLINE))
    for m in report["means"]:
        print(f"{m['target']:6} {m['model']:14} {m['cases']:5d} " + " ".join(f"{m[k]:8.3f}" for k in HEADLINE))
    print(f"report: {args.out}/report.html")
    if report["failures"]:  # as batch: the outputs hold the cases that worked, the exit code says some failed
        raise InputError(f"{len(report['failures'])} case(s) failed and are left out of the report; "
                         f"{report['failures'][0]}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import size_table
    from .weights import read_manifest

    rows = size_table()
    bundled: dict[str, list[str]] = {}
    for entry in read_manifest():
        bundled.setdefault(entry.model, []).append(
            f"{entry.file} ({entry.anatomy}: {'+'.join(entry.inputs)} -> {'+'.join(entry.targets)})")
    for row in rows:
        row["bundled_weights"] = bundled.get(row["name"], []) if row["config"] == "lite" else []
    if args.json:
        import json
        print(json.dumps(rows, indent=1))
        return 0

    def paper(value: float | None, unit: str) -> str:
        return f"{value:g} {unit}" if value is not None else "-"

    header = f"{'model':14s} {'config':6s} {'form':12s} {'input size':>12s} {'params':>9s} {'MACs':>9s}  {'paper':>15s}  inputs -> outputs"
    print(header)
    print("-" * len(header))
    for row in rows:
        size = "x".join(str(n) for n in row["input_size"])
        theirs = f"{paper(row['paper_parameters_m'], 'M')}/{paper(row['paper_macs_g'], 'G')}" if row["config"] == "paper" else ""
        print(f"{row['name']:14s} {row['config']:6s} {row['form']:12s} {size:>12s} {row['parameters_m']:8.2f}M "
              f"{row['macs_g']:8.2f}G  {theirs:>15s}  {row['inputs']} -> {row['outputs']}")
    print("MACs per forward pass at the input size, batch 1 (PyTorch's flop counter, MAC = 2 FLOPs); "
          "paper = the paper's parameters/MACs where it reports them.")
    print("Bundled weights: " + ("; ".join(w for ws in bundled.values() for w in ws) or "none"))
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from .phantom.cases import write_cases

    aligned = {"misalign": False, "native_grids": False} if args.registered else {}
    for folder in write_cases(args.anatomy, n=args.n, seed=args.seed, out=args.out, png=args.png,
                              resolution=args.resolution, progress=not args.quiet, **aligned):
        print(folder)
    return 0


# --------------------------------------------------------------------- parser
def add_run_options(p: argparse.ArgumentParser) -> None:
    """--device, --quiet and --progress-lines: the options of every command the Slicer panel runs as a worker."""
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--progress-lines", action="store_true",
                   help="report progress as 'PROGRESS <fraction> <message>' lines (for the Slicer panel); the "
                        "command then also exits when the process that started it ends")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mri-synthesis", description=f"Synthesis of missing MRI sequences. {RESEARCH_USE_NOTICE}")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help_: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    p = add("demo", "synthesize a sequence of a built-in phantom subject and write the results", _cmd_demo)
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--seed", type=int, default=7, help="phantom subject (never used in training)")
    p.add_argument("--anatomy", choices=ANATOMIES, default="brain")
    p.add_argument("--model", choices=SYNTHESIS_MODELS)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")

    p = add("phantom", "write physics-phantom subjects as BraTS-style case folders", _cmd_phantom)
    p.add_argument("--anatomy", choices=ANATOMIES, required=True)
    p.add_argument("--n", type=int, default=1, help="number of subjects (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first subject; subject i uses seed+i")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per case)")
    p.add_argument("--png", action="store_true", help="also write a PNG montage per subject")
    p.add_argument("--resolution", type=float, default=None,
                   help="voxel size in mm of the reference grid (default: 1 for brain, the breast default grid)")
    p.add_argument("--registered", action="store_true",
                   help="every sequence on the reference grid, without motion (as the BraTS releases are co-registered)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("check", "read and validate input sequences (shape, NaN/Inf, empty, grid)", _cmd_check)
    p.add_argument("--input", nargs="+", required=True, metavar="SEQ=FILE")
    p.add_argument("--same-grid", action="store_true", help="require every input on the first one's grid")

    p = add("register", "register sequences to a fixed one with ANTs", _cmd_register)
    p.add_argument("--fixed", required=True, help="reference volume (usually T1)")
    p.add_argument("--moving", nargs="+", required=True, help="volumes to bring onto the fixed grid (a 4D series: registered on its first frame, "
                   "every frame written)")
    p.add_argument("--transform", choices=TRANSFORMS + ("none",), default="rigid")
    p.add_argument("--out", required=True, help="output folder: registered volumes, transforms, registration.json")
    p.add_argument("--seed", type=int, help="fix ANTs' random sampling (repeatable results)")
    p.add_argument("--single-thread", action="store_true", help="one thread: bit-for-bit repeatable with --seed")

    p = add("synthesize", "synthesize a missing sequence from the available ones", _cmd_synthesize)
    p.add_argument("--model", required=True, choices=SYNTHESIS_MODELS)
    p.add_argument("--input", nargs="+", required=True, action="extend", metavar="SEQ=FILE")
    p.add_argument("--target", required=True)
    p.add_argument("--anatomy", choices=ANATOMIES, help="which bundled weights (default: the inputs tell; asked for "
                   "when a brain and a breast model both take them)")
    p.add_argument("--out", required=True, help="output file (.nii.gz, .nrrd, .mha); a .json report is written beside it")
    p.add_argument("--reference", help="sequence the others are registered to (default T1, else the input with "
                   "the finest voxels)")
    p.add_argument("--register", choices=TRANSFORMS + ("none",), default="rigid")
    p.add_argument("--real", help="the acquired target, for metrics and an error map")
    p.add_argument("--error-map", help="write the colour error map volume here (needs --real)")
    p.add_argument("--phases", type=int, help="frames of a 4D series target (Seq2Seq breast DCE or DWI; default "
                   "the --real series' count, else the model's)")
    p.add_argument("--mirror", action="store_true", help=MIRROR_HELP)
    add_run_options(p)

    p = add("evaluate", "image-quality metrics of a synthesized volume against the real one", _cmd_evaluate)
    p.add_argument("--real", required=True, help="the real (acquired) volume")
    p.add_argument("--synth", required=True, help="the synthesized volume, on the real one's grid")
    p.add_argument("--mask", help="only voxels where this mask is non-zero (brain, tumour, ...)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--data-range", type=float, help="intensity range for SSIM/PSNR (default: the real volume's max - min)")

    p = add("rank", "rank sequences by totipotency and imaging differentiation", _cmd_rank)
    p.add_argument("--data", required=True, help="phantom:brain[:N], phantom:breast[:N] (held-out seeds) or a folder")
    p.add_argument("--model", default="seq2seq", help="an any-to-any model with bundled weights")
    p.add_argument("--out", required=True, help="folder for the tables, charts, maps and cached predictions")
    p.add_argument("--anatomy", choices=("brain", "breast"), help="which bundled weights, for a folder of cases")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples over subjects for the intervals (0: none)")
    p.add_argument("--score-within", choices=("foreground", "organ"), default="foreground",
                   help="where pair metrics are computed: the head or body (default), or the organ's own tissue "
                        "where a case knows it (the phantom brain without scalp and skull, as skull-stripped data)")
    p.add_argument("--register", choices=TRANSFORMS + ("none",), default="none",
                   help="for a folder: register each case's sequences onto its T1 first (default none: the cases "
                        "are co-registered, as BraTS releases are)")
    add_run_options(p)

    p = add("maps", "imaging-differentiation maps of one case: where each sequence shows what the others cannot",
            _cmd_maps)
    p.add_argument("--input", nargs="+", required=True, action="extend", metavar="SEQ=FILE",
                   help="two or more sequences of one case (any of the model's)")
    p.add_argument("--out", required=True, help="folder for Md-<SEQ>.nii.gz, Md-<SEQ>.png and maps.json")
    p.add_argument("--model", default="seq2seq", help="an any-to-any model with bundled weights")
    p.add_argument("--anatomy", choices=ANATOMIES, help="which bundled weights (default: the inputs tell)")
    p.add_argument("--reference", help="sequence the others are registered to and the maps' grid (default T1, else "
                   "the input with the finest voxels)")
    p.add_argument("--register", choices=TRANSFORMS + ("none",), default="rigid")
    add_run_options(p)

    p = add("train", "train a model headless (torchrun for many GPUs)", _cmd_train)
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--config", choices=("lite", "paper"), default="lite")
    p.add_argument("--data", required=True, help="phantom:brain[:N], phantom:breast[:N], a folder of cases or a manifest CSV")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.csv, validation PNGs")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--init-from", metavar="bundled|FILE",
                   help="fine-tune: the generator starts from the bundled weights of this model and anatomy, an "
                        "exported weight file or a run's checkpoint (optimisers and steps start afresh)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--steps-per-epoch", type=int, default=25, help="steps between validations and scheduler steps")
    p.add_argument("--batch-size", type=int, help="per process (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument("--checkpoint-every", type=int, default=25)
    p.add_argument("--workers", type=int, default=2, help="processes drawing the next batches (0: none)")
    p.add_argument("--anatomy", choices=("brain", "breast"),
                   help="for a folder of cases: which of the model's tasks to train (default: the model's)")
    p.add_argument("--voxel-size", type=float, metavar="MM",
                   help="for a folder of cases: resample each case onto an isotropic grid of this voxel size over "
                        "its T1 (default: the cases' own grid, which must then be isotropic and the same for all)")
    p.add_argument("--variant", choices=("dcgan", "wgan"), help="mp-gan only: which GAN to train (default dcgan)")
    p.add_argument("--without-perceptual", action="store_true",
                   help="train without the VGG19 perceptual term (when its ImageNet weights are not available)")
    p.add_argument("--without-adversarial", action="store_true",
                   help="seq2seq only: train without the adversarial term of Eq. 2 (reconstruction and cycle only)")
    p.add_argument("--widths", metavar="A,B,C",
                   help="seq2seq only: the generator's widths at full, half and quarter resolution instead of the "
                        "configuration's (lite 16,32,48; paper 64,128,256); stored with the exported weights")
    p.add_argument("--quiet", action="store_true")

    p = add("export", "export a training checkpoint as fp16 inference weights with a model card", _cmd_export)
    p.add_argument("--run", required=True, help="a training run folder (mri-synthesis train --out)")
    p.add_argument("--which", choices=("best", "last"), default="best")
    p.add_argument("--out", required=True, help="models folder to add the weights, manifest entry and card to")
    p.add_argument("--overwrite", action="store_true", help="replace an entry of the same name in --out")

    p = add("generate", "generate multiparametric lesion patches with the MP-GAN", _cmd_generate)
    p.add_argument("--model", default="mp-gan", help="a generator (only mp-gan generates patches)")
    p.add_argument("--variant", choices=("dcgan", "wgan"), default="dcgan")
    p.add_argument("--class", dest="lesion_class", choices=("benign", "malignant", "healthy"), required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nifti", action="store_true", help="also write one NIfTI per channel (samples along z)")

    p = add("evaluate-gan", "1-NN accuracy, FID and DCE kinetics of generated patches against real ones",
            _cmd_evaluate_gan)
    p.add_argument("--real", default="phantom:breast", help="a patch file (.npz) or phantom:breast[:N] (held out)")
    p.add_argument("--variant", choices=("dcgan", "wgan"), default="dcgan")
    p.add_argument("--n", type=int, default=200, help="generated patches per class (at least as many as real)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for evaluate-gan.json")
    p.add_argument("--device", default="cpu")
    p.add_argument("--update-manifest", action="store_true",
                   help="store the figures in the models folder's manifest and the model card")
    p = add("batch", "synthesize every missing sequence of a folder of cases", _cmd_batch)
    p.add_argument("--data", required=True, help="folder of case folders (BraTS 2021/2023 naming) or a manifest CSV")
    p.add_argument("--out", required=True, help="output folder (not inside --data)")
    p.add_argument("--model", default="best", choices=("best", *SYNTHESIS_MODELS),
                   help="a model name, or best: the best measured bundled model per target")
    p.add_argument("--anatomy", choices=("brain",), default="brain")
    p.add_argument("--brasyn", action="store_true", help="write exactly the BraSyn layout (only the missing files, flat)")
    p.add_argument("--register", default="none", choices=("none", "rigid", "affine", "syn"),
                   help="register inputs to the reference first (default none: BraTS cases are co-registered)")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="redo cases already written")
    p.add_argument("--quiet", action="store_true")
    p = add("compare", "compare models side by side on complete cases", _cmd_compare)
    p.add_argument("--data", required=True, help="folder of complete cases (BraTS naming) or a manifest CSV")
    p.add_argument("--out", required=True, help="folder for compare.csv, compare.json and report.html")
    p.add_argument("--models", nargs="+", choices=SYNTHESIS_MODELS, help="only these models (default: every eligible one)")
    p.add_argument("--anatomy", choices=("brain",), default="brain")
    p.add_argument("--register", default="none", choices=("none", "rigid", "affine", "syn"))
    add_run_options(p)
    p = add("evaluate-models",
            "bundled models on held-out phantom subjects beside voxel-wise baselines and the noiseless, bias-free ceiling",
            _cmd_evaluate_models)
    p.add_argument("--anatomy", choices=ANATOMIES)
    p.add_argument("--model", choices=MODEL_NAMES)
    p.add_argument("--target", nargs="+", help="only these targets")
    p.add_argument("--seeds", type=int, nargs="+", help="held-out phantom seeds (default 7 8 9 11 12)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--update-manifest", action="store_true",
                   help="store the figures in the models folder's manifest and model cards")
    p.add_argument("--mirror", action="store_true", help=MIRROR_HELP)

    p = add("models", "list the models: inputs -> outputs, size, bundled weights", _cmd_models)
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    return parser


#: options that name a file or folder to write or read
PATH_OPTIONS = ("out", "json", "error_map", "real", "synth", "mask", "fixed", "data", "run")


def refuse_empty_paths(args: argparse.Namespace) -> None:
    """``--out ""`` and the like: Path("") is the current folder, where nobody meant to write."""
    for name in PATH_OPTIONS:
        if getattr(args, name, None) == "":
            raise InputError(f"--{name.replace('_', '-')} is empty; name a file or folder")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if argv is None and getattr(args, "progress_lines", False):  # a worker of the Slicer panel: end with it
        from .worker import exit_with_parent

        exit_with_parent()
    try:
        refuse_empty_paths(args)
        return int(args.handler(args) or 0)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mri-synthesis models --json | head`: the reader stopped reading; no traceback,
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor a second one as Python flushes,
        return 128 + 13  # and the status of a process SIGPIPE ended (the work may not be done: not 0)
    except OSError as err:
        if err.errno != errno.ENAMETOOLONG:  # disk full, I/O errors: not the user's input, so not exit 2
            raise
        print(f"error: {err.filename or err}: file name too long for this file system", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
