"""The Lamina source files a stage script runs: its code closure.

`dvc.yaml` must list them as the stage's deps (tests/code/test_dvc_code_deps.py checks it), and
the `train` stage's resume fingerprint hashes them (training/resume.py), so that an edit to any
module a stage imports reruns the stage and never resumes checkpoints the old code wrote.

Found by reading the source, never by importing it: every `import lamina...` and `from lamina...
import ...` at any depth counts (an import inside a function runs when the function does), except
under `if TYPE_CHECKING:`, which never runs. Importing a module runs its packages' `__init__.py`
too; `from package import name` pulls in the submodule `name` where there is one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "lamina"
PACKAGE_DIR = Path(__file__).resolve().parent  # the package this code runs from


def code_closure(script: Path, package_dir: Path) -> list[Path]:
    """The files under `package_dir` (a checkout's `lamina` package) that running `script`
    imports, directly or through each other, sorted; the script itself is not among them."""
    closure: set[Path] = set()
    pending = [script]
    while pending:
        source = pending.pop()
        for module in _imported_modules(source, package_dir):
            for path in _module_files(module, package_dir):
                if path not in closure:
                    closure.add(path)
                    pending.append(path)
    return sorted(closure)


def _imported_modules(source: Path, package_dir: Path) -> set[str]:
    """Dotted names `source` imports: each module, and for `from x import a` also `x.a`, in
    case `a` is a submodule (_module_files drops the names that are not)."""
    modules: set[str] = set()
    for node in _running_nodes(ast.parse(source.read_bytes(), filename=str(source))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_module(node, source, package_dir)
            if base is None:
                continue
            modules.add(base)
            modules.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return modules


def _running_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:` blocks."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute_module(node: ast.ImportFrom, source: Path, package_dir: Path) -> str | None:
    """The module a `from ... import` names, its relative dots resolved against the package
    that holds `source`; None for a relative import outside the package."""
    if node.level == 0:
        return node.module
    if not source.is_relative_to(package_dir):
        return None
    package = [PACKAGE, *source.parent.relative_to(package_dir).parts]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _module_files(module: str, package_dir: Path) -> list[Path]:
    """The files importing `module` runs: each package's `__init__.py` on the way down, then
    the module's own file. None for a module outside Lamina; for `lamina.x.name` where `name`
    is an attribute, not a submodule, those of `lamina.x`."""
    top, *parts = module.split(".")
    if top != PACKAGE:
        return []
    files = [package_dir / "__init__.py"]
    folder = package_dir
    for name in parts:
        folder = folder / name
        if (folder / "__init__.py").is_file():
            files.append(folder / "__init__.py")
        elif folder.with_suffix(".py").is_file():
            files.append(folder.with_suffix(".py"))
            break  # a module: any name after it is an attribute
        else:
            break  # an attribute: `from lamina.x import function`
    return files
