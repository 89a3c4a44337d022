"""Layout checks for the 3D Slicer extension (no Slicer needed).

They read the CMake files as text, parse MRISynthesis.py with ast, load it against
tiny stand-ins for slicer/qt/ctk in a separate interpreter, and make sure the
library never imports Slicer-only packages.
"""

from __future__ import annotations

import ast
import importlib.util
import py_compile
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT_CMAKE = REPO / "CMakeLists.txt"
MODULE_DIR = REPO / "MRISynthesis"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
MODULE_PY = MODULE_DIR / "MRISynthesis.py"
LIB_DIR = REPO / "MRISynthesisLib"

HOMEPAGE = "https://github.com/mrisynthesis/SlicerMRISynthesis"
FORBIDDEN_IMPORTS = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "mrml"}


# --------------------------------------------------------------------------- helpers


def _cmake_code(path: Path) -> str:
    """CMake source with comments removed ('#' inside quoted strings is kept)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        in_quotes = False
        kept = []
        for i, ch in enumerate(line):
            if ch == '"' and (i == 0 or line[i - 1] != "\\"):
                in_quotes = not in_quotes
            if ch == "#" and not in_quotes:
                break
            kept.append(ch)
        out.append("".join(kept))
    return "\n".join(out)


def _cmake_sets(code: str) -> dict[str, str]:
    """Values of set(NAME "value") and set(NAME value ...) calls (last one wins)."""
    values = {}
    for match in re.finditer(r"\bset\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s+(\"(?:[^\"\\]|\\.)*\"|[^)]*)\)", code, re.S | re.I):
        name, raw = match.group(1), match.group(2).strip()
        values[name] = raw[1:-1] if raw.startswith('"') else raw
    return values


def _cmake_call_args(code: str, command: str) -> list[str]:
    """Argument text of every call to `command` (no nested parentheses expected)."""
    return [m.group(1) for m in re.finditer(rf"\b{command}\s*\(([^)]*)\)", code, re.I)]


def _module_ast() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"), filename=str(MODULE_PY))


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _base_names(cls: ast.ClassDef) -> set[str]:
    names = set()
    for base in cls.bases:
        if isinstance(base, ast.Name):
            names.add(base.id)
        elif isinstance(base, ast.Attribute):
            names.add(base.attr)
    return names


def _methods(cls: ast.ClassDef) -> set[str]:
    return {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


# --------------------------------------------------------------------------- root CMakeLists


@pytest.fixture(scope="module")
def root_code() -> str:
    assert ROOT_CMAKE.is_file(), "the repository root needs the extension's CMakeLists.txt"
    return _cmake_code(ROOT_CMAKE)


@pytest.fixture(scope="module")
def root_sets(root_code) -> dict[str, str]:
    return _cmake_sets(root_code)


@pytest.mark.parametrize(
    "field",
    [
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ],
)
def test_root_cmake_declares_metadata_field(root_sets, field):
    assert field in root_sets, f"{ROOT_CMAKE.name}: set({field} ...) is missing"
    assert root_sets[field].strip(), f"{ROOT_CMAKE.name}: {field} is empty"


def test_root_cmake_metadata_values(root_sets):
    assert root_sets["EXTENSION_HOMEPAGE"] == HOMEPAGE
    assert root_sets["EXTENSION_CATEGORY"] == "Filtering"
    assert root_sets["EXTENSION_CONTRIBUTORS"] == "MRISynthesis contributors"
    description = root_sets["EXTENSION_DESCRIPTION"].lower()
    assert "research use only" in description
    assert "sequence" in description and "deep-learning" in description

    icon = root_sets["EXTENSION_ICONURL"]
    assert icon.startswith("https://") and icon.endswith("/Resources/Icons/MRISynthesis.png"), icon

    screenshots = root_sets["EXTENSION_SCREENSHOTURLS"].split()
    assert screenshots, "EXTENSION_SCREENSHOTURLS lists no URL"
    for url in [icon, *screenshots]:
        # every URL points at a file of this repository's main branch that exists
        assert url.startswith("https://raw.githubusercontent.com/") and "/main/" in url, url
        local = REPO / url.split("/main/", 1)[1]
        assert local.is_file(), f"{url} points at {local}, which does not exist"

    assert "PyTorch" in re.split(r"[\s;]+", root_sets["EXTENSION_DEPENDS"]), root_sets["EXTENSION_DEPENDS"]


def test_root_cmake_builds_the_extension(root_code):
    assert re.search(r"cmake_minimum_required\s*\(\s*VERSION\s+3\.16\.3\.\.\.3\.19\.7\s+FATAL_ERROR\s*\)", root_code)
    assert re.search(r"\bproject\s*\(\s*MRISynthesis\s*\)", root_code)
    assert re.search(r"find_package\s*\(\s*Slicer\s+REQUIRED\s*\)", root_code)
    assert re.search(r"include\s*\(\s*\$\{Slicer_USE_FILE\}\s*\)", root_code)
    assert re.search(r"include\s*\(\s*\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\s*\)", root_code)
    assert re.search(r"include\s*\(\s*\$\{Slicer_EXTENSION_CPACK\}\s*\)", root_code)
    subdirs = [a.strip() for a in _cmake_call_args(root_code, "add_subdirectory")]
    assert "MRISynthesis" in subdirs, subdirs
    for subdir in subdirs:
        assert (REPO / subdir / "CMakeLists.txt").is_file(), f"add_subdirectory({subdir}) has no CMakeLists.txt"
    # metadata must be set before find_package(Slicer) reads it
    assert root_code.index("EXTENSION_HOMEPAGE") < root_code.index("find_package")


# --------------------------------------------------------------------------- module CMakeLists


@pytest.fixture(scope="module")
def module_code() -> str:
    assert MODULE_CMAKE.is_file()
    return _cmake_code(MODULE_CMAKE)


def test_module_cmake_builds_scripted_module(module_code):
    sets = _cmake_sets(module_code)
    calls = _cmake_call_args(module_code, "slicerMacroBuildScriptedModule")
    assert len(calls) == 1, "expected exactly one slicerMacroBuildScriptedModule(...)"
    args = calls[0].replace("${MODULE_NAME}", sets.get("MODULE_NAME", "${MODULE_NAME}"))
    assert re.search(r"\bNAME\s+MRISynthesis\b", args), args
    assert "SCRIPTS" in args and "RESOURCES" in args

    scripts = " ".join(sets.get(v, "") for v in re.findall(r"\$\{(\w+)\}", args)) + " " + args
    scripts = scripts.replace("${MODULE_NAME}", sets.get("MODULE_NAME", ""))
    assert "MRISynthesis.py" in scripts
    assert "Resources/Icons/MRISynthesis.png" in module_code.replace("${MODULE_NAME}", "MRISynthesis")


def test_module_cmake_ships_library_package(module_code):
    assert "MRISynthesisLib" in module_code
    # the package is globbed recursively, relative to the folder that holds it
    assert re.search(r"file\s*\(\s*GLOB_RECURSE\b[^)]*\bRELATIVE\b[^)]*MRISynthesisLib/\*\.py", module_code, re.S)
    calls = _cmake_call_args(module_code, "ctkMacroCompilePythonScript")
    assert calls, "MRISynthesisLib must be copied next to the module (ctkMacroCompilePythonScript)"
    lib_call = " ".join(calls[0].split())
    assert "TARGET_NAME MRISynthesisLib" in lib_call
    assert "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}" in lib_call
    assert "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in lib_call
    assert "NO_INSTALL_SUBDIR" in lib_call
    # the source root used by the glob really holds the package
    root = _cmake_sets(module_code).get("MRISYNTHESISLIB_SOURCE_ROOT", "")
    root = root.replace("${CMAKE_CURRENT_SOURCE_DIR}", str(MODULE_DIR))
    assert (Path(root) / "MRISynthesisLib" / "__init__.py").is_file(), root


def test_module_cmake_ships_the_bundled_weights_where_the_library_looks(module_code):
    from MRISynthesisLib.weights import MODELS_DIR

    # weights.MODELS_DIR is <folder holding MRISynthesisLib>/Resources/Models; the built extension must
    # copy the weights there, relative to the same root as the package (else no model is offered)
    assert MODELS_DIR == LIB_DIR.parent / "Resources" / "Models"
    assert re.search(r"file\s*\(\s*GLOB\b[^)]*\bRELATIVE\s+\"\$\{MRISYNTHESISLIB_SOURCE_ROOT\}\"[^)]*"
                     r"\$\{MRISYNTHESISLIB_SOURCE_ROOT\}/Resources/Models/\*", module_code, re.S)
    assert re.search(r"list\s*\(\s*APPEND\s+MRISYNTHESISLIB_RESOURCES\s+\$\{MRISYNTHESIS_MODEL_FILES\}", module_code)
    lib_call = " ".join(_cmake_call_args(module_code, "ctkMacroCompilePythonScript")[0].split())
    assert 'RESOURCES "${MRISYNTHESISLIB_RESOURCES}"' in lib_call
    assert (MODELS_DIR / "manifest.json").is_file()


def test_module_cmake_registers_self_test(module_code):
    block = re.search(r"if\s*\(\s*BUILD_TESTING\s*\)(.*?)endif\s*\(", module_code, re.S)
    assert block, "if(BUILD_TESTING) ... endif() is missing"
    assert re.search(r"slicer_add_python_unittest\s*\(\s*SCRIPT\s+(\$\{MODULE_NAME\}|MRISynthesis)\.py\s*\)", block.group(1))


def test_icon_folder_exists():
    assert (MODULE_DIR / "Resources" / "Icons").is_dir()


# --------------------------------------------------------------------------- MRISynthesis.py


def test_module_file_compiles(tmp_path):
    py_compile.compile(str(MODULE_PY), cfile=str(tmp_path / "MRISynthesis.pyc"), doraise=True)


def test_module_file_defines_the_four_classes():
    classes = _classes(_module_ast())
    expected = {
        "MRISynthesis": ("ScriptedLoadableModule", {"__init__"}),
        "MRISynthesisWidget": ("ScriptedLoadableModuleWidget", {"setup"}),
        "MRISynthesisLogic": ("ScriptedLoadableModuleLogic", {"libraryVersion"}),
        "MRISynthesisTest": ("ScriptedLoadableModuleTest", {"runTest"}),
    }
    for name, (base, methods) in expected.items():
        assert name in classes, f"class {name} is missing"
        assert base in _base_names(classes[name]), f"{name} must derive from {base}"
        missing = methods - _methods(classes[name])
        assert not missing, f"{name} lacks {sorted(missing)}"


def test_module_metadata_strings():
    init = next(n for n in _classes(_module_ast())["MRISynthesis"].body if getattr(n, "name", "") == "__init__")
    source = ast.get_source_segment(MODULE_PY.read_text(encoding="utf-8"), init)
    assert '"MRI Synthesis"' in source
    assert re.search(r"categories\s*=\s*\[\s*\"Filtering\"\s*\]", source)
    assert "Research use only" in source
    assert "mri-synthesis" in source
    for title_words in (
        "IMPORTANT-Net",
        "Imaging-Differentiation",
        "Tumor Consistency Loss",
        "post-contrast T1",
        "Multiparametric Magnetic Resonance",
    ):
        assert title_words in source, f"acknowledgement lacks {title_words!r}"


def test_library_is_imported_lazily():
    """A missing or broken library must not stop the module from loading."""
    for node in _module_ast().body:
        if isinstance(node, ast.Import):
            assert all(not a.name.startswith("MRISynthesisLib") for a in node.names)
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("MRISynthesisLib")


# --------------------------------------------------------------------------- load against stand-ins

_STUBS = {
    "slicer/__init__.py": """
        class _Scene:
            def Clear(self, *args):
                pass
        class _App:
            def __init__(self):
                self.connections = []
            def connect(self, signal, slot):
                self.connections.append((signal, slot))
        mrmlScene = _Scene()
        app = _App()
    """,
    "slicer/ScriptedLoadableModule.py": """
        import unittest
        class ScriptedLoadableModule:
            def __init__(self, parent):
                self.parent = parent
        class ScriptedLoadableModuleWidget:
            def __init__(self, parent=None):
                import qt
                self.layout = qt.QVBoxLayout()
            def setup(self):
                pass
        class ScriptedLoadableModuleLogic:
            def __init__(self):
                pass
        class ScriptedLoadableModuleTest(unittest.TestCase):
            def __init__(self, *args):
                unittest.TestCase.__init__(self, "runTest")
            def delayDisplay(self, message, *args):
                pass
    """,
    "qt.py": """
        class _Widget:
            def __init__(self, *args):
                self.text = ""
            def addWidget(self, widget):
                pass
            def addStretch(self, factor):
                pass
            def setText(self, text):
                self.text = text
        QVBoxLayout = QLabel = _Widget
    """,
    "ctk.py": """
        class ctkCollapsibleButton:
            text = ""
    """,
}

_DRIVER = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[2])
spec = importlib.util.spec_from_file_location("MRISynthesis", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
class Parent: pass
info = module.MRISynthesis(Parent()).parent
result = {"title": info.title, "categories": info.categories, "label": module.aboutText(module.MRISynthesisLogic())}
class Unmet:  # a logic whose packages are not all there: the About text names them before the first run
    def libraryVersion(self): return "0.0.0+checkout"
    def missingPackages(self): return ["lpips>=0.1.4"]
result["label_unmet"] = module.aboutText(Unmet())
try:
    result["version"] = module.MRISynthesisLogic().libraryVersion()
    test = module.MRISynthesisTest()
    test.test_LibraryVersion()
    test.test_AboutText()  # the phantom synthesis part of the self-test needs the real application
    result["selftest"] = "passed"
except ImportError as error:
    result["error"] = str(error)
print(json.dumps(result))
"""


def _write_stubs(folder: Path) -> Path:
    for rel, text in _STUBS.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def _run_isolated(tmp_path: Path, library_init: str | None) -> dict:
    """Load the module from a fake source checkout (<checkout>/MRISynthesis/MRISynthesis.py,
    with <checkout>/MRISynthesisLib/__init__.py = library_init, or no library when None)
    in a fresh interpreter that cannot see any installed MRISynthesisLib (-I -S)."""
    import json

    stubs = _write_stubs(tmp_path / "stubs")
    checkout = tmp_path / "checkout"
    (checkout / "MRISynthesis").mkdir(parents=True)
    shutil.copy2(MODULE_PY, checkout / "MRISynthesis" / "MRISynthesis.py")
    if library_init is not None:
        (checkout / "MRISynthesisLib").mkdir()
        (checkout / "MRISynthesisLib" / "__init__.py").write_text(library_init, encoding="utf-8")
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(driver), str(checkout / "MRISynthesis" / "MRISynthesis.py"), str(stubs)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_module_loads_from_source_checkout_and_finds_library(tmp_path):
    """'Additional module paths' case: only <checkout>/MRISynthesis is known to Slicer,
    so the module itself must put <checkout> on sys.path."""
    result = _run_isolated(tmp_path, library_init='__version__ = "0.0.0+checkout"\n')
    assert result["title"] == "MRI Synthesis"
    assert result["categories"] == ["Filtering"]
    assert result.get("version") == "0.0.0+checkout", result
    assert result.get("selftest") == "passed", result
    assert "0.0.0+checkout" in result["label"]
    assert "Research use only" in result["label"]
    assert "Not installed yet (the first run offers to install them): " in result["label_unmet"]
    assert "lpips>=0.1.4" in result["label_unmet"]


def test_module_explains_a_missing_library(tmp_path):
    result = _run_isolated(tmp_path, library_init=None)
    assert "version" not in result
    assert "MRISynthesisLib" in result["error"]
    assert "MRISynthesisLib could not be imported" in result["label"], result["label"]


def test_logic_reports_the_real_library_version(monkeypatch):
    """In this environment the logic must find the real package and its version."""
    import types

    import MRISynthesisLib

    for rel, text in _STUBS.items():
        name = rel[: -len(".py")].replace("/__init__", "").replace("/", ".")
        stub = types.ModuleType(name)
        exec(compile(textwrap.dedent(text), f"<stub {name}>", "exec"), stub.__dict__)
        monkeypatch.setitem(sys.modules, name, stub)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # keep MRISynthesis/ free of __pycache__
    spec = importlib.util.spec_from_file_location("_mrisynthesis_module_under_test", MODULE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.MRISynthesisLogic().libraryVersion() == MRISynthesisLib.__version__


# --------------------------------------------------------------------------- library purity


def _library_files() -> list[Path]:
    return sorted(p for p in LIB_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def _forbidden_imports(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            func_name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if func_name in {"__import__", "import_module"} and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        for name in names:
            if name.split(".")[0] in FORBIDDEN_IMPORTS:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
    return found


def test_library_never_imports_slicer_qt_ctk_or_vtk():
    files = _library_files()
    assert (LIB_DIR / "__init__.py") in files
    offenders = [hit for path in files for hit in _forbidden_imports(path)]
    assert not offenders, "MRISynthesisLib must stay importable without Slicer:\n" + "\n".join(offenders)


def test_purity_check_catches_a_slicer_import(tmp_path):
    """The checker itself must flag every import form it claims to catch."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\nimport vtk.util\nfrom slicer.util import x\nimport importlib\n"
        "def f():\n    import qt\n    importlib.import_module('ctk')\n",
        encoding="utf-8",
    )
    hits = _forbidden_imports(bad, root=tmp_path)
    assert sorted(h.rsplit(" ", 1)[-1] for h in hits) == ["ctk", "qt", "slicer.util", "vtk.util"]


# --------------------------------------------------------------------------- the panel's .ui file
UI_FILE = REPO / "MRISynthesis" / "Resources" / "UI" / "MRISynthesis.ui"


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).iter("widget") if w.get("name")}


def test_every_widget_the_module_uses_exists_in_the_ui_file():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text(encoding="utf-8")))
    selectors = set(re.findall(r'"(\w+Selector)"', MODULE_PY.read_text(encoding="utf-8")))
    missing = (used | selectors) - set(_ui_widgets())
    assert used and not missing, f"widgets used by MRISynthesis.py but absent from the .ui: {sorted(missing)}"


def test_ui_parameter_names_match_the_parameter_node():
    source = MODULE_PY.read_text(encoding="utf-8")
    block = source[source.index("class MRISynthesisParameterNode"):source.index("#: Python packages")]
    fields = set(re.findall(r"^\s+(\w+): ", block, re.MULTILINE))
    bound = {p.find("string").text for w in _ui_widgets().values() for p in w.findall("property")
             if p.get("name") == "SlicerParameterName"}
    assert bound and bound <= fields, f"unknown parameter names in the .ui: {sorted(bound - fields)}"


def test_bound_widgets_have_the_annotations_slicers_connectors_require():
    """Slicer's parameterNodeWrapper raises on connectGui (and the panel never finishes setting up) when a
    QComboBox is bound to a field without a Choice list, or a ctkSliderWidget to an unbounded float."""
    wrapper = next(node for node in ast.walk(_module_ast())
                   if isinstance(node, ast.ClassDef) and node.name == "MRISynthesisParameterNode")
    annotations = {item.target.id: ast.unparse(item.annotation) for item in wrapper.body
                   if isinstance(item, ast.AnnAssign)}
    required = {"QComboBox": "Choice(", "ctkSliderWidget": "WithinRange("}
    checked = 0
    for widget in _ui_widgets().values():
        names = [p.find("string").text for p in widget.findall("property") if p.get("name") == "SlicerParameterName"]
        if names and widget.get("class") in required:
            assert required[widget.get("class")] in annotations[names[0]], (widget.get("name"), annotations[names[0]])
            checked += 1
    assert checked >= 4
    # the model and device lists change with the selection and the machine: a Choice list would wipe them
    assert not {"model", "device"} & set(annotations)


def test_the_panel_unbinds_with_the_tag_connect_gave():
    source = MODULE_PY.read_text(encoding="utf-8")
    assert "disconnectGui(self.ui)" not in source
    assert "self._parameterGuiTag = self._parameterNode.connectGui(self.ui)" in source


def test_every_node_selector_gets_the_scene():
    """A qMRMLNodeComboBox lists nothing until the module's mrmlSceneChanged reaches its setMRMLScene; the
    parameter node's connector sets node types, never the scene."""
    selectors = {name for name, w in _ui_widgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    connected = {c.findtext("receiver") for c in ET.parse(UI_FILE).iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert len(selectors) >= 7 and not selectors - connected, f"selectors without the scene: {sorted(selectors - connected)}"


def _names_bound_in(function: ast.AST) -> set[str]:
    """Every name a function binds locally: parameters (*args, **kwargs too) and assignment targets."""
    arguments = function.args
    names = {a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs}
    names |= {a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None}
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def test_no_function_hides_the_translation_function():
    """The panel's strings go through ``_`` (slicer.i18n.tr); a function that binds ``_`` itself (``*_``,
    ``for _ in``) turns every ``_("...")`` inside it into a call of a tuple or an int."""
    tree = _module_ast()
    offenders = [f"{node.name} (line {node.lineno})" for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "_" in _names_bound_in(node)
                 and any(isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "_"
                         for call in ast.walk(node))]
    assert not offenders, f"functions that bind _ and call it: {offenders}"


def test_the_module_folder_holds_one_python_file():
    """Slicer loads every .py at the top of a module folder as a module at start-up ("class batch was not
    found"); scripts belong in MRISynthesisSlicerLib."""
    assert sorted(p.name for p in MODULE_DIR.glob("*.py")) == ["MRISynthesis.py"]


def test_module_cmake_ships_the_panel_and_its_mrml_logic(module_code):
    for path in ("Resources/UI/${MODULE_NAME}.ui", "MRISynthesisSlicerLib/logic.py", "MRISynthesisSlicerLib/nodes.py",
                 "MRISynthesisSlicerLib/batch.py"):
        assert path in module_code, path
