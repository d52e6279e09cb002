"""Every third-party module the code imports is declared in ``pyproject.toml``, so that the
README's set-up lines install everything its test command needs (``hypothesis`` was once
installed by hand on the CI machine only, and ``python -m pytest -q`` failed at collection on a
fresh one).

The rule, by where an import stands (``imports`` below walks every ``.py`` file of
``impls/``, ``reference/``, ``harness/`` and ``suites/``):

- in the package code (``impls``, ``reference``, ``harness``): an import at module level that
  no ``try: ... except ImportError`` guards runs whenever the module is imported: the module is
  declared in ``[project] dependencies``.  An import inside a function, or guarded, runs only
  on that optional path: it is declared in ``dependencies`` or in an extra (e.g. ``cupy`` in
  ``gpu``, loaded only by the ``cupy`` backend).
- in ``suites``: the default test run imports every test module and runs every test that is not
  skipped, so any unguarded import (module level or in a test) is declared in ``dependencies``
  or in the extra the README's set-up installs (``test``).  A guarded one
  (``try/except ImportError``, ``pytest.importorskip``) may come from any extra.

Standard-library modules (``sys.stdlib_module_names``) and the repository's own modules are
not third-party.  An import name that differs from its distribution's name is listed in
``DISTRIBUTIONS``.
"""

import ast
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("rfbench", "impls", "reference", "harness", "examples")  # rfbench, its three folders, its example
README_EXTRA = "test"  # `pip install -e .[test]` in the README's set-up
# import name -> the distributions that provide it (where the two names differ)
DISTRIBUTIONS = {"cupy": ("cupy-cuda13x", "cupy-cuda12x")}
GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req):
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def declared():
    """-> ``(dependencies, {extra: names})`` from pyproject.toml, names normalised."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {_requirement_name(r) for r in project["dependencies"]}
    extras = {k: {_requirement_name(r) for r in v} for k, v in project.get("optional-dependencies", {}).items()}
    return deps, extras


def first_party():
    """The repository's own top-level modules: its packages, and the modules of ``suites`` (pytest
    puts the test folders on ``sys.path``)."""
    names = set(PACKAGES) | {"suites"}
    for p in (ROOT / "suites").rglob("*.py"):
        names.add(p.stem)
    return names


def _guarded(node, parents):
    """Whether an enclosing ``try`` catches a failed import."""
    while node in parents:
        child, node = node, parents[node]
        if isinstance(node, ast.Try) and child in node.body:
            for h in node.handlers:
                caught = [] if h.type is None else (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type])
                if h.type is None or any(isinstance(t, ast.Name) and t.id in GUARDS for t in caught):
                    return True
    return False


def _in_function(node, parents):
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def imports():
    """-> list of ``(path, line, top-level module, where)``; ``where``: ``"module"`` (an unguarded
    import at module level), ``"function"`` (unguarded, inside a function) or ``"guarded"``."""
    out = []
    for folder in (*PACKAGES, "suites"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "importorskip"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    out.append((path.relative_to(ROOT), node.lineno, node.args[0].value.split(".")[0], "guarded"))
                    continue
                for name in names:
                    if _guarded(node, parents):
                        where = "guarded"
                    elif _in_function(node, parents):
                        where = "function"
                    else:
                        where = "module"
                    out.append((path.relative_to(ROOT), node.lineno, name.split(".")[0], where))
    return out


def third_party():
    own = first_party()
    return [i for i in imports() if i[2] not in sys.stdlib_module_names and i[2] not in own]


def allowed(path, where, deps, extras):
    """The distributions an import at ``path`` (relative) standing ``where`` may come from."""
    everything = deps.union(*extras.values())
    if path.parts[0] == "suites":
        return everything if where == "guarded" else deps | extras.get(README_EXTRA, set())
    return deps if where == "module" else everything


def undeclared():
    deps, extras = declared()
    bad = []
    for path, line, name, where in third_party():
        dists = {_norm(d) for d in DISTRIBUTIONS.get(name, (name,))}
        if not dists & allowed(path, where, deps, extras):
            bad.append(f"{path}:{line}: {name} ({where} import) is not declared where it must be")
    return bad


def test_every_third_party_import_is_declared():
    assert not undeclared(), "\n".join(undeclared())


def test_the_walk_sees_the_imports_it_must_judge():
    """The walk finds the imports this rule exists for, each where it stands."""
    found = {(str(p), name, where) for p, _, name, where in third_party()}
    assert ("suites/test_fuzz.py", "hypothesis", "module") in found
    assert ("impls/backends/cuda/cupy_prims.py", "cupy", "function") in found
    assert ("harness/timing.py", "numba", "guarded") in found
    assert ("suites/test_numba_cpu.py", "numba", "guarded") in found  # pytest.importorskip
    assert not any(name in ("rfbench", "impls", "reference", "harness", "os", "compile_probe") for _, name, _ in found)


def test_an_undeclared_import_fails(monkeypatch):
    """A test module importing a package that pyproject.toml does not declare is caught, and so is a
    module-level import in the package code of something only an extra declares."""
    real = imports()
    fake = [
        (pathlib.Path("suites/test_new.py"), 1, "somepkg", "module"),
        (pathlib.Path("harness/new.py"), 1, "cupy", "module"),
        (pathlib.Path("suites/test_gpu.py"), 1, "cupy", "guarded"),
    ]
    monkeypatch.setattr(sys.modules[__name__], "imports", lambda: real + fake)
    bad = undeclared()
    assert len(bad) == 2 and "somepkg" in bad[0] and "cupy" in bad[1], bad


def _readme_quick_start():
    """The lines of the README's Quick start block, as ``.ci/run`` reads them."""
    text = (ROOT / "README.md").read_text()
    block = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return [line[4:] for line in block.splitlines() if line.startswith("    ")]


def test_the_readme_set_up_installs_torch_in_range_then_the_test_extra():
    """``.ci/run`` runs the README's ``pip install`` lines and its ``python -m pytest`` line: the first
    installs a torch inside the declared range, another the extra this module takes as installed."""
    lines = _readme_quick_start()
    setup = [ln for ln in lines if ln.startswith("pip install ")]
    tests = [ln for ln in lines if ln.startswith("python -m pytest")]
    assert len(tests) == 1 and len(setup) >= 2, lines
    torch_line = re.fullmatch(r"pip install torch==(\d+)\.(\d+)\.(\d+)( .*)?", setup[0])
    assert torch_line, setup[0]
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if _requirement_name(d) == "torch")
    m = re.fullmatch(r"torch>=(\d+)\.(\d+),<(\d+)", spec.replace(" ", ""))
    assert m, spec
    version = tuple(int(v) for v in torch_line.groups()[:3])
    assert (int(m[1]), int(m[2])) <= version[:2] and version[0] < int(m[3]), (spec, version)
    assert any(f'-e ".[{README_EXTRA}]"' in ln for ln in setup[1:]), setup
