"""``mri-synthesis synthesize`` and ``mri-synthesis demo``: files in, synthesized volume and report out."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Mapping

from . import RESEARCH_USE_NOTICE
from .errors import InputError
from .inputs import SERIES_SEQUENCES, check_volume, load_case, model_frames
from .metrics import to_json_safe
from .sequences import SUFFIX_2023, canonical, parse_assignments
from .volume import Volume, check_output_file, output_folder, read_volume, refuse_overwrite, refuse_same_outputs, report_path, sidecar_path, write_volume
from .weights import read_manifest

#: What the demo would run, model by model; the ones without bundled weights are named as such.
DEMO_PLAN = {"brain": [("unet-ct1", "T1ce"), ("seq2seq", "T1ce"), ("tc-mgan", "T1ce"), ("important-net", "T2")],
             "breast": [("important-net", "T2"), ("seq2seq", "T2")]}
#: the any-to-any model that makes the demo subject's imaging-differentiation maps
DEMO_MAPS_MODEL = "seq2seq"
#: the frame of each 4D input a montage shows when the model takes the whole series (a model that sees
#: one frame shows that one): the DWI's highest b-value and the DCE's first post-contrast phase
DISPLAY_FRAMES = {"DWI": -1, "DCE": 1}


def progress_lines(line: Callable[[str], None] = print):
    """Progress as machine-readable lines, ``PROGRESS <fraction> <message>``, flushed at once: what the
    Slicer panel reads from its worker process to move its progress bar."""
    def update(fraction: float, message: str) -> bool:
        line(f"PROGRESS {fraction:.4f} {message}")
        sys.stdout.flush()
        return True
    return None, update


class _LazyBar:
    """A tqdm bar in percent, drawn at the first progress report: a request the pipeline refuses before any
    work (no weights for the target, an unknown device) prints its error line alone."""

    def __init__(self, description: str) -> None:
        self.description, self.bar = description, None

    def update(self, fraction: float, message: str) -> bool:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=100, desc=self.description, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")
        self.bar.n = round(100 * fraction)
        self.bar.set_postfix_str(message)
        self.bar.refresh()
        return True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_bar(description: str):
    """The bar (its ``close()``) and the ``update(fraction, message)`` callback that moves it."""
    bar = _LazyBar(description)
    return bar, bar.update


def check_outputs(out: str | Path, error_map: str | Path | None, target: str, protected) -> None:
    """Before any work: the files a synthesis writes (the volume, its error map, the report, and for a
    series target their frame sidecars) are distinct, and none is a ``protected`` input or its sidecar."""
    check_output_file(out)
    check_output_file(report_path(out), image=False)
    refuse_report_of_another(out)
    if error_map is not None:
        check_output_file(error_map)
    series = target in SERIES_SEQUENCES  # written with a frame sidecar each
    outputs = {"--out": out, "--error-map": error_map, "the report": report_path(out),
               "--out's frame sidecar": sidecar_path(out) if series else None,
               "--error-map's frame sidecar": sidecar_path(error_map) if series and error_map else None}
    refuse_same_outputs(outputs)
    for path in outputs.values():
        if path is not None:
            refuse_overwrite(path, protected)


def refuse_report_of_another(out: str | Path) -> None:
    """The report of ``out`` is named without its image suffix, so ``o.nii.gz`` and ``o.nrrd`` share
    ``o.report.json``: refuse to replace the report of another output that is still there (its provenance
    would be lost without a word)."""
    report = report_path(out)
    try:
        other = json.loads(report.read_text()).get("output")
    except (OSError, ValueError, AttributeError):  # none yet, or not a report this command wrote
        return
    if isinstance(other, str) and Path(other).exists() and Path(other).resolve() != Path(out).resolve():
        raise InputError(f"{report}: holds the report of {other}, which {out} would replace (their names differ "
                         "only in the image suffix); choose another name for --out")


def synthesis_report(result, out: str | Path, error_map_path: str | Path | None = None) -> dict:
    """The JSON report beside a synthesized ``out`` (the CLI's, and Slicer's headless batch's): the output's
    absolute path (whoever reads it, or refuses to replace it, may be in another folder), provenance,
    registrations and, with a real target, the metrics and the error map written."""
    report = {"output": str(Path(out).resolve()), "provenance": result.provenance,
              "registrations": result.registrations}
    if result.metrics is not None:
        report["metrics"] = to_json_safe(result.metrics)
        if error_map_path:
            report["error_map"] = {"file": str(error_map_path), "max_error": result.error_map.max_error}
    return report


def run_synthesize(model: str, input_items: list[str], target: str, out: str | Path, *, reference: str | None,
                   register: str, real: str | None, error_map_path: str | None, device: str,
                   phases: int | None = None, say: Callable[[str], None] = print, progress: bool | str = True,
                   mirror: bool = False, anatomy: str | None = None) -> dict:
    from .pipeline import synthesize

    target = canonical(target)
    files = parse_assignments(input_items)
    protected = [*files.values(), *([real] if real else [])]
    check_outputs(out, error_map_path, target, protected)  # "" before Path() reads it as "."
    out = Path(out)
    if error_map_path and not real:
        raise InputError("--error-map needs --real (the acquired target to compare with)")
    inputs = load_case(files)
    real_volume = check_volume(read_volume(real), target, str(real)) if real else None
    bar, update = (progress_lines() if progress == "lines" else
                   progress_bar(f"{model} -> {target}") if progress else (None, None))
    try:
        result = synthesize(inputs, target, model, reference=reference and canonical(reference), register=register,
                            real=real_volume, device=device, progress=update, phases=phases, mirror=mirror,
                            anatomy=anatomy,
                            input_names={k: str(v) for k, v in files.items()})
    finally:
        if bar is not None:
            bar.close()
    write_volume(result.volume, out, protect=protected)
    if result.metrics is not None and error_map_path:
        write_volume(result.error_map.volume, error_map_path, protect=protected)
    report = synthesis_report(result, out, error_map_path)
    sidecar = report_path(out)
    refuse_overwrite(sidecar, protected)
    sidecar.write_text(json.dumps(report, indent=1, allow_nan=False))
    say(f"wrote {out} ({result.provenance['seconds']} s; {RESEARCH_USE_NOTICE})")
    for warning in result.provenance["warnings"]:
        say(f"warning: {warning}")
    if result.metrics is not None:
        say("against the real target: " + ", ".join(f"{k} {v:.4g}" for k, v in _headline(result.metrics).items()))
    return report


def _headline(result: Mapping) -> dict[str, float]:
    """SSIM, PSNR, NMSE, MAE of the whole volume from an ``metrics.evaluate`` result."""
    return {k: float(result["metrics"][k]["volume"]) for k in ("ssim", "psnr", "nmse", "mae") if k in result["metrics"]}


def _lesion_slice(labels: Volume) -> int:
    """The axial slice through the lesions' centre (the phantom knows them), else the middle slice, counted
    from the inferior end as the figures count them (``volume.upright``)."""
    import numpy as np

    from .volume import upright
    array = upright(labels).array
    found = np.argwhere(array > 0)
    return int(found[:, 0].mean()) if len(found) else array.shape[0] // 2


def run_demo(out: str | Path, anatomy: str = "brain", model: str | None = None, device: str = "auto", seed: int = 7,
             say: Callable[[str], None] = print) -> dict:
    """A held-out phantom subject, misaligned as acquired, synthesized by every bundled model that can."""
    from .maps import write_comparison_png
    from .phantom import sample
    from .phantom.cases import case_name
    from .pipeline import synthesize
    from .preprocess import resample_to

    bundled = {(e.model, t): e for e in read_manifest() for t in e.targets if e.anatomy == anatomy}
    plan = [(m, t) for m, t in DEMO_PLAN[anatomy] if model is None or m == model]
    if not plan:
        raise InputError(f"the {anatomy} demo has no step for model {model}")
    runnable = [(m, t) for m, t in plan if (m, t) in bundled]
    for m, t in plan:
        if (m, t) not in bundled:
            say(f"{m} -> {t}: no bundled weights yet in this version, skipped")
    if not runnable:
        raise InputError(f"no bundled weights for the {anatomy} demo yet")
    from .inference import choose_device
    from .phantom.cases import FIRST_TRAINING_SEED

    if seed < 0 or seed >= FIRST_TRAINING_SEED:
        raise InputError(f"--seed {seed}: the demo's subject must be held out, a seed from 0 to "
                         f"{FIRST_TRAINING_SEED - 1} (seeds from {FIRST_TRAINING_SEED} are training subjects)")

    choose_device(device)  # an unusable --device is refused before anything is written
    out = output_folder(out)
    (out / "inputs").mkdir(exist_ok=True)
    voxel = min(bundled[step].voxel_size_mm for step in runnable)
    say(f"simulating held-out {anatomy} phantom subject (seed {seed}, {voxel:g} mm, sequences misaligned as acquired)")
    subject = sample(anatomy, seed, resolution=voxel)
    name = case_name(anatomy, seed)
    files = {}
    for seq, volume in subject.sequences.items():
        files[seq] = write_volume(volume, out / "inputs" / f"{name}-{SUFFIX_2023[seq]}.nii.gz")
    summary = {"subject": name, "seed": seed, "anatomy": anatomy, "results": []}
    from .quality import sources_for

    for m, target in runnable:
        entry = bundled[(m, target)]
        sources = sources_for(entry, target)  # an any-to-any model gets every other sequence
        inputs = load_case({s: files[s] for s in sources})
        real = read_volume(files[target])
        bar, update = progress_bar(f"{m} -> {target}")
        try:
            result = synthesize(inputs, target, m, register="rigid", real=real, device=device, progress=update,
                                anatomy=anatomy, input_names={s: str(files[s]) for s in sources})
        finally:
            bar.close()
        stem = f"{m}-{target}"
        write_volume(result.volume, out / f"{stem}.nii.gz")
        write_volume(result.error_map.volume, out / f"{stem}-error.nii.gz")
        shown = model_frames(inputs, {**DISPLAY_FRAMES, **entry.frames}, m)  # a 4D series as one frame
        write_comparison_png({s: resample_to(shown[s], result.volume) for s in sources}, result.real,
                             result.volume, out / f"{stem}.png", error=result.error_map,
                             slice_index=_lesion_slice(subject.labels),
                             title=f"{m}: {'+'.join(sources)} -> {target}")
        row = {"model": m, "target": target, "inputs": list(sources), "output": str(out / f"{stem}.nii.gz"),
               "seconds": result.provenance["seconds"], **_headline(result.metrics)}
        summary["results"].append(row)
    if model in (None, DEMO_MAPS_MODEL):
        maps = _demo_maps(subject, files, anatomy, out / "maps", device, say)
        if maps is not None:
            summary["differentiation_maps"] = maps
    (out / "metrics.json").write_text(json.dumps(to_json_safe(summary), indent=1, allow_nan=False))
    say(f"\n{'model':14s} {'target':7s} {'SSIM':>7s} {'PSNR dB':>8s} {'NMSE':>7s} {'MAE':>7s} {'seconds':>8s}")
    for row in summary["results"]:
        say(f"{row['model']:14s} {row['target']:7s} {row['ssim']:7.4f} {row['psnr']:8.2f} {row['nmse']:7.4f} "
            f"{row['mae']:7.4f} {row['seconds']:8.1f}")
    say(f"(inside the foreground, on z-scored intensities; outputs, error maps and montages in {out}; "
        f"{RESEARCH_USE_NOTICE})")
    contrast = summary.get("differentiation_maps", {}).get("enhancing_over_normal")
    if contrast:
        say(f"imaging-differentiation maps by {summary['differentiation_maps']['model']} in {out / 'maps'}: "
            f"M_d({contrast['sequence']}) inside the enhancing tissue is {contrast['ratio']:.1f} times its mean in "
            f"normal {contrast['normal']}")
    return summary


def _demo_maps(subject, files: Mapping[str, Path], anatomy: str, out: Path, device: str,
               say: Callable[[str], None]) -> dict | None:
    """The subject's imaging-differentiation maps by the bundled any-to-any :data:`DEMO_MAPS_MODEL` from every
    sequence it takes, and M_d of the contrast-enhanced sequence inside the enhancing tissue over normal
    tissue, which the phantom knows (the ratio ``rank`` reports, here for one subject as acquired)."""
    from .differentiation import case_differentiation_maps
    from .maps_cmd import write_maps
    from .rank_cmd import ENHANCING, enhancing_contrast
    from .preprocess import resample_to
    from .training.data import organ_mask
    from .volume import geometry_differences

    entry = next((e for e in read_manifest() if e.model == DEMO_MAPS_MODEL and e.anatomy == anatomy), None)
    if entry is None:
        say(f"{DEMO_MAPS_MODEL} ({anatomy}): no bundled weights yet in this version, no differentiation maps")
        return None
    sources = [s for s in entry.inputs if s in files]
    bar, update = progress_bar(f"{entry.model} differentiation maps")
    try:
        result = case_differentiation_maps(load_case({s: files[s] for s in sources}), entry.model, anatomy=anatomy,
                                           device=device, progress=update,
                                           input_names={s: str(files[s]) for s in sources})
    finally:
        bar.close()
    out.mkdir(parents=True, exist_ok=True)
    lesions = resample_to(subject.labels, result.work_grid, interpolation="nearest")  # the PNGs cut through them
    maps = write_maps(result, out, slice_index=_lesion_slice(lesions) if lesions.array.any() else None)
    summary = {"model": entry.model, "seconds": result.provenance["seconds"], "maps": maps,
               "units": result.provenance["units"]}
    enhanced, labels = ENHANCING[anatomy]
    md = result.maps.get(enhanced)
    if md is not None and not geometry_differences(md, subject.labels):  # T1, the reference, is on the labels' grid
        ratio = enhancing_contrast(md.array, subject.labels.array, md.array > 0, labels, organ_mask(subject))
        if ratio is not None:
            summary["enhancing_over_normal"] = {"sequence": enhanced, "labels": list(labels), "ratio": ratio,
                                                "normal": f"{anatomy} tissue without labels"}
    return summary
