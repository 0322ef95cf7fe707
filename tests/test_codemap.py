"""Maps of the code stay true: docs/design.md names every module of the package, and the code and
docs say what is, not what was."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nsdist"


def modules() -> set[str]:
    return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}


def test_the_code_map_names_every_module_and_only_modules():
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    table = design[design.index("## Code map"):design.index("\n## ", design.index("## Code map") + 1)]
    named = set(re.findall(r"^\| `([\w/]+\.py)` \|", table, flags=re.M))
    assert len(modules()) > 40  # the glob finds the package
    assert modules() - named == set(), "add these modules to the code map in docs/design.md"
    assert named - modules() == set(), "these modules in docs/design.md's code map no longer exist"


HISTORY = re.compile(r"\b20\d\d-\d\d-\d\d\b|\buntil 20\d\d|\bpreviously\b|\bthe old\b", re.I)


def test_the_code_and_the_benchmarks_say_what_is_not_what_was():
    """Code comments, docstrings and benchmark scripts say why things are as they are now;
    history lives in git. (The README and docs/ are checked in test_docs.py; benchmark tables
    may give the date of their measurement.)"""
    files = [*sorted(PACKAGE.rglob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    assert len(files) > 50
    told = [(p.relative_to(ROOT).as_posix(), m) for p in files for m in HISTORY.findall(p.read_text(encoding="utf-8"))]
    assert told == [], "say what is, and why (history belongs in git)"


def test_no_machine_paths_in_the_docs():
    """Docs name paths a reader has: no temporary folder of one past run (a /tmp path with a
    random suffix)."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
    found = [(d.name, m) for d in docs for m in re.findall(r"/tmp/[\w.-]*(?:tmp|pytest-of)[\w./-]*",
                                                          d.read_text(encoding="utf-8"))]
    assert found == []
