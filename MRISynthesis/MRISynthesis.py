"""MRISynthesis: 3D Slicer module that synthesizes missing MRI sequences.

This file is deliberately thin. All the work lives in the pure-Python package
MRISynthesisLib (which never imports slicer or qt); this module only connects it
to MRML and the GUI. Research use only.
"""

import importlib.util
import logging
import os
import sys

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
            "The interactive panel arrives in a later release. The command line works now: "
            "run <code>mri-synthesis --help</code> (or <code>python -m MRISynthesisLib --help</code>) "
            "for the demo, registration, synthesis, evaluation and ranking commands.<br><br>"
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


def aboutText(logic):
    """Text of the About section; names the problem when the library is missing."""
    notBuilt = _(
        "The MRI Synthesis panel is not built yet; it arrives in a later release. "
        "Meanwhile use the command line: mri-synthesis --help.\n"
        "Research use only: not for diagnosis or treatment decisions."
    )
    try:
        version = logic.libraryVersion()
    except ImportError as error:
        logging.error(f"MRISynthesis: {error}")
        return notBuilt + "\n\n" + _(
            "Error: the Python package MRISynthesisLib could not be imported: {error}. "
            "Reinstall the MRISynthesis extension, or when loading the module from a source "
            "checkout keep the MRISynthesisLib folder next to the MRISynthesis folder."
        ).format(error=error)
    return notBuilt + "\n\n" + _("MRISynthesisLib version: {version}").format(version=version)


#
# MRISynthesisWidget
#


class MRISynthesisWidget(ScriptedLoadableModuleWidget):
    """Module panel. For now only an 'About' section; the full panel comes later."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.statusLabel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = MRISynthesisLogic()

        aboutCollapsibleButton = ctk.ctkCollapsibleButton()
        aboutCollapsibleButton.text = _("About")
        self.layout.addWidget(aboutCollapsibleButton)
        aboutLayout = qt.QVBoxLayout(aboutCollapsibleButton)

        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        self.statusLabel.setText(aboutText(self.logic))
        aboutLayout.addWidget(self.statusLabel)

        self.layout.addStretch(1)


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


#
# MRISynthesisTest
#


class MRISynthesisTest(ScriptedLoadableModuleTest):
    """Self-test, run from the module panel (developer mode) or by ctest."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LibraryVersion()
        self.test_AboutText()

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
