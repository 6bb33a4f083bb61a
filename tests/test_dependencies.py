"""The declared dependencies are the true ones (docs/dependencies.md says what each is for).

Every third-party module the package imports (any ``import`` statement, also inside functions) must come from a
distribution declared in ``pyproject.toml``, and every declared runtime dependency must be imported somewhere in the
package, except the few in :data:`NOT_IMPORTED`. Tests and benchmarks may also use the ``dev`` extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The package's own top-level import names (``copra_bench.datamodules`` and ``.baselines`` live under it too).
FIRST_PARTY = {"copra_bench"}
#: Declared runtime dependencies that no module of the package imports by name; each needs its reason here.
NOT_IMPORTED = {
    # transformers' Qwen2-VL image and video processors import it (built in copra_bench/vlm/families, loaded in
    # copra_bench/vlm/backbone.py); declared to pin it as torch's pair (docs/dependencies.md)
    "torchvision",
    # jsonargparse loads it for parser_mode="omegaconf" (copra_bench/cli.py, datamodules/commands.py)
    "omegaconf",
}


def normalise(name: str) -> str:
    """A distribution name in PEP 503 form (``Pillow`` -> ``pillow``, ``PyYAML`` -> ``pyyaml``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution a requirement string names: ``jsonargparse[signatures]>=4.35`` -> ``jsonargparse``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"cannot read a distribution name from {requirement!r}"
    return normalise(match.group(1))


def declared(*extras: str) -> set[str]:
    """The runtime dependencies of pyproject.toml, plus those of the named optional extras."""
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {requirement_name(r) for r in requirements}


def source_dirs() -> list[Path]:
    """The folders the package is built from (``[tool.setuptools] package-dir``): copra_bench, datamodules, ..."""
    return sorted({ROOT / folder for folder in PYPROJECT["tool"]["setuptools"]["package-dir"].values()})


def imported_modules(files: list[Path]) -> dict[str, set[str]]:
    """Top-level absolute imports of ``files`` -> the files importing them (relative imports are first party)."""
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], set()).add(
                    str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path))
    return found


def third_party(modules: dict[str, set[str]], first_party: set[str]) -> dict[str, set[str]]:
    """``modules`` without the standard library, ``__future__`` and ``first_party``."""
    return {name: files for name, files in modules.items()
            if name not in sys.stdlib_module_names and name != "__future__" and name not in first_party}


def distributions_of(modules: dict[str, set[str]]) -> tuple[dict[str, set[str]], list[str]]:
    """Top-level module -> the installed distributions that provide it, and the modules no distribution provides."""
    providers = importlib.metadata.packages_distributions()
    found, unknown = {}, []
    for name in sorted(modules):
        if name in providers:
            found[name] = {normalise(dist) for dist in providers[name]}
        else:
            unknown.append(f"{name} (imported by {', '.join(sorted(modules[name]))})")
    return found, unknown


def undeclared_imports(modules: dict[str, set[str]], allowed: set[str]) -> list[str]:
    """Imported third-party modules whose distribution is not in ``allowed``, each with the files importing it."""
    found, unknown = distributions_of(modules)
    missing = [f"{name} from {'/'.join(sorted(dists))} (imported by {', '.join(sorted(modules[name]))})"
               for name, dists in found.items() if not dists & allowed]
    return missing + [f"{entry}: not installed" for entry in unknown]


def package_files() -> list[Path]:
    return sorted(path for folder in source_dirs() for path in folder.rglob("*.py"))


def test_every_third_party_import_of_the_package_is_declared():
    modules = third_party(imported_modules(package_files()), FIRST_PARTY)
    assert {"torch", "numpy", "av"} <= set(modules), "the import walk found too little; is it reading the package?"
    assert undeclared_imports(modules, declared()) == [], "declare these in pyproject.toml [project] dependencies"


def test_every_declared_dependency_is_imported_or_explained():
    found, _ = distributions_of(third_party(imported_modules(package_files()), FIRST_PARTY))
    used = set().union(*found.values())
    assert NOT_IMPORTED <= declared(), f"NOT_IMPORTED names undeclared distributions: {NOT_IMPORTED - declared()}"
    assert not NOT_IMPORTED & used, f"now imported, remove from NOT_IMPORTED: {sorted(NOT_IMPORTED & used)}"
    assert sorted(declared() - used - NOT_IMPORTED) == [], "declared but never imported: remove, or explain why"


def test_tests_and_benchmarks_import_only_declared_or_dev_dependencies():
    files = sorted(path for folder in (ROOT / "tests", ROOT / "benchmarks") for path in folder.glob("*.py"))
    local = {path.stem for path in files} | {"tests", "benchmarks"}  # benchmarks import their sibling scripts
    modules = third_party(imported_modules(files), FIRST_PARTY | local)
    assert "pytest" in modules
    assert undeclared_imports(modules, declared("dev")) == []


def test_every_package_folder_is_listed_for_the_wheel():
    setuptools = PYPROJECT["tool"]["setuptools"]
    on_disk = {".".join((package, *init.parent.relative_to(ROOT / folder).parts))
               for package, folder in setuptools["package-dir"].items()
               for init in (ROOT / folder).rglob("__init__.py")}
    assert sorted(on_disk - set(setuptools["packages"])) == [], "list these in [tool.setuptools] packages"


def test_the_checks_catch_an_undeclared_and_an_unused_dependency(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("import os\nimport numpy as np\nfrom .sibling import x\n\n"
                      "def f():\n    from yaml import safe_load\n    import surely_not_a_real_module_xyz\n")
    modules = third_party(imported_modules([source]), FIRST_PARTY)
    assert set(modules) == {"numpy", "yaml", "surely_not_a_real_module_xyz"}
    problems = undeclared_imports(modules, {"numpy"})
    assert any(p.startswith("yaml from pyyaml") for p in problems)
    assert any(p.startswith("surely_not_a_real_module_xyz") and p.endswith("not installed") for p in problems)
    assert requirement_name("jsonargparse[signatures,omegaconf]>=4.35") == "jsonargparse"
    assert requirement_name("Pillow>=13.0") == "pillow" and requirement_name("PyYAML") == "pyyaml"

