"""dvc.yaml's code deps are exactly the Lamina files each stage's script imports.

Missing one, `dvc repro` keeps a stage's stale outputs after an edit to code it runs; listing
more, an unrelated edit reruns it. Every variant of a `foreach` stage is checked, its `${...}`
expanded from the `vars` dvc.yaml declares. A folder dep must be one whose every file the
stage imports; the failure message prints the exact deps to paste. The `train` stage's resume
fingerprint (training/resume.py) hashes the same files, so a resumed fit never mixes code versions.
"""

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lamina.code_closure import code_closure
from lamina.training import resume
from tests.conftest import REPO_ROOT

PACKAGE_DIR = REPO_ROOT / "src" / "lamina"
TEMPLATE = re.compile(r"\$\{([^}]+)\}")


def stage_variants() -> Iterator[tuple[str, dict]]:
    """(name as `dvc repro` spells it, definition with `${...}` expanded) for every stage."""
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    variables = {key: value for entry in dvc.get("vars", []) for key, value in entry.items()}
    for stage, definition in dvc["stages"].items():
        if "foreach" not in definition:
            yield stage, _expand(definition, variables)
            continue
        items = _expand(definition["foreach"], variables)
        pairs = items.items() if isinstance(items, dict) else [(item, item) for item in items]
        for key, item in pairs:
            context = {**variables, "key": key, "item": item}
            yield f"{stage}@{key}", _expand(definition["do"], context)


def _expand(value: object, context: dict) -> object:
    if isinstance(value, dict):
        return {_expand(key, context): _expand(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, context) for item in value]
    if not isinstance(value, str):
        return value
    whole = TEMPLATE.fullmatch(value)
    if whole:  # `foreach: ${experiments}` is the dict itself, not its text
        return _lookup(whole.group(1), context)
    return TEMPLATE.sub(lambda match: str(_lookup(match.group(1), context)), value)


def _lookup(dotted: str, context: dict) -> object:
    value: object = context
    for name in dotted.strip().split("."):
        value = value[name]
    return value


def _python_files(dep: Path) -> set[Path]:
    if dep.is_file():
        return {dep}
    return {path for path in dep.rglob("*.py") if "__pycache__" not in path.parts}


def exact_code_deps(closure: set[Path]) -> list[str]:
    """The shortest dep list that covers exactly `closure`: a folder where the stage imports
    every file in it, else the files."""
    deps: set[Path] = set()
    for path in closure:
        dep = path
        while dep.parent != PACKAGE_DIR and _python_files(dep.parent) <= closure:
            dep = dep.parent
        deps.add(dep)
    return sorted(str(dep.relative_to(REPO_ROOT)) for dep in deps)


VARIANTS = list(stage_variants())


@pytest.mark.parametrize(("stage", "definition"), VARIANTS, ids=[name for name, _ in VARIANTS])
def test_code_deps_are_the_modules_the_stage_imports(stage: str, definition: dict):
    scripts = [word for word in definition["cmd"].split() if word.endswith(".py")]
    assert len(scripts) == 1, f"dvc.yaml, stage {stage}: cannot tell its script from its cmd"
    script = scripts[0]
    deps = [str(dep) for dep in definition.get("deps", [])]
    assert script in deps, f"dvc.yaml, stage {stage}: add `- {script}` to its deps"
    code_deps = [dep for dep in deps if dep.startswith("src/")]
    for dep in code_deps:
        assert (REPO_ROOT / dep).exists(), f"dvc.yaml, stage {stage}: dep {dep} does not exist"

    closure = set(code_closure(REPO_ROOT / script, PACKAGE_DIR))
    covers = {dep: _python_files(REPO_ROOT / dep) for dep in code_deps}
    covered = set().union(*covers.values())
    problems = [
        f"add `- {path.relative_to(REPO_ROOT)}` ({script} imports it)"
        for path in sorted(closure - covered)
    ]
    for dep, files in covers.items():
        unused = sorted(str(path.relative_to(REPO_ROOT)) for path in files - closure)
        if unused:
            problems.append(f"`- {dep}` covers what {script} never imports: {', '.join(unused)}")
    exact = "\n".join(f"        - {dep}" for dep in exact_code_deps(closure))
    if problems:
        pytest.fail(
            f"dvc.yaml, stage {stage}: its code deps are not what {script} imports:\n  "
            + "\n  ".join(problems)
            + f"\nIts exact code deps (after `- {script}`):\n{exact}",
            pytrace=False,
        )


def test_the_closure_follows_lazy_relative_and_from_imports(tmp_path: Path):
    package = tmp_path / "lamina"
    files = {
        "__init__.py": "",
        "eager.py": "from lamina.sub import leaf, helper\n",
        "lazy.py": "def later():\n    from .sub import other\n",
        "sub/__init__.py": "helper = 1\n",
        "sub/leaf.py": "import lamina.lazy\n",
        "sub/other.py": "",
        "typing_only.py": "",
        "unused.py": "",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    script = tmp_path / "stage.py"
    script.write_text(
        "from typing import TYPE_CHECKING\nimport numpy\nimport lamina.eager\n"
        "if TYPE_CHECKING:\n    import lamina.typing_only\n"
    )

    closure = {str(path.relative_to(package)) for path in code_closure(script, package)}

    assert closure == {
        "__init__.py",
        "eager.py",
        "sub/__init__.py",
        "sub/leaf.py",
        "lazy.py",
        "sub/other.py",
    }


def test_the_resume_fingerprint_hashes_what_dvc_yaml_lists_for_train():
    for stage, definition in VARIANTS:
        if stage.startswith("train@"):
            listed = [REPO_ROOT / dep for dep in definition["deps"]]
            code = {REPO_ROOT / "pipelines" / "train.py"}.union(
                *(_python_files(dep) for dep in listed if dep.is_relative_to(PACKAGE_DIR))
            )
            assert set(resume.train_code(REPO_ROOT)) == code, stage


def test_the_resume_fingerprint_changes_with_any_file_train_imports_and_only_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cnn_config
):
    checkout = tmp_path / "checkout"
    for folder in ("pipelines", "src/lamina"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO_ROOT / folder, checkout / folder, ignore=ignore)
    monkeypatch.setattr(resume, "CHECKOUT", checkout)
    features = tmp_path / "features.parquet"
    features.write_bytes(b"rows")
    package = checkout / "src" / "lamina"
    imported = set(resume.train_code(checkout))
    # Outside training/ and models/, the only code the fingerprint once hashed.
    beyond_training = next(
        path
        for path in sorted(imported)
        if path.is_relative_to(package)
        and path.name != "__init__.py"
        and path.parent.name not in {"training", "models"}
    )
    not_imported = next(path for path in sorted(package.rglob("*.py")) if path not in imported)

    before = resume.fingerprint(cnn_config, [features], vocab_size=None)
    with not_imported.open("a") as source:
        source.write("# an edit train never runs\n")
    assert resume.fingerprint(cnn_config, [features], vocab_size=None) == before, not_imported
    with beyond_training.open("a") as source:
        source.write("# an edit train runs\n")
    assert resume.fingerprint(cnn_config, [features], vocab_size=None) != before, beyond_training
