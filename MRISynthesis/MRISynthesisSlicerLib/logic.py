"""Synthesis on MRML nodes: check the user's selection, run the library's pipeline, show the results.

``SynthesisLogic(scene)`` is what the panel's Logic delegates to, what the headless ``batch.py`` runs
and what the tests drive. Results land in a subject-hierarchy folder per run: the synthesized volume
("<target> synthesized by <model>"), with a real target the colour error map (blue -> red colour table,
window 0 .. the map's maximum, meant as a foreground overlay) and a metrics table. The imaging-
differentiation maps of a case land likewise: one "M_d(<sequence>)" volume per sequence on the reference
grid (``hot`` colour table) and a table of their foreground means. Every output node
carries the provenance as ``MRISynthesis.*`` attributes, "research use only" among them. Input nodes
are read (copied), never changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Mapping

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.inputs import SERIES_SEQUENCES, check_volume
from MRISynthesisLib.sequences import canonical, canonical_keys

from .nodes import (error_color_table, heat_color_table, is_series_node, metrics_table, node_from_volume, place_in_folder,
                    results_folder, sequence_behind, series_from_node, series_node, set_provenance, show_as_overlay,
                    volume_from_node)

Progress = Callable[[float, str], "bool | None"]
HEADLINE = ("ssim", "psnr", "nmse", "mae")


@dataclass
class RunNodes:
    """The nodes one synthesis created."""

    folder: int
    synthesized: object
    error_map: object | None = None
    metrics: object | None = None
    extra: list = field(default_factory=list)
    warnings: list = field(default_factory=list)  # what the user must know about the result (provenance)
    result: object | None = None  # the library's SynthesisResult, when made in this process (headless batch)


@dataclass
class MapNodes:
    """The nodes one run of the imaging-differentiation maps created."""

    folder: int
    maps: dict[str, object]  # sequence -> its M_d volume node, on the reference grid
    table: object  # each map's mean in the foreground, largest first
    shown: str  # the sequence whose map the views show first (:func:`map_to_show`)
    reference: object | None = None  # the input node whose grid the maps are on: the background to show them over
    warnings: list = field(default_factory=list)  # what the user must know about the maps (provenance)


#: sequences that show the contrast agent: what only they show is its uptake, so their map comes first
CONTRAST_ENHANCED = ("T1ce", "DCE")


def map_to_show(means: Mapping[str, float]) -> str:
    """The sequence whose M_d map the views show first: the contrast-enhanced one when the case has it
    (where the agent shows what no other sequence does), else the one the others predict worst."""
    for seq in CONTRAST_ENHANCED:
        if seq in means:
            return seq
    return max(means, key=means.get)


#: node classes that hold a series in their voxel components (MultiVolume, DWI, vector volumes)
SERIES_NODES = ("vtkMRMLMultiVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode", "vtkMRMLTensorVolumeNode")


def canonical_inputs(inputs: Mapping[str, object]) -> dict[str, object]:
    """The selected nodes under canonical sequence names (``t1c`` is T1ce), an unknown name refused by name."""
    return canonical_keys({seq: node for seq, node in inputs.items() if node is not None},
                          describe=lambda node: node.GetName(), verb="selected")


def canonical_selection(inputs: Mapping[str, object], target: str) -> tuple[dict[str, object], str]:
    """:func:`canonical_inputs` and the canonical target."""
    return canonical_inputs(inputs), canonical(target)


def checked_volume(node, seq: str):
    """The node's Volume after the checks every model needs (finite, not constant, 3D or for DCE and DWI a
    4D series, magnitudes), so a bad node is named before any slow work."""
    volume = series_from_node(node) if seq in SERIES_SEQUENCES else volume_from_node(node)
    return check_volume(volume, seq, f"'{node.GetName()}' ({seq})")


def check_selection(inputs: Mapping[str, object], target: str, real=None) -> None:
    """The messages a user sees for a selection the pipeline cannot run (before any slow work)."""
    chosen = {seq: node for seq, node in inputs.items() if node is not None}
    if not chosen:
        raise InputError("choose at least one input volume")
    if target in chosen:
        raise InputError(f"{target} is the target: it cannot also be an input (select the acquired {target} "
                         "as the real target to evaluate the synthesis)")
    seen: dict[str, str] = {}
    for seq, node in chosen.items():
        key = node.GetID()
        if key in seen:
            raise InputError(f"'{node.GetName()}' is selected for both {seen[key]} and {seq}; choose one volume "
                             "per sequence")
        seen[key] = seq
        _check_kind(node, seq)
    if real is not None:
        if real.GetID() in seen:
            raise InputError(f"'{real.GetName()}' is both an input ({seen[real.GetID()]}) and the real target")
        _check_kind(real, f"real {target}", series=target in SERIES_SEQUENCES)


def _check_kind(node, seq: str, *, series: bool | None = None) -> None:
    """A label map is never an image; DCE and DWI (and a real DCE or DWI target) take a 4D series (a
    sequence node, the volume its browser shows, a MultiVolume), every other sequence one 3D volume."""
    if node.IsA("vtkMRMLLabelMapVolumeNode") or node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"'{node.GetName()}' ({seq}) is a label map or segmentation, not an MR image")
    if (seq in SERIES_SEQUENCES) if series is None else series:
        if not is_series_node(node):
            raise InputError(f"'{node.GetName()}' ({seq}) is one 3D volume; {seq} needs its 4D series (the "
                             "sequence node, the volume its sequence browser shows, or a MultiVolume)")
        return
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"'{node.GetName()}' ({seq}) is not a 3D scalar volume")
    if node.GetImageData() is not None and node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise InputError(f"'{node.GetName()}' ({seq}) has {node.GetImageData().GetNumberOfScalarComponents()} "
                         "components per voxel; a 3D single-component volume is needed (only DCE and DWI are "
                         "taken as 4D series)")
    if any(node.IsA(kind) for kind in SERIES_NODES):  # even of one frame: it is not the 3D image asked for
        raise InputError(f"'{node.GetName()}' ({seq}) is a 4D series ({node.GetClassName()}); a 3D scalar "
                         "volume is needed (choose one frame of it as its own volume)")
    if sequence_behind(node) is not None:
        raise InputError(f"'{node.GetName()}' ({seq}) shows a 4D sequence (its browser steps through frames); "
                         "a 3D scalar volume is needed")


class SynthesisLogic:
    def __init__(self, scene) -> None:
        self.scene = scene

    def synthesize(self, inputs: Mapping[str, object], target: str, model: str, *, reference: str | None = None,
                   register: str = "rigid", device: str = "auto", real=None, progress: Progress | None = None,
                   weights_folder=None, phases: int | None = None, mirror: bool = False) -> RunNodes:
        """Run the pipeline in this process on the selected nodes and show the results."""
        from MRISynthesisLib.pipeline import synthesize

        chosen, target = canonical_selection(inputs, target)
        check_selection(chosen, target, real)
        volumes = {seq: checked_volume(node, seq) for seq, node in chosen.items()}
        result = synthesize(volumes, target, model, reference=reference, register=register,
                            anatomy=panel_anatomy(volumes, weights_folder),
                            real=checked_volume(real, target) if real is not None else None, device=device,
                            progress=progress, weights_folder=weights_folder, phases=phases, mirror=mirror,
                            input_names={seq: f"node '{node.GetName()}'" for seq, node in chosen.items()})
        reference_node = chosen.get(result.provenance["reference"])
        error = (result.error_map.volume, result.error_map.max_error) if result.error_map is not None else None
        metrics = result.metrics["metrics"] if result.metrics is not None else None
        run = self.show(target, model, result.volume, result.provenance, reference_node, metrics=metrics, error=error)
        run.result = result
        return run

    def show(self, target: str, model: str, synthesized, provenance: Mapping[str, object], reference_node=None, *,
             metrics: Mapping[str, Mapping] | None = None, error=None) -> RunNodes:
        """Nodes for a finished synthesis (in this process or read back from a worker process's files)."""
        stamp = datetime.now().strftime("%H:%M:%S")
        folder = results_folder(self.scene, f"MRISynthesis: {target} by {model} ({stamp})", reference_node)
        synth = self._result_node(synthesized, f"{target} synthesized by {model}", folder)
        set_provenance(synth, provenance)
        run = RunNodes(folder, synth, warnings=list(provenance.get("warnings", [])))
        if error is not None:
            volume, max_error = error
            run.error_map = self._result_node(volume, f"{target} error map ({model})", folder, with_series=synth)
            show_as_overlay(run.error_map, error_color_table(self.scene), max_error)
            set_provenance(run.error_map, {**provenance, "map": "|real - synthesized| (IMPORTANT-Net eq. 9)",
                                           "max_error": max_error})
        if metrics is not None:
            rows = [{"metric": k.upper(), "value": float(metrics[k]["volume"])} for k in HEADLINE if k in metrics]
            run.metrics = metrics_table(self.scene, f"{target} metrics ({model})", rows)
            set_provenance(run.metrics, provenance)
            place_in_folder(self.scene, run.metrics, folder)
        return run

    def differentiation_maps(self, inputs: Mapping[str, object], *, model: str = "seq2seq",
                             reference: str | None = None, register: str = "rigid", device: str = "auto",
                             progress: Progress | None = None, weights_folder=None) -> MapNodes:
        """M_d of every selected sequence (at least two), in this process, shown as heat-coloured volumes."""
        from MRISynthesisLib.differentiation import case_differentiation_maps

        chosen = canonical_inputs(inputs)
        check_selection(chosen, "")
        volumes = {seq: checked_volume(node, seq) for seq, node in chosen.items()}
        result = case_differentiation_maps(volumes, model, reference=reference and canonical(reference),
                                           register=register, device=device,
                                           anatomy=panel_anatomy(volumes, weights_folder),
                                           progress=progress, weights_folder=weights_folder,
                                           input_names={seq: f"node '{node.GetName()}'" for seq, node in chosen.items()})
        return self.show_maps(result.maps, result.foreground_means, result.provenance,
                              chosen.get(result.provenance["reference"]))

    def show_maps(self, maps: Mapping[str, object], means: Mapping[str, float], provenance: Mapping[str, object],
                  reference_node=None) -> MapNodes:
        """Nodes for finished maps ({sequence: Volume} on the reference grid), in this process or read back
        from a worker's files: one window for all (0 to the 99.5th percentile of the largest), so their
        brightness compares, through the ``hot`` colour table, meant as a foreground over the reference."""
        import numpy as np

        stamp = datetime.now().strftime("%H:%M:%S")
        folder = results_folder(self.scene, f"MRISynthesis: differentiation maps ({stamp})", reference_node)
        top = max(float(np.percentile(v.array[v.array > 0], 99.5)) if (v.array > 0).any() else 0.0
                  for v in maps.values()) or 1.0
        nodes = {}
        for seq, volume in maps.items():
            node = node_from_volume(self.scene, volume, f"M_d({seq})")
            place_in_folder(self.scene, node, folder)
            show_as_overlay(node, heat_color_table(self.scene), top)
            set_provenance(node, {**provenance, "sequence": seq, "foreground_mean": means[seq]})
            nodes[seq] = node
        rows = [{"sequence": seq, "mean M_d in the foreground": float(means[seq])}
                for seq in sorted(means, key=means.get, reverse=True)]
        table = metrics_table(self.scene, "imaging differentiation (M_d)", rows)
        set_provenance(table, provenance)
        place_in_folder(self.scene, table, folder)
        return MapNodes(folder, nodes, table, map_to_show(means), reference_node, list(provenance.get("warnings", [])))

    def _result_node(self, volume, name: str, folder: int, with_series=None):
        """A result in ``folder`` as the views show it: a scalar volume, or for a series target (Seq2Seq
        breast DCE, DWI) the volume a sequence browser shows, which steps through its frames: a new browser,
        or that of ``with_series`` (the synthesized series, which its error map then steps with)."""
        if not volume.is_series:
            node = node_from_volume(self.scene, volume, name)
            place_in_folder(self.scene, node, folder)
            return node
        browser = _browser_of(with_series) if with_series is not None else None
        sequence, _, proxy = series_node(self.scene, volume, name, browser=browser)
        for node in (sequence, proxy):
            place_in_folder(self.scene, node, folder)
        return proxy


def _browser_of(proxy):
    """The sequence browser that puts ``proxy`` in the views (None for a plain volume)."""
    scene = proxy.GetScene()
    for k in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(k, "vtkMRMLSequenceBrowserNode")
        if browser.GetSequenceNode(proxy) is not None:
            return browser
    return None


def model_choices(target: str, present: set[str], weights_folder=None) -> tuple[str, list[tuple[str, str, str | None]]]:
    """(anatomy, [(weights file, model, None or why it cannot make ``target``)]) for the panel's model list:
    the bundled models of the anatomy the selected sequences belong to (DWI or DCE: breast)."""
    from MRISynthesisLib.selection import explain, infer_anatomy
    from MRISynthesisLib.weights import read_manifest

    anatomy = infer_anatomy(set(present), weights_folder)
    models = {e.file: e.model for e in read_manifest(weights_folder)}
    return anatomy, [(file, models[file], reason) for file, reason in explain(target, set(present), anatomy,
                                                                               weights_folder)]


def inputs_for_model(inputs: Mapping[str, object], weights_file: str | None, weights_folder=None) -> dict[str, object]:
    """The selected nodes that the model of ``weights_file`` takes. The panel offers a fixed-input model
    whenever its inputs are a subset of the selection (TC-MGAN, T2 alone, when T1, T2 and FLAIR are
    selected), while the pipeline refuses an input a model does not take; an any-to-any model keeps all."""
    from MRISynthesisLib.weights import read_manifest

    entries = {e.file: e for e in read_manifest(weights_folder)}
    if weights_file not in entries:
        raise InputError(f"no bundled model '{weights_file}' to run; choose one from the list")
    taken = set(entries[weights_file].inputs)
    return {seq: node for seq, node in inputs.items() if node is not None and canonical(seq) in taken}


def assign_by_name(nodes) -> dict[str, object]:
    """{sequence: node} for the panel's Auto-assign, from each volume's DICOM series description or else its
    name (the last match of a sequence wins). Label maps and this module's own results are skipped: a
    "T1ce synthesized by ..." volume, an error map or an M_d map is named after a sequence but is not one
    (they carry ``MRISynthesis.*`` attributes)."""
    from MRISynthesisLib.sequences import guess_from_description

    from .nodes import PROVENANCE_PREFIX

    assigned: dict[str, object] = {}
    for node in nodes:
        if node.IsA("vtkMRMLLabelMapVolumeNode"):
            continue
        if any(name.startswith(PROVENANCE_PREFIX) for name in (node.GetAttributeNames() or ())):
            continue
        sequence = guess_from_description(node.GetAttribute("DICOM.SeriesDescription") or node.GetName())
        if sequence is not None:
            assigned[sequence] = node
    return assigned


def write_inputs(inputs: Mapping[str, object], folder, real=None, target: str = "",
                 file_name: Callable[[str], str] = lambda seq: f"{seq}.nii") -> tuple[dict[str, str], str | None]:
    """The selected nodes as files the worker process reads: each node as the views show it (parent
    transform applied) and DCE/DWI as 4D NIfTI with their frames in a JSON sidecar, so the worker
    synthesizes exactly what the in-process Logic would. Returns ({sequence: path}, real path or None).

    Uncompressed: these temporary files are written on Slicer's GUI thread before the worker starts, where
    gzip of a 4D series would hold the panel for seconds, and are read once."""
    from pathlib import Path

    from MRISynthesisLib.volume import write_volume

    folder = Path(folder)
    files = {seq: str(write_volume(checked_volume(node, seq), folder / file_name(seq), compress=False))
             for seq, node in inputs.items() if node is not None}
    real_file = (str(write_volume(checked_volume(real, target or "real"), folder / "real.nii", compress=False))
                 if real is not None else None)
    return files, real_file


def panel_anatomy(sequences, weights_folder=None) -> str:
    """The anatomy whose bundled models the panel lists for these sequences (DWI or DCE: breast; else brain),
    the one every run from the panel uses: T1 and T2 alone fit a brain and a breast Seq2Seq alike."""
    from MRISynthesisLib.selection import infer_anatomy

    return infer_anatomy(set(sequences), weights_folder)


def weights_anatomy(weights_file: str | None, weights_folder=None) -> str | None:
    """The anatomy of the bundled weight file the panel's model list holds (its item data)."""
    from MRISynthesisLib.weights import read_manifest

    return next((e.anatomy for e in read_manifest(weights_folder) if e.file == weights_file), None)


def worker_command(python: str, files: Mapping[str, str], target: str, model: str, out: str, *,
                   reference: str | None = None, register: str = "rigid", device: str = "auto",
                   real: str | None = None, error_map: str | None = None, anatomy: str | None = None) -> list[str]:
    """The ``mri-synthesis synthesize`` command the panel runs in a separate process (``PythonSlicer``), so
    the GUI stays responsive; it reports ``PROGRESS`` lines and can be killed to cancel. ``anatomy``: the
    one whose models the panel lists (:func:`panel_anatomy`), so that the worker runs the weights shown."""
    command = [python, "-m", "MRISynthesisLib", "synthesize", "--model", model, "--target", target, "--out", out,
               "--register", register, "--device", device, "--progress-lines",
               "--input", *[f"{seq}={path}" for seq, path in files.items()]]
    if anatomy:
        command += ["--anatomy", anatomy]
    if reference:
        command += ["--reference", reference]
    if real:
        command += ["--real", real]
        if error_map:
            command += ["--error-map", error_map]
    return command


def maps_worker_command(python: str, files: Mapping[str, str], out: str, *, reference: str | None = None,
                        register: str = "rigid", device: str = "auto", anatomy: str | None = None) -> list[str]:
    """The ``mri-synthesis maps`` command the panel runs in a worker process (as :func:`worker_command`)."""
    command = [python, "-m", "MRISynthesisLib", "maps", "--out", out, "--register", register, "--device", device,
               "--progress-lines", "--input", *[f"{seq}={path}" for seq, path in files.items()]]
    return command + (["--reference", reference] if reference else []) + (["--anatomy", anatomy] if anatomy else [])


def rank_worker_command(python: str, anatomy: str, subjects: int, out: str, *, device: str = "auto") -> list[str]:
    """The ``mri-synthesis rank`` command on held-out phantom subjects that the panel runs in a worker process
    (as :func:`worker_command`): a ranking takes minutes, which the GUI thread must not spend."""
    return [python, "-m", "MRISynthesisLib", "rank", "--data", f"phantom:{anatomy}:{int(subjects)}", "--model",
            "seq2seq", "--out", out, "--device", device, "--progress-lines"]


def compare_worker_command(python: str, data: str, out: str, *, register: str = "rigid",
                           device: str = "auto") -> list[str]:
    """The ``mri-synthesis compare`` command on the panel's case folder, run in a worker process."""
    return [python, "-m", "MRISynthesisLib", "compare", "--data", data, "--out", out, "--register", register,
            "--device", device, "--progress-lines"]


def read_maps(folder) -> tuple[dict[str, object], dict[str, float], dict]:
    """({sequence: M_d Volume}, {sequence: foreground mean}, provenance) from a ``maps`` run's folder."""
    import json
    from pathlib import Path

    from MRISynthesisLib.volume import read_volume

    report = json.loads((Path(folder) / "maps.json").read_text())
    maps = {seq: read_volume(entry["volume"]) for seq, entry in report["maps"].items()}
    return maps, {seq: entry["foreground_mean"] for seq, entry in report["maps"].items()}, report["provenance"]


def worker_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """What to set in the worker process's environment: PYTHONPATH led by the folder that holds
    MRISynthesisLib, so ``python -m MRISynthesisLib`` finds the same library as the panel, also when the
    module is loaded from a source checkout (where only the panel's own sys.path was extended); and the
    panel's process id, by which a worker tells that its launcher died before it started watching it;
    and UTF-8 for its output, which the panel decodes as UTF-8 (a pipe otherwise takes the Windows code
    page, which garbles, or cannot even print, a path or message outside it)."""
    import os
    from pathlib import Path

    import MRISynthesisLib
    from MRISynthesisLib.worker import PANEL_PID_VARIABLE

    root = str(Path(MRISynthesisLib.__file__).resolve().parents[1])
    rest = [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    return {"PYTHONPATH": os.pathsep.join([root, *rest]), PANEL_PID_VARIABLE: str(os.getpid()),
            "PYTHONIOENCODING": "utf-8"}


def remove_work_folder(path) -> bool:
    """Delete a run's temporary folder (it holds copies of the patient's volumes); True once it is gone.

    On Windows the files of a cancelled worker stay locked until its process has exited, which it does
    within a second or so of its launcher being killed, so a False here means "try again shortly"."""
    import os
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    return not os.path.exists(path)


def complete_lines(pending: str, text: str) -> tuple[list[str], str]:
    """(the complete lines of ``pending + text``, the unfinished rest): a worker's output arrives in chunks
    that may split a ``PROGRESS`` or ``error:`` line, which is only read once it is whole."""
    parts = (pending + text).split("\n")
    return [line.rstrip("\r") for line in parts[:-1]], parts[-1]


def parse_progress(line: str) -> tuple[float, str] | None:
    """(fraction, message) of a worker's ``PROGRESS <fraction> <message>`` line, else None."""
    if not line.startswith("PROGRESS "):
        return None
    parts = line.rstrip("\n").split(" ", 2)
    try:
        return float(parts[1]), parts[2] if len(parts) > 2 else ""
    except ValueError:
        return None


#: what each phantom case holds as nodes, and what its label map is called
PHANTOM_CASES = {"brain": (("T1", "T1ce", "T2", "FLAIR"), "tumour labels"),
                 "breast": (("T1", "DCE", "DWI", "ADC", "T2"), "lesion labels")}


def load_phantom(scene, seed: int = 7, resolution: float = 2.0, anatomy: str = "brain") -> dict[str, object]:
    """A held-out phantom subject as nodes, as acquired (own grids, motion), and its labels; what the panel's
    "Load a phantom case" button and the Sample Data buttons give a new user. Brain: T1, T1ce, T2, FLAIR and
    the tumour labels. Breast: T1, ADC, T2, and DCE and DWI as sequence nodes (a browser's proxy volume
    shows them), and the lesion labels."""
    from MRISynthesisLib.errors import InputError
    from MRISynthesisLib.phantom import sample

    if anatomy not in PHANTOM_CASES:
        raise InputError(f"unknown phantom anatomy '{anatomy}'; choose {' or '.join(PHANTOM_CASES)}")
    sequences, label_name = PHANTOM_CASES[anatomy]
    subject = sample(anatomy, seed, resolution=resolution)
    nodes = {}
    for seq in sequences:
        volume, name = subject.sequences[seq], f"phantom {seed} {seq}"
        nodes[seq] = series_node(scene, volume, name)[0] if volume.is_series else node_from_volume(scene, volume, name)
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"phantom {seed} {label_name}")
    nodes["labels"] = node_from_volume(scene, subject.labels, f"phantom {seed} {label_name}", node=labels)
    return nodes


def show_ranking(scene, ranking: Mapping) -> tuple[object, object]:
    """A table node (C_t, C_d, ranks and intervals per sequence) and a bar-chart plot node of C_t and C_d,
    from ``rank_cmd``'s ``ranking.json`` content."""
    rows = ranking["table"]
    table = metrics_table(scene, "sequence ranking (Seq2Seq Eq. 4)", rows)
    notes = list(ranking.get("notes", []))
    if notes:  # every note, not only the last: one attribute, one note per line
        table.SetAttribute("MRISynthesis.note", "\n".join(notes))
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "sequence ranking chart")
    chart.SetTitle("totipotency C_t and imaging differentiation C_d")
    chart.SetXAxisTitle("sequence")
    chart.SetYAxisTitle("degree centrality")
    numeric = scene.AddNewNodeByClass("vtkMRMLTableNode", "sequence ranking (numbers)")
    import vtk

    for name, values in (("index", [float(k) for k in range(len(rows))]), ("C_t", [r["C_t"] for r in rows]),
                         ("C_d", [r["C_d"] for r in rows])):
        array = vtk.vtkDoubleArray()
        array.SetName(name)
        for v in values:
            array.InsertNextValue(float(v))
        numeric.AddColumn(array)
    labels = vtk.vtkStringArray()
    labels.SetName("sequence")
    for r in rows:
        labels.InsertNextValue(r["sequence"])
    numeric.AddColumn(labels)
    for column in ("C_t", "C_d"):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", column)
        series.SetAndObserveTableNodeID(numeric.GetID())
        series.SetXColumnName("index")
        series.SetYColumnName(column)
        series.SetLabelColumnName("sequence")
        series.SetPlotType(series.PlotTypeBar)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return table, chart
