"""The repository's layout holds: imports point one way, causal_models needs no torch, named files exist.

DESIGN.md: `causal_models <- alignment <- cluster <- search`, a package imports only from
packages to its left, and `causal_models` never imports torch. A reader follows the paths a
doc or a docstring names, so each must exist.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("causal_models", "alignment", "cluster", "search")  # each may import only from those before it
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
# The design notes live outside this repository; a path into them is one a reader of the repo cannot follow.
OUTSIDE = ("research/", "seed/")


def modules(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every import in the module, those inside functions too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; this project imports absolutely"
            found.add((str(node.module).split(".")[0], node.lineno))
    return found


def test_imports_point_one_way():
    wrong = []
    for rank, package in enumerate(PACKAGES):
        allowed, later = set(PACKAGES[:rank + 1]), set(PACKAGES[rank + 1:])
        for path in modules(package):
            wrong += [f"{path.relative_to(ROOT)}:{line} imports {name}" for name, line in imported_packages(path)
                      if name in later - allowed]
    assert not wrong, "imports must point causal_models <- alignment <- cluster <- search:\n" + "\n".join(wrong)


def test_the_import_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from search.cli import main\n    import cluster.sharded as s\n")
    assert imported_packages(module) == {("search", 2), ("cluster", 3)}


def test_causal_models_never_import_torch():
    code = ("import sys, causal_models\nfrom causal_models import get_task, sample_pairs, to_dataset\n"
            "t = get_task('price_tagging'); m = t.causal_model()\n"
            "to_dataset(sample_pairs(m, ['left_boundary'], 10, 0), t.template())\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def named_paths(text: str, prefixes: set[str]) -> set[str]:
    """The file paths in `text` that start with one of `prefixes` (a folder name and a slash), leaving out
    what a command shown there writes (`--out PATH`, `| tee PATH`, `> PATH`)."""
    text = re.sub(r"(--out(?:put-dir)?[ =]|\btee |> )\S+", " ", text)
    pattern = r"(?<![\w./-])((?:" + "|".join(map(re.escape, sorted(prefixes))) + r")[\w./-]*[\w/])"
    return {path for path in re.findall(pattern, text) if "..." not in path}


def python_prose(path: Path) -> str:
    """The docstrings and comments of a Python file (where it tells the reader where to look)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = [ast.get_docstring(node, clean=False) or "" for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    comments = [token.string for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
                if token.type == tokenize.COMMENT]
    return "\n".join(docstrings + comments)


def _top_folders() -> set[str]:
    """The repository's own top-level folders: those git tracks files in (a folder a user made, such as
    models/ from `align-search convert-gguf`, is not one), or every folder outside a git checkout."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:
        return {line.split("/")[0] for line in listed.stdout.splitlines() if "/" in line and not line.startswith(".")}
    return {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}


def dead_references(source: Path, text: str) -> list[str]:
    """Paths `text` names that do not exist: from the repository root, or from `source`'s own folder."""
    top = {f"{name}/" for name in _top_folders()} | {".ci/"}
    beside = {f"{p.name}/" for p in source.parent.iterdir() if p.is_dir()} - top if source.parent != ROOT else set()
    dead = []
    for path in sorted(named_paths(text, top | beside | set(OUTSIDE))):
        where = ROOT if path.split("/")[0] + "/" in top else source.parent
        if path.startswith(OUTSIDE) or not (where / path).exists():
            dead.append(f"{source.relative_to(ROOT)} names {path}")
    return dead


def test_every_file_a_doc_or_docstring_names_exists():
    dead = []
    for doc in DOCS:
        dead += dead_references(doc, doc.read_text())
    for path in modules(*PACKAGES, "benchmarks", "tests"):
        dead += dead_references(path, python_prose(path))
    assert not dead, "these references lead nowhere:\n" + "\n".join(dead)


def test_the_reference_check_finds_a_dead_one():
    text = ("see `alignment/positions.py`, alignment/prompts.py, docs/cluster.md, (research/models.md) and "
            "sweeps/price_tagging-.../report.md")
    assert dead_references(ROOT / "README.md", text) == [
        "README.md names alignment/positions.py", "README.md names docs/cluster.md",
        "README.md names research/models.md"]
    assert dead_references(ROOT / "benchmarks" / "README.md", "results/nothing.json, results/sweep.json") == [
        "benchmarks/README.md names results/nothing.json"]
    assert dead_references(ROOT / "README.md", "run --out docs/new.json | tee docs/new.txt > docs/x.md") == []
