"""``mri-synthesis rank``: rank sequences on a set of subjects and write the tables, charts and M_d maps.

Subjects come from the phantom (held-out seeds, never trained on) or a folder of cases; each is prepared
exactly as the model was trained (one grid, the manifest's normalisation), so the scores measure the
model, not a registration. Every single-source translation is saved under ``<out>/predictions`` and reused
when the command is run again (the slow part; a rerun with other bootstrap settings is instant).

Outputs in ``--out``: ``ranking.csv`` and ``ranking.json`` (per sequence C_t, C_d, ranks and intervals,
plus A, the raw metric matrices and the pair counts), ``ranking.png`` (C_t and C_d bars with intervals),
``adjacency.png`` (A as a heat matrix), and per subject ``maps/<subject>/Md-<sequence>.nii.gz`` with a PNG
heatmap over the anatomy: the imaging-differentiation map M_d(X_i) = mean over j != i of |X'_{j->i} - X_i|.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from .errors import InputError
from .maps import differentiation_maps, differentiation_region
from .predictors import translator
from .quality import HELD_OUT_SEEDS
from .ranking import PairScore, Ranking, rank, score_pair
from .sequences import SEGMENTATION
from .volume import Volume, discard_if_failed, output_folder, refuse_inside

#: the phantom subjects ranked by default (never used in training)
DEFAULT_PHANTOM_SUBJECTS = len(HELD_OUT_SEEDS)


def source_for(data: str, entry, *, subjects: int | None = None, register: str = "none"):
    """Subjects for ``--data``: ``phantom:brain[:N]``/``phantom:breast[:N]`` (held-out seeds, moved onto their
    reference by their true transforms) or a folder of cases, resampled onto the model's voxel size and
    registered with ``register`` first (``none``: co-registered, as BraTS cases are)."""
    from .training.data import FolderSource, PhantomSource

    if data.startswith("phantom:"):
        parts = data.split(":")
        anatomy = parts[1] or entry.anatomy
        if anatomy != entry.anatomy:
            raise InputError(f"{entry.file} is a {entry.anatomy} model; it cannot rank {anatomy} subjects")
        try:
            n = int(parts[2]) if len(parts) > 2 else (subjects or DEFAULT_PHANTOM_SUBJECTS)
        except ValueError as err:
            raise InputError(f"--data {data}: the number of subjects must be an integer") from err
        if n < 1:
            raise InputError(f"--data {data}: at least one subject is needed")
        seeds = list(HELD_OUT_SEEDS[:n]) + [100 + k for k in range(max(0, n - len(HELD_OUT_SEEDS)))]
        return PhantomSource(anatomy, seeds, sequences=entry.inputs, scheme=entry.normalization,
                             resolution=entry.voxel_size_mm, foreground=entry.foreground)
    return FolderSource(data, sequences=entry.inputs, scheme=entry.normalization, require_all=False,
                        foreground=entry.foreground, voxel_size_mm=entry.voxel_size_mm, register=register,
                        orientation=entry.orientation)


def _cached(folder: Path, source: str, target: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    path = folder / f"{source}-to-{target}.npy"
    if path.exists():
        try:
            return np.load(path)
        except (OSError, ValueError):  # a damaged file from an interrupted run is recomputed
            path.unlink()
    array = compute().astype(np.float32)
    tmp = path.with_name(f".partial-{path.name}")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    tmp.replace(path)
    return array


#: per anatomy, the contrast-enhanced sequence and the labels of the tissue that enhances in it: the enhancing
#: tumour (label 3 in BraTS 2023 and later and in the phantom) in T1ce; the breast phantom's benign (1) and
#: malignant (2) lesions in DCE (its cysts, label 3, do not enhance)
ENHANCING = {"brain": ("T1ce", (3,)), "breast": ("DCE", (1, 2))}

#: BraTS 2021 and earlier label the enhancing tumour 4 (labels 1, 2, 4), and name files ``<case>_seg.nii.gz``; in
#: BraTS 2024's post-treatment gliomas, named as 2023's (``<case>-seg.nii.gz``), 4 is the resection cavity
_BRATS_2021_SEG = re.compile(r"_seg\.(nii\.gz|nii|nrrd|mha)$", re.IGNORECASE)


def enhancing_labels(anatomy: str, case) -> tuple[int, ...]:
    """The labels of the tissue that enhances in ``case``: its anatomy's (:data:`ENHANCING`), but 4 for a brain
    case whose segmentation is named as BraTS 2021's."""
    seg = case.meta.get("files", {}).get(SEGMENTATION)
    if anatomy == "brain" and seg and _BRATS_2021_SEG.search(Path(seg).name):
        return (4,)
    return ENHANCING.get(anatomy, (None, ()))[1]


def enhancing_and_normal_sums(md: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                              enhancing_labels: tuple[int, ...] = ENHANCING["brain"][1],
                              organ: np.ndarray | None = None) -> tuple[float, int, float, int] | None:
    """Sum and voxel count of an M_d map inside the enhancing tissue, then in normal tissue: every foreground
    voxel without a label, within the organ when the case knows it (normal *brain*, not the scalp and skull a
    skull-stripped scan would not have); both within ``mask``, where the map is defined; None without
    enhancing voxels."""
    enhancing = np.isin(labels, enhancing_labels) & mask
    normal = mask & (labels == 0)
    if organ is not None:
        normal &= organ
    if not enhancing.any() or not normal.any():
        return None
    return float(md[enhancing].sum()), int(enhancing.sum()), float(md[normal].sum()), int(normal.sum())


def contrast_of(sums: Iterable[tuple[float, int, float, int]]) -> float | None:
    """Mean inside the enhancing tissue over mean in normal tissue, pooled over every case's voxels in ``sums``."""
    totals = np.sum(np.asarray(list(sums), dtype=np.float64).reshape(-1, 4), axis=0)
    if totals[1] == 0 or totals[3] == 0:
        return None
    return float((totals[0] / totals[1]) / max(totals[2] / totals[3], 1e-12))


def enhancing_contrast(md: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                       enhancing_labels: tuple[int, ...] = ENHANCING["brain"][1],
                       organ: np.ndarray | None = None) -> float | None:
    """Mean of an M_d map inside the enhancing tissue over its mean in normal tissue (see
    :func:`enhancing_and_normal_sums`); None without enhancing voxels."""
    sums = enhancing_and_normal_sums(md, labels, mask, enhancing_labels, organ)
    return None if sums is None else contrast_of([sums])


#: where ``run_rank`` can compute each pair's metrics
SCORE_REGIONS = ("foreground", "organ")


def run_rank(data: str, model: str, out: str | Path, *, anatomy: str | None = None, device: str = "auto",
             bootstrap: int = 1000, lpips_backbone: str | None = "imagenet", progress: bool = True,
             weights_folder: str | Path | None = None, score_within: str = "foreground", register: str = "none",
             on_pair: Callable[[float, str], object] | None = None, say=print) -> Ranking:
    """Rank the model's sequences on ``data`` and write every output to ``out``.

    ``on_pair(fraction, message)`` is called after each translated pair (the Slicer panel's progress).

    ``register``: for a folder of cases, the preset that registers each case's sequences onto its reference
    first (``none``: co-registered, as BraTS cases are); every case is resampled to the model's voxel size.

    ``score_within`` is where each pair's metrics are computed: ``"foreground"`` (the head or body, the
    default) or ``"organ"`` (the organ's own tissue where a case knows it, else its foreground): the
    phantom brain without scalp and skull, as a skull-stripped BraTS case, the paper's data, has it."""
    if bootstrap < 0:
        raise InputError(f"--bootstrap must be 0 (no intervals) or more resamples, not {bootstrap}")
    if score_within not in SCORE_REGIONS:
        raise InputError(f"score_within must be one of {', '.join(SCORE_REGIONS)}, not {score_within!r}")
    from tqdm import tqdm

    from .differentiation import any_to_any_entry
    from .inference import choose_device
    from .training.data import CaseCache, load_cases
    from .weights import load_model

    phantom = data.startswith("phantom:")
    anatomy = anatomy or (data.split(":")[1] if phantom else None)
    if phantom:
        from .phantom import ANATOMIES

        if anatomy not in ANATOMIES:
            raise InputError(f"--data {data}: unknown phantom anatomy '{anatomy}'; the phantom simulates "
                             f"{' and '.join(ANATOMIES)}")
    if not phantom and anatomy is None:
        anatomy = _folder_anatomy(data, weights_folder, say)
    entry = any_to_any_entry(model, anatomy or None, (), weights_folder, purpose="ranking")
    if phantom and register != "none":
        raise InputError(f"--register {register} is for a folder of cases; phantom subjects are moved onto their "
                         "reference by their true transforms")
    refuse_inside(out, data)
    source = source_for(data, entry, register=register)
    torch_device = choose_device(device)
    translate = translator(entry, load_model(entry, weights_folder, torch_device), torch_device)
    lpips_backbone = _lpips_backbone(lpips_backbone, say)

    names = source.names()
    with discard_if_failed(out):  # a case refused while caching leaves no new output folder
        out = output_folder(out)
        _check_preparation(out, {"weights_sha256": entry.sha256, "voxel_size_mm": entry.voxel_size_mm,
                                 "data": f"phantom:{entry.anatomy}" if phantom else str(Path(data).resolve()),
                                 "register": "true transforms" if phantom else register,
                                 # a case's file added or replaced since: its cached case and translations are stale
                                 **({} if phantom else {"files": files_record(source.files,
                                                                              (*entry.inputs, SEGMENTATION))}),
                                 # folders of cases are turned to the weights' orientation; the phantom is made in it
                                 **({} if phantom else {"orientation": entry.orientation})})
        cases = load_cases(source, names, CaseCache(out / "cache"))
    present, notes = _ranked_sequences(entry, cases, None if phantom else source.files)
    for note in notes:
        say(f"note: {note}")
    total = sum(len(c.volumes) * (len(c.volumes) - 1) for c in cases)
    bar = tqdm(total=total, desc="rank: translating pairs", unit="pair", disable=not progress)
    scores: list[PairScore] = []
    done, disjoint = 0, []  # pairs translated; pairs whose fields of view share none of the scored region
    contrasts: dict[str, float] = {}
    contrast_sums: list[tuple[float, int, float, int]] = []  # every case's, for the contrast over all of them
    normal_regions: set[str] = set()  # what "normal" meant: the organ's tissue where a case knows it
    scored_regions: set[str] = set()  # where the pair metrics were computed
    enhanced, labels = ENHANCING.get(entry.anatomy, (None, ()))
    used_labels: set[int] = set()  # the enhancing labels of the cases' own releases
    for case in cases:
        folder = out / "predictions" / case.name
        folder.mkdir(parents=True, exist_ok=True)
        predictions = {}
        organ_name = "foreground" if case.organ is None else f"{entry.anatomy} tissue"
        scored = case.organ_or_foreground if score_within == "organ" else case.mask
        scored_regions.add(organ_name if score_within == "organ" else "foreground")
        for src in case.volumes:
            for tgt in case.volumes:
                if src == tgt:
                    continue
                pred = _cached(folder, src, tgt, lambda s=src, t=tgt: translate(case.volumes, s, t))
                predictions[(src, tgt)] = pred
                done += 1
                bar.update(1)
                if on_pair is not None:
                    on_pair(done / total, f"{case.name}: {src} -> {tgt}")
                # scored where both have data: a slab's blank part is neither a source nor a target
                region = scored & case.covers(src, tgt)
                if not region.any():
                    disjoint.append(f"{case.name}: {src} -> {tgt}")
                    continue
                scores.append(PairScore(case.name, src, tgt, **score_pair(case.volumes[tgt], pred, region,
                                                                          lpips_backbone=lpips_backbone)))
        maps = differentiation_maps(case.volumes, predictions, case.mask, case.inside)
        _write_maps(out / "maps" / case.name, case, maps)
        if enhanced in maps:
            sources = [s for s in case.volumes if s != enhanced]
            defined = differentiation_region(enhanced, sources, case.mask, case.inside)
            case_labels = enhancing_labels(entry.anatomy, case)
            used_labels.update(case_labels)
            sums = enhancing_and_normal_sums(maps[enhanced], case.labels, defined, case_labels, case.organ)
            if sums is not None:
                contrasts[case.name] = contrast_of([sums])
                contrast_sums.append(sums)
                normal_regions.add(organ_name)
    bar.close()
    if not scores and disjoint:
        raise InputError(f"no pair could be scored: the fields of view of every pair share none of the region scored "
                         f"({'; '.join(disjoint[:4])}{' …' if len(disjoint) > 4 else ''})")
    result = rank(scores, present, bootstrap=bootstrap)
    result.notes[:0] = notes
    result.extra["scored_within"] = " and ".join(sorted(scored_regions))
    if disjoint:
        result.notes.append(f"{len(disjoint)} pairs not scored: their fields of view share none of the region "
                            f"scored ({'; '.join(disjoint)})")
    if enhanced:
        # "pooled": the mean over every subject's enhancing voxels over the mean over every subject's normal
        # ones, so a subject with a large enhancing lesion weighs more than one with a few voxels of it
        result.extra["md_enhancing_over_normal"] = {"sequence": enhanced, "labels": sorted(used_labels or labels),
                                                    "subjects": contrasts,
                                                    "pooled": contrast_of(contrast_sums),
                                                    "normal": (" and ".join(sorted(normal_regions)) + " without labels"
                                                               if normal_regions else None)}
        if not contrasts:
            shown = ", ".join(map(str, sorted(used_labels or labels)))
            result.notes.append(f"no case has both {enhanced} and labels {shown} of the tissue that enhances in it "
                                f"(a segmentation file): M_d({enhanced}) there over normal tissue is not computed")
    write_outputs(result, out, scores)
    for note in result.notes[len(notes):]:
        say(f"note: {note}")
    return result


def _folder_anatomy(data: str, weights_folder, say) -> str:
    """The anatomy of a folder's cases, from the sequences they hold (``selection.infer_anatomy``), said."""
    from .batch import list_cases
    from .selection import infer_anatomy

    present = set().union(*(set(files) for files in list_cases(data).values())) - {"error", SEGMENTATION}
    anatomy = infer_anatomy(present, weights_folder)
    say(f"note: ranking with the {anatomy} model: the cases hold {', '.join(sorted(present)) or 'no sequence'} "
        "(--anatomy chooses)")
    return anatomy


def _ranked_sequences(entry, cases, files: Mapping[str, Mapping[str, Path]] | None) -> tuple[list[str], list[str]]:
    """The model's sequences some case has, which are ranked, and notes on what is left out: the model's
    sequences no case has (not ranked rather than ranked on no pair), and the cases' the model does not take."""
    present = [s for s in entry.inputs if any(s in case.volumes for case in cases)]
    notes = []
    if len(present) < len(entry.inputs):
        notes.append(f"{', '.join(s for s in entry.inputs if s not in present)}: in no case, so not ranked")
    if files is not None:
        untaken = sorted(set().union(*(set(f) for f in files.values())) - set(entry.inputs) - {SEGMENTATION})
        if untaken:
            notes.append(f"{', '.join(untaken)}: in the cases but not taken by {entry.file}, so not ranked")
    return present, notes


#: what the cached cases and translations in a ranking's folder were made with
PREPARATION_FILE = "preparation.json"


def _check_preparation(out: Path, preparation: dict) -> None:
    """Refuse a folder whose cached cases and translations were made otherwise (other weights, data,
    registration or grid): reusing them would rank stale translations. A new folder records ``preparation``."""
    path = out / PREPARATION_FILE
    cached = [folder for folder in ("cache", "predictions") if (out / folder).is_dir() and any((out / folder).iterdir())]
    if not path.exists() and cached:
        raise InputError(f"{out} holds {' and '.join(cached)} from an earlier version that did not record how they "
                         "were made; choose another --out")
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = {}
        if "files" in preparation and (changed := _files_changed(saved.get("files"), preparation["files"])):
            raise InputError(f"{out} holds cases and translations made from other files: {changed}; rank into "
                             "another --out")
        changed = [key for key in preparation if key != "files" and saved.get(key) != preparation[key]]
        if changed:
            raise InputError(f"{out} holds cases and translations made with another {', '.join(changed)} "
                             f"({', '.join(f'{k}: {saved.get(k)}' for k in changed)}); choose another --out")
        if "files" in preparation:  # cases added since are recorded as they are now
            saved["files"] = {**saved["files"], **preparation["files"]}
            path.write_text(json.dumps(saved, indent=1))
        return
    path.write_text(json.dumps(preparation, indent=1))


def files_record(files: Mapping[str, Mapping[str, Path]], used: Iterable[str]) -> dict[str, dict[str, str]]:
    """Each case's files of the ``used`` sequences (the model's and the segmentation) as ``name size mtime``:
    a file added, removed or replaced since a ranking's cases were cached changes it, and that case's cached
    translations no longer apply. A missing file is recorded as such (reading the case names it)."""
    record = {}
    for case, sequences in files.items():
        record[case] = {}
        for seq, path in sequences.items():
            if seq not in used:
                continue
            try:
                stat = Path(path).stat()
                record[case][seq] = f"{Path(path).name} {stat.st_size} {stat.st_mtime_ns}"
            except OSError:
                record[case][seq] = f"{Path(path).name} missing"
    return record


def _files_changed(before: Mapping | None, now: Mapping) -> str:
    """What differs between two :func:`files_record` listings for the cases both hold (a case added since is
    prepared afresh, one removed is not ranked), in a few words; empty when nothing did."""
    if before is None:
        return "the folder does not record which (made before 2026-12-07)"
    changes = []
    for case in sorted(set(before) & set(now)):
        for seq in sorted(set(before[case]) | set(now[case])):
            if before[case].get(seq) != now[case].get(seq):
                what = "added" if seq not in before[case] else "removed" if seq not in now[case] else "replaced"
                changes.append(f"case {case}: {seq} {what}")
    return ", ".join(changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")


def _lpips_backbone(requested: str | None, say) -> str | None:
    """LPIPS only when its AlexNet trunk is on the machine (never downloaded); otherwise say so and skip it."""
    if requested != "imagenet":
        return requested
    import torchvision.models

    from .perceptual import missing_weights_message

    message = missing_weights_message(torchvision.models.AlexNet_Weights.IMAGENET1K_V1, "AlexNet (LPIPS)",
                                      allow_download=False)
    if message:
        say(f"note: LPIPS left out of A_ij: {message}")
        return None
    return requested


def _write_maps(folder: Path, case, maps: Mapping[str, np.ndarray]) -> None:
    """Each sequence's M_d of one cached case on that case's grid (its overlay and heatmap agree)."""
    from .maps import write_map_files

    folder.mkdir(parents=True, exist_ok=True)
    grid = case.meta.get("grid", {})
    for name, array in maps.items():
        volume = Volume(array, tuple(grid.get("spacing", (1, 1, 1))), tuple(grid.get("origin", (0, 0, 0))),
                        tuple(grid.get("direction", (1, 0, 0, 0, 1, 0, 0, 0, 1))))
        anatomy = case.volumes[name] if case.volumes[name].ndim == 3 else case.volumes[name].mean(0)
        write_map_files(folder, name, volume, anatomy, array, title=f"M_d({name}), {case.name}", grid=volume)


def write_outputs(result: Ranking, out: Path, scores: list[PairScore]) -> None:
    """ranking.csv/json, the pair scores, the bar chart with intervals and the heat matrix of A."""
    table = result.table()
    with (out / "ranking.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    with (out / "pairs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", "source", "target", "psnr", "ssim", "lpips"])
        writer.writeheader()
        writer.writerows(vars(p) for p in scores)
    (out / "ranking.json").write_text(json.dumps(result.to_dict(), indent=1))
    _bar_chart(result, out / "ranking.png")
    _heat_matrix(result, out / "adjacency.png")


def _bar_chart(result: Ranking, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(result.sequences))
    fig, ax = plt.subplots(figsize=(1.6 * len(x) + 2, 3.4))
    for offset, key, values, colour in ((-0.2, "C_t", result.totipotency, "tab:blue"),
                                        (0.2, "C_d", result.differentiation, "tab:red")):
        errors = None
        if key in result.intervals:
            low, high = result.intervals[key].T
            errors = np.vstack([values - low, high - values]).clip(min=0)
        ax.bar(x + offset, values, 0.4, yerr=errors, capsize=3, color=colour, label=key)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, result.sequences)
    ax.set_ylabel("degree centrality")
    ax.set_title("totipotency C_t and imaging differentiation C_d" + ("" if "lpips" in result.terms else " (no LPIPS)"))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _heat_matrix(result: Ranking, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.1 * len(result.sequences) + 2, 1.1 * len(result.sequences) + 1))
    image = ax.imshow(result.adjacency, cmap="viridis")
    ax.set_xticks(range(len(result.sequences)), result.sequences)
    ax.set_yticks(range(len(result.sequences)), result.sequences)
    ax.set_xlabel("target j")
    ax.set_ylabel("source i")
    for i in range(len(result.sequences)):
        for j in range(len(result.sequences)):
            if np.isfinite(result.adjacency[i, j]):
                ax.text(j, i, f"{result.adjacency[i, j]:.2f}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax, label="A_ij")
    ax.set_title("A_ij = nPSNR + nSSIM" + (" - nLPIPS" if "lpips" in result.terms else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
