"""MRISynthesis: 3D Slicer module that synthesizes missing MRI sequences.

This file is deliberately thin: the GUI and its wiring. The work lives in the pure-Python package
MRISynthesisLib (which never imports slicer or qt) and the MRML glue in MRISynthesisSlicerLib (no Qt;
tested against a real MRML scene). Synthesis runs in a separate PythonSlicer process streaming
progress lines, so the GUI never freezes and Cancel kills it. Research use only.
"""

import codecs
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile

import ctk
import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

try:  # Slicer >= 5.4
    from slicer.i18n import tr as _
except ImportError:  # older Slicer: no translation support

    def _(text):
        return text


LIBRARY_PACKAGE = "MRISynthesisLib"


def _ensureLibraryImportable():
    """Make MRISynthesisLib importable when the module is loaded from a source checkout.

    In a built or installed extension the package sits next to this file in
    qt-scripted-modules, which Slicer already has on sys.path. When the module is
    loaded from source through "Additional module paths" (<repo>/MRISynthesis), the
    package is one level up (<repo>/MRISynthesisLib), so <repo> is appended to
    sys.path, but only if the package is not importable already and really is there.
    Returns the folder that was added, or None.
    """
    if importlib.util.find_spec(LIBRARY_PACKAGE) is not None:
        return None
    repositoryRoot = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(repositoryRoot, LIBRARY_PACKAGE, "__init__.py")):
        return None
    if repositoryRoot not in sys.path:
        sys.path.append(repositoryRoot)
    importlib.invalidate_caches()
    return repositoryRoot


_ensureLibraryImportable()


#
# MRISynthesis
#


class MRISynthesis(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MRI Synthesis")
        self.parent.categories = ["Filtering"]
        self.parent.dependencies = []
        self.parent.contributors = ["MRISynthesis contributors"]
        self.parent.helpText = _(
            "Synthesizes a missing MRI sequence (for example post-contrast T1, FLAIR or T2) "
            "from the sequences that were acquired, with five published deep-learning models, "
            "and shows error maps and imaging-differentiation maps of the result.<br><br>"
            "<b>Research use only:</b> not a medical device, not for diagnosis or treatment "
            "decisions.<br><br>"
            "Choose the acquired volumes (or assign them by name), the target and a model; only models "
            "that can make the target from your inputs are offered. Results appear in a subject-hierarchy "
            "folder: the synthesized volume, with a real target a colour error map overlay and a metrics "
            "table. The same work runs headless: <code>mri-synthesis --help</code> (or "
            "<code>Slicer --no-main-window --python-script MRISynthesisSlicerLib/batch.py -- ...</code>).<br><br>"
            'See the <a href="https://github.com/mrisynthesis/SlicerMRISynthesis">project page</a> '
            "for documentation."
        )
        self.parent.acknowledgementText = _(
            "MRISynthesis implements models described in these publications; please cite them "
            "when you use the corresponding model:<ul>"
            "<li>T. Zhang, T. Tan, L. Han et al., <i>IMPORTANT-Net: Integrated MRI "
            "Multi-Parameter Reinforcement Fusion Generator with Attention Network for "
            "Synthesizing Absent Data</i>.</li>"
            "<li>L. Han, T. Tan, T. Zhang et al., <i>Synthesis-Based Imaging-Differentiation "
            "Representation Learning for Multi-Sequence 3D/4D MRI</i>.</li>"
            "<li>B. Xin, Y. Hu, Y. Zheng, H. Liao, <i>Multi-Modality Generative Adversarial "
            "Networks with Tumor Consistency Loss for Brain MR Image Synthesis</i>.</li>"
            "<li>A study of U-Net models that generate synthetic post-contrast T1 images of "
            "gliomas from T1, T2 and T2-FLAIR without gadolinium-based contrast agents "
            "(Erasmus Glioma Database).</li>"
            "<li>C. Haarburger, N. Horst, D. Truhn et al., <i>Multiparametric Magnetic Resonance "
            "Image Synthesis using Generative Adversarial Networks</i>.</li>"
            "</ul>"
        )
        # the phantoms join the Sample Data module once every module is loaded
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the brain and breast phantoms to the Sample Data module (simulated on click, nothing is
    downloaded). Where Sample Data is absent the module still loads; the log says why there are none."""
    try:
        import SampleData

        from MRISynthesisSlicerLib.sampledata import register
    except ImportError as error:
        logging.warning(f"MRISynthesis: phantoms not added to Sample Data: {error}")
        return []
    icons = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "Icons")
    return register(SampleData, icons, loadSampleCase)


def loadSampleCase(anatomy, seed):
    """What a phantom's Sample Data button does: install what is missing (after asking), simulate, show."""
    nodes = None
    with slicer.util.tryWithErrorDisplay(_("Could not simulate the phantom case."), waitCursor=True):
        logic = MRISynthesisLogic()
        logic.ensureDependencies()
        nodes = logic.loadPhantom(seed, anatomy=anatomy)
        slicer.util.setSliceViewerLayers(background=nodes["T1"], fit=True)
    return nodes


def aboutText(logic):
    """Text of the About section; names the problem when the library is missing."""
    notice = _("Research use only: not for diagnosis or treatment decisions.")
    try:
        version = logic.libraryVersion()
    except ImportError as error:
        logging.error(f"MRISynthesis: {error}")
        return notice + "\n\n" + _(
            "Error: the Python package MRISynthesisLib could not be imported: {error}. "
            "Reinstall the MRISynthesis extension, or when loading the module from a source "
            "checkout keep the MRISynthesisLib folder next to the MRISynthesis folder."
        ).format(error=error)
    text = notice + "\n\n" + _("MRISynthesisLib version: {version}").format(version=version)
    try:  # what the first run will offer to install, said before it
        missing = logic.missingPackages()
    except Exception as error:  # noqa: BLE001 - the About text must show whatever goes wrong here
        missing = [str(error)]
    if importlib.util.find_spec("torch") is None:
        missing = ["torch (from the PyTorch extension)", *missing]
    if missing:
        text += "\n" + _("Not installed yet (the first run offers to install them): {packages}").format(
            packages=", ".join(missing))
    return text


#: what a reference can be: the 3D sequences (a 4D series is registered by its frames, not a grid to make)
REFERENCES = ("T1", "T1ce", "T2", "FLAIR")
#: what a model can make: the 3D sequences, and the breast Seq2Seq's DWI and DCE series (a sequence node)
TARGETS = (*REFERENCES, "DWI", "DCE")
REGISTRATION_PRESETS = ("rigid", "affine", "syn", "none")

try:  # Slicer >= 5.4: panel state in a parameter node, so a saved scene restores it
    from typing import Annotated

    from slicer import vtkMRMLScalarVolumeNode
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
except ImportError:  # older Slicer (or stand-ins): the panel works without saved state
    parameterNodeWrapper = None

if parameterNodeWrapper is not None:

    @parameterNodeWrapper
    class MRISynthesisParameterNode:
        """Names match the widgets' SlicerParameterName properties in the .ui file.

        Slicer binds a QComboBox only to a field with a fixed Choice list (it clears the box and fills it
        with the choices) and a ctkSliderWidget only to a bounded float. The model and device lists change
        with the selection and the machine, so those two boxes are not bound.
        """

        t1: vtkMRMLScalarVolumeNode
        t1ce: vtkMRMLScalarVolumeNode
        t2: vtkMRMLScalarVolumeNode
        flair: vtkMRMLScalarVolumeNode
        dwi: vtkMRMLScalarVolumeNode
        dce: vtkMRMLScalarVolumeNode
        real: vtkMRMLScalarVolumeNode
        target: Annotated[str, Choice(list(TARGETS))] = "T1ce"
        reference: Annotated[str, Choice(list(REFERENCES))] = "T1"
        register: Annotated[str, Choice(list(REGISTRATION_PRESETS))] = "rigid"
        errorOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5


#: the library's torch requirement (pyproject.toml; MONAI 1.5 needs 2.4.1), passed to the PyTorch
#: extension's installer and checked against a torch already installed
TORCH_REQUIREMENT = ">=2.4.1"
#: Python packages the library needs beyond what Slicer and its PyTorch extension ship
#: (module name to import -> pip requirement)
REQUIRED_PACKAGES = {
    "ants": "antspyx>=0.4.2", "monai": "monai>=1.5", "nibabel": "nibabel>=5.1", "nilearn": "nilearn>=0.10.3",
    "skimage": "scikit-image>=0.21", "sklearn": "scikit-learn>=1.3", "lpips": "lpips>=0.1.4",
    "pytorch_fid": "pytorch-fid>=0.3", "tqdm": "tqdm>=4.60", "matplotlib": "matplotlib>=3.7",
}
SEQUENCE_SELECTORS = {"T1": "t1Selector", "T1ce": "t1ceSelector", "T2": "t2Selector", "FLAIR": "flairSelector",
                      "DWI": "dwiSelector", "DCE": "dceSelector"}


#
# MRISynthesisWidget
#


class MRISynthesisWidget(ScriptedLoadableModuleWidget):
    """The panel (Resources/UI/MRISynthesis.ui): inputs, target, model, options, Synthesize/Cancel."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.ui = None
        self._parameterNode = None
        self._parameterGuiTag = None
        self._sceneCloseObserver = None
        self._sceneStartCloseObserver = None
        self.statusLabel = None
        self.process = None
        self.workFolder = None
        self._request = None
        self._pendingOutput = ""
        self._outputDecoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = MRISynthesisLogic()
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRISynthesis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.statusLabel = self.ui.aboutLabel
        self.ui.aboutLabel.setText(aboutText(self.logic))
        for sequence in TARGETS:
            self.ui.targetComboBox.addItem(sequence)
        self.ui.targetComboBox.currentText = "T1ce"
        for preset in REGISTRATION_PRESETS:
            self.ui.registerComboBox.addItem(preset)
        for sequence in REFERENCES:
            self.ui.referenceComboBox.addItem(sequence)
        for anatomy in ("brain", "breast"):
            self.ui.rankAnatomyComboBox.addItem(anatomy)
        self.ui.deviceComboBox.addItem("auto")
        self.ui.deviceComboBox.addItem("cpu")
        gpu = self.logic.gpuName()
        if gpu:
            self.ui.deviceComboBox.addItem(f"cuda ({gpu})", "cuda")
        for selector in [*SEQUENCE_SELECTORS.values(), "realSelector"]:
            getattr(self.ui, selector).connect("currentNodeChanged(vtkMRMLNode*)", self.updateModels)
        self.ui.targetComboBox.connect("currentIndexChanged(int)", self.updateModels)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.updateApply)
        self.ui.autoAssignButton.connect("clicked(bool)", self.onAutoAssign)
        self.ui.loadPhantomButton.connect("clicked(bool)", self.onLoadPhantom)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyOrCancel)
        self.ui.errorOpacitySlider.connect("valueChanged(double)", self.onOpacity)
        self.ui.rankButton.connect("clicked(bool)", self.onRank)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.mapsButton.connect("clicked(bool)", self.onMaps)
        self.initializeParameterNode()
        # Close Scene removes the parameter node: bind the panel to the new scene's one
        self._sceneCloseObserver = slicer.mrmlScene.AddObserver(slicer.mrmlScene.EndCloseEvent,
                                                                lambda *_: self.initializeParameterNode())
        # a run's results would land in the next scene, beside nodes that are gone: closing cancels it
        self._sceneStartCloseObserver = slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent,
                                                                     lambda *_: self.process and self.cancel())
        self.updateModels()

    def initializeParameterNode(self):
        """Bind the panel to this scene's parameter node (Slicer >= 5.4), unbinding the previous one."""
        if parameterNodeWrapper is None:
            return
        self.releaseParameterNode()
        self._parameterNode = MRISynthesisParameterNode(self.logic.getParameterNode())
        self._parameterGuiTag = self._parameterNode.connectGui(self.ui)

    def releaseParameterNode(self):
        if self._parameterNode is not None and self._parameterGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterGuiTag)
        self._parameterNode, self._parameterGuiTag = None, None

    def cleanup(self):
        self.cancel()
        for name in ("_sceneCloseObserver", "_sceneStartCloseObserver"):
            if getattr(self, name) is not None:
                slicer.mrmlScene.RemoveObserver(getattr(self, name))
                setattr(self, name, None)
        self.releaseParameterNode()

    # ------------------------------------------------------------------ selection
    def selectedInputs(self):
        return {seq: getattr(self.ui, name).currentNode() for seq, name in SEQUENCE_SELECTORS.items()
                if getattr(self.ui, name).currentNode() is not None}

    def updateModels(self, *args):
        target = self.ui.targetComboBox.currentText
        present = {seq for seq in self.selectedInputs() if seq != target}
        self.ui.modelComboBox.clear()
        reasons = []
        try:
            anatomy, choices = self.logic.modelChoices(target, present)
        except Exception as error:  # the library missing, or a models folder that cannot be read: say which
            anatomy, choices = None, []
            reasons.append(str(error))
        for file, model, reason in choices:
            if reason is None:
                self.ui.modelComboBox.addItem(model, file)
            else:
                reasons.append(reason)
        if anatomy:
            reasons.insert(0, _("Models for {anatomy} cases (from the selected sequences).").format(anatomy=anatomy))
        self.ui.modelReasonLabel.setText("\n".join(reasons))
        self.updateApply()

    def updateApply(self, *args):
        if self.process is not None:
            return
        ready = self.ui.modelComboBox.count > 0 and bool(self.selectedInputs())
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = "" if ready else _("Choose inputs and a target that a bundled model can make")

    def onAutoAssign(self):
        from MRISynthesisSlicerLib.logic import assign_by_name

        nodes = assign_by_name(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"))
        for sequence, node in nodes.items():
            if sequence in SEQUENCE_SELECTORS:
                getattr(self.ui, SEQUENCE_SELECTORS[sequence]).setCurrentNode(node)

    def onLoadPhantom(self):
        with slicer.util.tryWithErrorDisplay(_("Could not simulate the phantom case."), waitCursor=True):
            self.logic.ensureDependencies()
            nodes = self.logic.loadPhantom()
            for sequence, name in SEQUENCE_SELECTORS.items():
                getattr(self.ui, name).setCurrentNode(nodes.get(sequence) if sequence != "T1ce" else None)
            self.ui.realSelector.setCurrentNode(nodes["T1ce"])
            self.ui.targetComboBox.currentText = "T1ce"
            slicer.util.setSliceViewerLayers(background=nodes["T1"], fit=True)

    # ------------------------------------------------------------------ running
    def onApplyOrCancel(self):
        if self.process is not None:
            self.cancel()
            self.ui.statusLabel.setText(_("Cancelled; nothing was added to the scene."))
            return
        self.launch(self.start, _("Synthesis could not start: {error}"))

    def launch(self, start, failure):
        """Run ``start`` (which prepares a worker run and starts it) unless a run is going; a failure to start
        is shown (``failure`` with its ``{error}``) and logged, and the panel is left ready."""
        if self.process is not None:
            return
        try:
            self.logic.ensureDependencies()
            start()
        except Exception as error:  # shown to the user, and in the log
            logging.exception("MRISynthesis")
            slicer.util.errorDisplay(failure.format(error=error))
            self.finishRun()

    def device(self):
        return self.ui.deviceComboBox.currentData or self.ui.deviceComboBox.currentText

    def python(self):
        """The interpreter that runs the worker: Slicer's launcher, or this one outside Slicer's install."""
        return shutil.which("PythonSlicer") or sys.executable

    def start(self):
        from MRISynthesisSlicerLib.logic import (check_selection, inputs_for_model, weights_anatomy, worker_command,
                                                 write_inputs)

        target = self.ui.targetComboBox.currentText
        real = self.ui.realSelector.currentNode()
        check_selection(self.selectedInputs(), target, real)
        # a model is offered when it takes a subset of the selection (TC-MGAN: T2 of T1, T2, FLAIR)
        inputs = inputs_for_model(self.selectedInputs(), self.ui.modelComboBox.currentData)
        self.workFolder = tempfile.mkdtemp(prefix="MRISynthesis-")
        # as the views show them (parent transforms applied), DCE/DWI sequences as 4D files
        files, realFile = write_inputs(inputs, self.workFolder, real, target)
        model = self.ui.modelComboBox.currentText
        out = os.path.join(self.workFolder, "synthesized.nrrd")
        errorFile = os.path.join(self.workFolder, "error.nrrd") if real is not None else None
        reference = self.ui.referenceComboBox.currentText if self.ui.referenceComboBox.currentText in files else None
        command = worker_command(self.python(), files, target, model, out, reference=reference,
                                 register=self.ui.registerComboBox.currentText, device=self.device(), real=realFile,
                                 error_map=errorFile, anatomy=weights_anatomy(self.ui.modelComboBox.currentData))
        self._request = {"kind": "synthesis", "target": target, "model": model, "out": out, "error": errorFile,
                         "reference": inputs.get(reference or "T1") or next(iter(inputs.values())),
                         "real": real}  # as chosen when the run began, whatever the selector shows when it ends
        self.startWorker(command)

    def startMaps(self):
        """The imaging-differentiation maps of the selected sequences (and the real target, which counts as
        a sequence of the case) in a worker process: ``mri-synthesis maps``."""
        from MRISynthesisSlicerLib.logic import (canonical_inputs, check_selection, maps_worker_command, panel_anatomy,
                                                 write_inputs)

        from MRISynthesisLib.errors import InputError

        inputs = canonical_inputs(self.selectedInputs())
        real, target = self.ui.realSelector.currentNode(), self.ui.targetComboBox.currentText
        if real is not None:
            if target in inputs:
                raise InputError(f"{target} is selected as an input and as the real target; keep one")
            inputs[target] = real
        check_selection(inputs, "")
        if len(inputs) < 2:
            raise InputError("differentiation maps compare sequences with each other: select at least two")
        self.workFolder = tempfile.mkdtemp(prefix="MRISynthesis-maps-")
        files, _unused = write_inputs(inputs, self.workFolder)
        out = os.path.join(self.workFolder, "maps")
        reference = self.ui.referenceComboBox.currentText if self.ui.referenceComboBox.currentText in files else None
        command = maps_worker_command(self.python(), files, out, reference=reference,
                                      register=self.ui.registerComboBox.currentText, device=self.device(),
                                      anatomy=panel_anatomy(inputs))
        self._request = {"kind": "maps", "out": out, "inputs": inputs}
        self.startWorker(command)

    def startWorker(self, command):
        from MRISynthesisSlicerLib.logic import worker_environment

        # a parent makes Qt, not Python's reference count, own the process: finishRun, called from its own
        # finished/errorOccurred signals, may then drop it safely and deleteLater frees it afterwards
        self.process = qt.QProcess(self.parent)
        self.process.setProcessChannelMode(qt.QProcess.MergedChannels)
        # the environment Slicer started with, as slicer.util.launchConsoleProcess uses: the worker,
        # PythonSlicer, is a launcher that sets up Slicer's paths itself (not twice over the panel's)
        startup = getattr(slicer.util, "startupEnvironment", None)
        base = dict(startup()) if startup is not None else dict(os.environ)
        environment = qt.QProcessEnvironment()
        for name, value in {**base, **worker_environment(base)}.items():
            environment.insert(name, value)
        self.process.setProcessEnvironment(environment)
        self.process.connect("readyReadStandardOutput()", self.onOutput)
        self.process.connect("finished(int,QProcess::ExitStatus)", self.onFinished)
        self.process.connect("errorOccurred(QProcess::ProcessError)", self.onProcessError)
        self.output = []
        self._pendingOutput = ""
        self._outputDecoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.ui.applyButton.text = _("Cancel")
        self.ui.applyButton.enabled = True
        for button in (self.ui.mapsButton, self.ui.rankButton, self.ui.compareButton):
            button.enabled = False
        self.setSelectionEnabled(False)  # the run's inputs are fixed; its results land where they were chosen
        self.ui.progressBar.value = 0
        self.ui.statusLabel.setText(_("Starting..."))
        self.process.start(command[0], command[1:])

    def onOutput(self):
        from MRISynthesisSlicerLib.logic import complete_lines, parse_progress

        if self.process is None:
            return
        # one decoder per run: a character split between two reads is joined, not replaced
        text = self._outputDecoder.decode(bytes(self.process.readAllStandardOutput().data()))
        lines, self._pendingOutput = complete_lines(self._pendingOutput, text)
        for line in lines:
            progress = parse_progress(line)
            if progress is None:
                self.output.append(line)
                logging.info(f"MRISynthesis worker: {line}")
                continue
            self.ui.progressBar.value = int(100 * progress[0])
            self.ui.statusLabel.setText(progress[1])

    def onProcessError(self, error):
        """The worker could not start (no PythonSlicer, say): ``finished`` never comes, so end the run here."""
        if self.process is None or error != qt.QProcess.FailedToStart:
            return
        program = self.process.program()
        self.finishRun()
        slicer.util.errorDisplay(_("The worker process could not start ({program}).").format(program=program))
        self.ui.statusLabel.setText(_("Failed; see the message and the log."))

    def onFinished(self, exitCode, exitStatus=None):
        if self.process is None:
            return
        if exitStatus == qt.QProcess.CrashExit and exitCode == 0:  # killed by a signal: not a success
            exitCode = 1
        self._pendingOutput += self._outputDecoder.decode(b"", final=True)
        if self._pendingOutput:  # the last line had no newline
            self.output.append(self._pendingOutput)
            self._pendingOutput = ""
        try:
            if exitCode != 0:
                errors = [line for line in self.output if line.startswith("error:")] or self.output[-5:]
                slicer.util.errorDisplay(_("The run failed:") + "\n" + "\n".join(errors))
                self.ui.statusLabel.setText(_("Failed; see the message and the log."))
                return
            request = self._request
            if request["kind"] == "maps":
                self.showMaps(request)
                return
            if request["kind"] == "rank":
                self.showRanking(request)
                return
            if request["kind"] == "compare":
                self.showComparison(request)
                return
            run = self.logic.showFiles(request["target"], request["model"], request["out"], request["error"],
                                       request["reference"])
            background = request.get("real") or run.synthesized
            slicer.util.setSliceViewerLayers(background=run.synthesized if run.error_map is None else background,
                                             foreground=run.error_map,
                                             foregroundOpacity=self.ui.errorOpacitySlider.value)
            if run.metrics is not None:  # with a real target: the metrics beside the slices
                from MRISynthesisSlicerLib.views import show_table

                show_table(run.metrics)
            self.ui.statusLabel.setText(self.doneText(_("Done: {name}").format(name=run.synthesized.GetName()),
                                                      run.warnings))
            self.ui.progressBar.value = 100
        except Exception as error:
            logging.exception("MRISynthesis")
            slicer.util.errorDisplay(_("Could not load the results: {error}").format(error=error))
        finally:
            self.finishRun()

    @staticmethod
    def doneText(done, warnings):
        """The status line of a finished run, with what the user must know about its result (an input whose
        field of view leaves part of the anatomy blank), which also goes to the log."""
        for warning in warnings:
            logging.warning(f"MRISynthesis: {warning}")
        return done if not warnings else done + "\n" + _("Warning: ") + "; ".join(warnings)

    def showMaps(self, request):
        from MRISynthesisSlicerLib.views import show_table

        run = self.logic.showMapsFiles(request["out"], request["inputs"])
        slicer.util.setSliceViewerLayers(background=run.reference, foreground=run.maps[run.shown],
                                         foregroundOpacity=self.ui.errorOpacitySlider.value)
        show_table(run.table)
        self.ui.statusLabel.setText(self.doneText(_("Done: {name} over the reference; the other maps are in the "
                                                    "results folder").format(name=run.maps[run.shown].GetName()),
                                                  run.warnings))
        self.ui.progressBar.value = 100

    def cancel(self):
        if self.process is not None:
            process, self.process = self.process, None
            process.kill()
            process.waitForFinished(3000)
            process.deleteLater()
            if self._request and self._request.get("kind") == "compare":  # its report folder is outside workFolder
                shutil.rmtree(self._request["out"], ignore_errors=True)
        self.finishRun()

    def removeWorkFolder(self, folder, attemptsLeft=10):
        """Delete a run's temporary folder, retrying each second while a killed worker still holds its files."""
        from MRISynthesisSlicerLib.logic import remove_work_folder

        if remove_work_folder(folder):
            return
        if attemptsLeft > 0:
            qt.QTimer.singleShot(1000, lambda: self.removeWorkFolder(folder, attemptsLeft - 1))
        else:
            logging.warning(f"MRISynthesis could not delete its temporary folder {folder}; delete it by hand")

    def finishRun(self):
        process, self.process = self.process, None
        if process is not None:
            process.deleteLater()  # not now: this may run inside one of its signals
        if self.workFolder:
            self.removeWorkFolder(self.workFolder)
            self.workFolder = None
        if self.ui is not None:
            self.ui.applyButton.text = _("Synthesize")
            for button in (self.ui.mapsButton, self.ui.rankButton, self.ui.compareButton):
                button.enabled = True
            self.setSelectionEnabled(True)
            self.updateApply()

    def setSelectionEnabled(self, enabled):
        """The input, real-target, target and model choices: fixed while a run uses them."""
        for name in (*SEQUENCE_SELECTORS.values(), "realSelector", "targetComboBox", "modelComboBox"):
            getattr(self.ui, name).enabled = enabled

    def onOpacity(self, value):
        slicer.util.setSliceViewerLayers(foregroundOpacity=value)

    # ------------------------------------------------------------------ ranking and comparison
    def onRank(self):
        self.launch(self.startRank, _("Ranking could not start: {error}"))

    def startRank(self):
        """Rank the phantom's sequences in a worker process (minutes), with progress and Cancel."""
        from MRISynthesisSlicerLib.logic import rank_worker_command

        self.workFolder = tempfile.mkdtemp(prefix="MRISynthesis-rank-")
        out = os.path.join(self.workFolder, "ranking")
        command = rank_worker_command(self.python(), self.ui.rankAnatomyComboBox.currentText,
                                      self.ui.rankSubjectsSpinBox.value, out, device=self.device())
        self._request = {"kind": "rank", "out": out}
        self.startWorker(command)

    def showRanking(self, request):
        from MRISynthesisSlicerLib.views import show_table

        table, chart = self.logic.showRankingFiles(request["out"])
        show_table(table, with_plot=True)  # first: the chart then stays in this layout's plot view
        slicer.modules.plots.logic().ShowChartInLayout(chart)
        self.ui.statusLabel.setText(_("Done: the ranking table and chart"))
        self.ui.progressBar.value = 100

    def onMaps(self):
        self.launch(self.startMaps, _("Differentiation maps could not start: {error}"))

    def onCompare(self):
        self.launch(self.startCompare, _("Comparison could not start: {error}"))

    def startCompare(self):
        """Every eligible model on the loaded complete case, in a worker process with progress and Cancel."""
        from MRISynthesisSlicerLib.logic import compare_worker_command

        real = self.ui.realSelector.currentNode()
        inputs = self.selectedInputs()
        if real is not None:
            inputs[self.ui.targetComboBox.currentText] = real
        self.workFolder = tempfile.mkdtemp(prefix="MRISynthesis-compare-")
        cases = self.logic.writeCompareCase(inputs, self.workFolder)
        # the report stays after the run (the browser shows it); the work folder with the inputs goes
        report = tempfile.mkdtemp(prefix="MRISynthesis-report-")
        os.rmdir(report)  # compare makes its --out folder itself
        command = compare_worker_command(self.python(), cases, report, register=self.ui.registerComboBox.currentText,
                                         device=self.device())
        self._request = {"kind": "compare", "out": report}
        self.startWorker(command)

    def showComparison(self, request):
        from MRISynthesisSlicerLib.views import show_table

        table, report = self.logic.showCompareFiles(request["out"])
        show_table(table)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(report))
        self.ui.statusLabel.setText(_("Done: the comparison table; the report opens in the browser"))
        self.ui.progressBar.value = 100


#
# MRISynthesisLogic
#


class MRISynthesisLogic(ScriptedLoadableModuleLogic):
    """Connects Slicer to MRISynthesisLib. The library is imported lazily so the
    module still loads (and can explain the problem) when the package is missing."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    def libraryVersion(self):
        """Return MRISynthesisLib.__version__; raise ImportError with a clear message."""
        try:
            import MRISynthesisLib
        except ImportError as error:
            raise ImportError(f"{error}; no folder on sys.path contains MRISynthesisLib") from error
        version = getattr(MRISynthesisLib, "__version__", None)
        if not isinstance(version, str) or not version:
            raise ImportError(
                f"MRISynthesisLib at {getattr(MRISynthesisLib, '__file__', '?')} defines no __version__"
            )
        return version

    # dependencies
    def missingPackages(self):
        """The requirements not met: missing, or installed at a version they do not accept."""
        from MRISynthesisSlicerLib.dependencies import unmet

        return unmet(REQUIRED_PACKAGES.values())

    def ensureDependencies(self):
        """torch through the PyTorch extension, the rest with pip, after the user agrees (once)."""
        if importlib.util.find_spec("torch") is None:
            try:
                import PyTorchUtils
            except ImportError as error:  # a source checkout loaded without the extension's dependency
                raise RuntimeError(_("PyTorch is required: install the PyTorch extension from the Extensions "
                                     "Manager, restart Slicer and run again.")) from error

            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                             torchVersionRequirement=TORCH_REQUIREMENT) is None:
                raise RuntimeError(_("PyTorch is required; install it from the PyTorch extension."))
        from MRISynthesisSlicerLib.dependencies import torch_mismatch

        mismatch = torch_mismatch(TORCH_REQUIREMENT)
        if mismatch:
            raise RuntimeError(mismatch)
        missing = self.missingPackages()
        if missing:
            if not slicer.app.testingEnabled() and not slicer.util.confirmOkCancelDisplay(
                    _("MRISynthesis needs these Python packages, which will be installed now:\n") + "\n".join(missing)):
                raise RuntimeError(_("The required Python packages were not installed."))
            from MRISynthesisSlicerLib.dependencies import pip_arguments

            slicer.util.pip_install(" ".join(pip_arguments(REQUIRED_PACKAGES.values())))

    def gpuName(self):
        """The first NVIDIA GPU's name, from its driver: importing torch here would initialise CUDA in Slicer."""
        from MRISynthesisSlicerLib.dependencies import gpu_names

        names = gpu_names()
        return names[0] if names else None

    # work
    def modelChoices(self, target, present):
        """(anatomy, [(weights file, model, None or why it cannot)]) for the panel's model list: the models of
        the anatomy the selected sequences belong to."""
        from MRISynthesisSlicerLib.logic import model_choices

        return model_choices(target, set(present))

    def synthesize(self, inputs, target, model, **options):
        """In this process (scripts, tests, the self-test); the panel uses a worker process instead."""
        from MRISynthesisSlicerLib.logic import SynthesisLogic

        return SynthesisLogic(slicer.mrmlScene).synthesize(inputs, target, model, **options)

    def showFiles(self, target, model, out, errorFile, referenceNode):
        """Nodes from a worker's output files (the volume, its JSON report, the error map)."""
        from MRISynthesisLib.volume import read_volume, report_path
        from MRISynthesisSlicerLib.logic import SynthesisLogic

        report = json.loads(report_path(out).read_text())
        error = None
        if errorFile and os.path.exists(errorFile):
            error = (read_volume(errorFile), report["error_map"]["max_error"])
        metrics = report.get("metrics", {}).get("metrics")
        return SynthesisLogic(slicer.mrmlScene).show(target, model, read_volume(out), report["provenance"],
                                                     referenceNode, metrics=metrics, error=error)

    def differentiationMaps(self, inputs, **options):
        """In this process (scripts, tests, the self-test); the panel uses a worker process instead."""
        from MRISynthesisSlicerLib.logic import SynthesisLogic

        return SynthesisLogic(slicer.mrmlScene).differentiation_maps(inputs, **options)

    def showMapsFiles(self, folder, inputNodes):
        """Nodes from a ``maps`` worker's output folder, placed beside the reference input node."""
        from MRISynthesisSlicerLib.logic import SynthesisLogic, read_maps

        maps, means, provenance = read_maps(folder)
        return SynthesisLogic(slicer.mrmlScene).show_maps(maps, means, provenance,
                                                          inputNodes.get(provenance["reference"]))

    def loadPhantom(self, seed=7, anatomy="brain"):
        from MRISynthesisSlicerLib.logic import load_phantom

        return load_phantom(slicer.mrmlScene, seed, anatomy=anatomy)

    def rankPhantom(self, subjects, anatomy="brain"):
        """In this process (scripts, tests); the panel uses a worker process instead."""
        from MRISynthesisLib.rank_cmd import run_rank

        out = tempfile.mkdtemp(prefix="MRISynthesis-rank-")
        try:
            run_rank(f"phantom:{anatomy}:{subjects}", "seq2seq", out, progress=False)
            return self.showRankingFiles(out)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def showRankingFiles(self, folder):
        """The table and bar-chart nodes of a ranking folder's ``ranking.json``."""
        from MRISynthesisSlicerLib.logic import show_ranking

        with open(os.path.join(folder, "ranking.json")) as handle:
            return show_ranking(slicer.mrmlScene, json.load(handle))

    def compareModels(self, inputs, register="rigid", device="auto"):
        """In this process (scripts, tests): every eligible model on the selected complete case; a metrics
        table node and the HTML report's path. The panel uses a worker process instead."""
        from MRISynthesisLib.compare import run_compare

        folder = tempfile.mkdtemp(prefix="MRISynthesis-compare-")
        run_compare(self.writeCompareCase(inputs, folder), os.path.join(folder, "report"), register=register,
                    device=device, progress=False)
        return self.showCompareFiles(os.path.join(folder, "report"))

    def writeCompareCase(self, inputs, folder):
        """The selected nodes as one BraTS-named case under ``folder``/cases; returns that cases folder."""
        from MRISynthesisLib.sequences import SUFFIX_2023
        from MRISynthesisSlicerLib.logic import write_inputs

        case = os.path.join(folder, "cases", "loaded")
        os.makedirs(case)
        write_inputs(inputs, case, file_name=lambda seq: f"loaded-{SUFFIX_2023[seq]}.nii")
        return os.path.join(folder, "cases")

    def showCompareFiles(self, folder):
        """(metrics table node, report.html path) from a comparison's output folder."""
        from MRISynthesisSlicerLib.nodes import metrics_table

        with open(os.path.join(folder, "compare.json")) as handle:
            rows = json.load(handle)["rows"]
        return metrics_table(slicer.mrmlScene, "model comparison", rows), os.path.join(folder, "report.html")


#
# MRISynthesisTest
#


class MRISynthesisTest(ScriptedLoadableModuleTest):
    """Self-test, run from the module panel (developer mode) or by ctest: the whole path on the phantom."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LibraryVersion()
        self.test_AboutText()
        self.test_SampleData()
        self.test_SynthesisOnPhantom()
        self.test_BreastSeriesSynthesis()
        self.test_DifferentiationMaps()

    def test_LibraryVersion(self):
        self.delayDisplay("Checking that MRISynthesisLib is importable and has a version")
        version = MRISynthesisLogic().libraryVersion()
        self.assertIsInstance(version, str)
        self.assertRegex(version, r"^\d+\.\d+")
        self.delayDisplay(f"MRISynthesisLib {version}: test passed")

    def test_AboutText(self):
        self.delayDisplay("Checking the About text reports the library version")
        logic = MRISynthesisLogic()
        text = aboutText(logic)
        self.assertIn(logic.libraryVersion(), text)
        self.assertNotIn("Error", text)
        self.delayDisplay("Test passed")

    def test_SampleData(self):
        self.delayDisplay("Loading the breast phantom through its Sample Data button")
        import SampleData

        source = SampleData.SampleDataLogic().sourceForSampleName("MRISynthesisBreastPhantom")
        self.assertIsNotNone(source, "the phantoms are not registered with Sample Data")
        self.assertTrue(os.path.isfile(source.thumbnailFileName))
        nodes = source.customDownloader(source)
        self.assertEqual(nodes["DCE"].GetNumberOfDataNodes(), 6)
        self.assertEqual(nodes["T1"].GetName(), "phantom 4 T1")
        self.delayDisplay("Test passed")

    def test_SynthesisOnPhantom(self):
        self.delayDisplay("Synthesizing T1ce of a phantom case with the bundled U-Net cT1")
        logic = MRISynthesisLogic()
        logic.ensureDependencies()
        nodes = logic.loadPhantom(seed=7)
        inputs = {seq: nodes[seq] for seq in ("T1", "T2", "FLAIR")}
        run = logic.synthesize(inputs, "T1ce", "unet-ct1", real=nodes["T1ce"])
        self.assertEqual(run.synthesized.GetName(), "T1ce synthesized by unet-ct1")
        self.assertIsNotNone(run.error_map)
        self.assertEqual(run.metrics.GetNumberOfRows(), 4)
        self.delayDisplay("Test passed")

    def test_BreastSeriesSynthesis(self):
        self.delayDisplay("Synthesizing T2 of the breast phantom from T1 and the DWI and DCE sequences")
        logic = MRISynthesisLogic()
        logic.ensureDependencies()
        nodes = logic.loadPhantom(seed=4, anatomy="breast")
        run = logic.synthesize({"T1": nodes["T1"], "DWI": nodes["DWI"], "DCE": nodes["DCE"]}, "T2", "important-net",
                               real=nodes["T2"])
        self.assertEqual(run.synthesized.GetAttribute("MRISynthesis.weights"), "important-net-breast-lite.pt")
        self.assertEqual(run.metrics.GetNumberOfRows(), 4)
        self.delayDisplay("Test passed")

    def test_DifferentiationMaps(self):
        self.delayDisplay("Imaging-differentiation maps of a phantom case with the bundled Seq2Seq")
        logic = MRISynthesisLogic()
        logic.ensureDependencies()
        nodes = logic.loadPhantom(seed=7)
        run = logic.differentiationMaps({seq: nodes[seq] for seq in ("T1", "T1ce", "FLAIR")})
        self.assertEqual(sorted(run.maps), ["FLAIR", "T1", "T1ce"])
        self.assertEqual(run.shown, "T1ce")
        self.assertEqual(run.maps["T1ce"].GetName(), "M_d(T1ce)")
        self.assertEqual(run.table.GetNumberOfRows(), 3)
        self.delayDisplay("Test passed")
