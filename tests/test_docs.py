"""The README is checked against the code it documents: the configuration table is rendered from
the config classes, every command and exit code is there, the set-up commands are CI's, its
commands parse and write under quickstart/, and no relative link in the README or docs/ points at
nothing."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from conftest import REQUIRE_SYSTEM_TESTS

import nsdist.errors
from nsdist.cli import COMMANDS
from nsdist.cli.parser import parser
from nsdist.config import markdown_table
from nsdist.errors import NsdistError

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md",
        ROOT / "benchmarks" / "README.md"]
REGENERATE = ("regenerate it with: python -c 'from nsdist.config import markdown_table; print(markdown_table())' "
              "and paste the output between the markers")


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a Markdown text (up to the next ``## ``).

    >>> section("# a\\n## B\\nb\\n## C\\nc\\n", "B")
    'b\\n'
    """
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading.

    >>> slug("Checkpoints, resume and warm starts"), slug("`nsdist info`, `runs`")
    ('checkpoints-resume-and-warm-starts', 'nsdist-info-runs')
    """
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def without_code_blocks(text: str) -> str:
    """Markdown without fenced code blocks, whose '# comment' lines are not headings."""
    return re.sub(r"^ *```.*?^ *```", "", text, flags=re.M | re.S)


def without_code(text: str) -> str:
    """Markdown without code blocks and inline code spans, where brackets are not links.

    >>> without_code("[a](x.md) `[b](y.md)`")
    '[a](x.md) '
    """
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(text))


def test_the_configuration_table_is_rendered_from_the_config_classes():
    match = re.search(r"<!-- config-table:start -->\n(.*?)\n?<!-- config-table:end -->", README, flags=re.S)
    assert match, "README.md lacks the <!-- config-table:start --> / <!-- config-table:end --> markers"
    assert section(README, "Configuration").count("<!-- config-table:start -->") == 1
    assert match.group(1) == markdown_table(), f"README.md's configuration table is stale; {REGENERATE}"


def test_every_command_is_in_the_command_line_reference():
    reference = section(README, "Command line")
    listed = set(re.findall(r"^- `nsdist (\w+)", reference, flags=re.M))
    assert set(COMMANDS) <= listed, f"commands missing from README's Command line: {set(COMMANDS) - listed}"
    assert listed <= set(COMMANDS), f"README lists commands that do not exist: {listed - set(COMMANDS)}"


def test_every_exit_code_is_in_the_readme():
    documented = {int(code) for code in re.findall(r"\b\d+\b", nsdist.errors.__doc__)}
    classes = {cls.exit_code for cls in NsdistError.__subclasses__() if isinstance(cls.exit_code, int)}
    assert classes <= documented and {0, 1, 130, 143} <= documented, documented  # the docstring is complete
    table = {int(code) for code in re.findall(r"^\| `(\d+)` \|", section(README, "Command line"), flags=re.M)}
    assert table == documented, f"README's exit-code table has {sorted(table)}, nsdist/errors.py {sorted(documented)}"


def test_the_set_up_commands_are_there_and_the_test_command_is_ci_s():
    ci = (ROOT / ".ci" / "run").read_text()
    ci_line = next(line for line in ci.splitlines() if line.startswith("python -m pip install -e"))
    assert ci_line == "python -m pip install -e '.[test]' && python -m pytest"
    blocks = re.findall(r"^( *)```sh\n(.*?)^\1```", section(README, "Set-up: two commands"), flags=re.M | re.S)
    commands = [line[len(indent):] for indent, body in blocks for line in body.splitlines()]
    assert commands == ["python3 -m pip install . && python3 -m nsdist demo", ci_line], commands
    # CI turns the skips of tests that lack a system tool or root into failures; so says development.md.
    switch = f"export {REQUIRE_SYSTEM_TESTS}=1"
    assert switch in ci and ci.index(switch) < ci.index(ci_line), f".ci/run must {switch} before the tests"
    assert f"{REQUIRE_SYSTEM_TESTS}=1" in (ROOT / "docs" / "development.md").read_text(encoding="utf-8")


def readme_commands() -> list[list[str]]:
    """The ``nsdist`` commands of the README's sh blocks, as argument lists (comments and line
    continuations undone)."""
    lines = []
    for body in re.findall(r"^ *```sh\n(.*?)^ *```", README, flags=re.M | re.S):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "nsdist":
                lines.append(words[1:])
    return lines


def test_the_readme_commands_parse_and_write_under_quickstart():
    commands = readme_commands()
    assert len(commands) >= 10, commands  # the pattern finds them
    written = []
    for argv in commands:
        try:
            args = parser().parse_args(argv)
        except (NsdistError, SystemExit) as e:  # the parser raises ConfigError on a usage error
            raise AssertionError(f"README: `nsdist {' '.join(argv)}` does not parse: {e}") from None
        if args.command == "synth":
            written.append(args.sessions or args.graph or args.out_file)
        elif args.command == "train":
            written.append(args.out)
    assert written and all(path.startswith("quickstart/") for path in written), written
    assert "/quickstart/" in (ROOT / ".gitignore").read_text().splitlines()
    python = re.findall(r"^```python\n(.*?)^```", section(README, "Quick start"), flags=re.M | re.S)
    paths = re.findall(r'"([^"\s]*/[^"\s]*)"', "".join(python))
    assert paths and all(path.startswith(("quickstart/", "s3://")) for path in paths), paths


def test_every_relative_link_points_to_a_file_that_exists():
    checked = 0
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", without_code(doc.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            assert linked.exists(), f"{doc.relative_to(ROOT)} links to {target}, which does not exist"
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", without_code_blocks(linked.read_text(encoding="utf-8")), flags=re.M)
                assert anchor in {slug(h) for h in headings}, f"{doc.relative_to(ROOT)}: no heading for {target}"
            checked += 1
    assert checked >= 20  # the pattern finds the links


def test_the_readme_and_docs_say_what_is_not_what_was():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        dated = re.findall(r"\b20\d\d-\d\d-\d\d\b|\buntil 20\d\d|\bpreviously\b|\bthe old\b", text, flags=re.I)
        assert not dated, f"{doc.relative_to(ROOT)} tells history ({dated}); say what is, and why"


def test_the_readme_and_docs_name_files_that_exist_and_no_machine_s_paths():
    named = 0
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        paths = re.findall(r"`((?:nsdist|tests|benchmarks|jobs|deploy|docs)/[\w./-]*)", text)
        missing = [path for path in paths if not (ROOT / path).exists()]
        assert not missing, f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"
        machine = re.findall(r"(?<![\w.~])/(?:tmp|root|home)/\S*", text)
        assert not machine, f"{doc.relative_to(ROOT)} holds paths of one machine: {machine}; use relative ones"
        named += len(paths)
    assert named >= 20  # the pattern finds them
