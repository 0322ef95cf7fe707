#!/usr/bin/env python
"""Build a real-text English corpus from documentation already on this machine (no network).

    python benchmarks/make_text_corpus.py /tmp/nsdist-text.txt

Sources (each can be switched off with --sources):

* ``man``:    English manual pages, /usr/share/man/man[1-9]/*.gz, troff markup stripped;
              code blocks (.nf/.fi, .EX/.EE), tables and macro definitions dropped.
* ``info``:   GNU info manuals, /usr/share/info/*.gz (plain text; node headers and menus dropped).
* ``doc``:    README / NEWS / FAQ / *.txt / *.md / *.rst / *.html under /usr/share/doc
              (changelogs and copyright files are left out: mostly names, dates and licences).
* ``python``: docstrings (via ``ast``) and comments (via ``tokenize``) of every ``.py`` file of the
              running interpreter's standard library and site-packages.

Text becomes one sentence per line: paragraphs are joined, split after ``.``, ``!`` or ``?``,
lowercased, accents folded (NFKD), apostrophes inside words dropped ("don't" -> "dont") and
split into ASCII alphanumeric word tokens; tokens without a letter (numbers) and tokens over
30 characters are dropped, sentences of fewer than 3 tokens are dropped and longer ones than
1000 tokens are cut into chunks (gensim drops words past 10,000). Lines that look like code
(doctest prompts, shell prompts, mostly non-letters) are skipped, and so are sentences of 10+
tokens without a function word and whole documents with under 5% of them (word lists, glyph
tables, command synopses). Sentences of 6 or more tokens
that already occurred are dropped (generated man pages and API docs repeat boilerplate).

Deterministic given the machine's files: file lists are sorted, then (with ``--order mixed``,
the default) put in an order given by a hash of (seed, path) so that every part of the
corpus mixes all sources, and documents are processed in that order even with ``--jobs``.
The output is written to OUT.tmp and renamed; the script prints its token count, vocabulary
size and sha256. Never commit the corpus.
"""

from __future__ import annotations

import argparse
import ast
import collections
import gzip
import hashlib
import html
import io
import multiprocessing
import os
import re
import sys
import sysconfig
import time
import tokenize
import unicodedata

SOURCES = ("man", "info", "doc", "python")
MIN_TOKENS, MAX_TOKENS, MAX_TOKEN_CHARS, DEDUP_MIN_TOKENS = 3, 1000, 30, 6
MAX_FILE_BYTES = 4 << 20  # larger files (16 MiB uncompressed) are generated code, data or concatenations

# ---------------------------------------------------------------- finding files


def _walk(root: str, keep, skip_dirs=("__pycache__",)) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs and not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if keep(f)]
    return out


def man_files() -> list[str]:
    root = "/usr/share/man"
    if not os.path.isdir(root):
        return []
    out = []
    for d in sorted(os.listdir(root)):
        if re.fullmatch(r"man[1-9]", d):  # English sections only (translations live in ll/manN)
            out += _walk(os.path.join(root, d), lambda f: True)
    return out


def info_files() -> list[str]:
    root = "/usr/share/info"
    return _walk(root, lambda f: f.endswith((".info", ".info.gz")) or re.search(r"\.info-\d+(\.gz)?$", f)) \
        if os.path.isdir(root) else []


_DOC_NAME = re.compile(r"(readme|news|faq|todo|howto|authors|thanks|bugs|usage|manual|intro|guide)"
                       r"([-_.][^/]*)?$|\.(txt|md|rst|html?|text)(\.gz)?$", re.I)


def doc_files() -> list[str]:
    root = "/usr/share/doc"
    if not os.path.isdir(root):
        return []
    skip = re.compile(r"^(copyright|changelog|changes|license|licence|copying)", re.I)
    binary = re.compile(r"\.(ps|pdf|dvi|png|gif|jpe?g|svg|ico|bz2|xz|zip|tar)(\.gz)?$", re.I)
    return _walk(root, lambda f: bool(_DOC_NAME.search(f)) and not skip.match(f) and not binary.search(f))


def python_roots() -> list[str]:
    paths = sysconfig.get_paths()
    roots = []
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = paths.get(key)
        if p and os.path.isdir(p) and os.path.realpath(p) not in [os.path.realpath(r) for r in roots]:
            roots.append(p)
    return roots


def python_files(roots: list[str]) -> list[str]:
    out = []
    for root in roots:
        # the stdlib tree holds the base interpreter's site-packages: only roots named explicitly count
        skip = ("__pycache__", "site-packages", "dist-packages")
        out += _walk(root, lambda f: f.endswith(".py"), skip_dirs=skip)
    return out


# ---------------------------------------------------------------- extracting text

def _read(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return ""
    if path.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return ""
        if len(data) > MAX_FILE_BYTES * 4:
            return ""
    if b"\0" in data[:8192]:  # binary
        return ""
    return data.decode("utf-8", errors="replace")


_TROFF_ESC = [
    (re.compile(r'\\".*'), ""),                        # comment to end of line
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),       # font changes
    (re.compile(r"\\s[-+]?(\d+|\(\d\d|\[[^\]]*\])"), ""),  # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), " "),      # strings
    (re.compile(r"\\\((aq|cq|oq|rs)"), "'"),
    (re.compile(r"\\\((em|en|hy|mi)"), " - "),
    (re.compile(r"\\(\(..|\[[^\]]*\])"), " "),          # other special characters
    (re.compile(r"\\[nkgzVY](\[[^\]]*\]|\(..|.)"), " "),  # registers etc.
    (re.compile(r"\\[hvwlLxXoDbR]'[^']*'"), " "),       # motions, width, lines
    (re.compile(r"\\[-e]"), "-"),
    (re.compile(r"\\[&c%|^:!)d{}tua0~ ]"), " "),
    (re.compile(r"\\(.)"), r"\1"),
]
_TEXT_MACROS = {"B", "I", "BR", "IR", "RB", "BI", "IB", "RI", "SM", "SB", "SH", "SS", "IP", "TP", "HP",
                "UR", "MT", "Nd", "Sh", "Ss", "Em", "Dq", "Qq", "Sq", "Pq", "D1", "Dl", "It"}
_MDOC_WORD = re.compile(r"\b(Ar|Cm|Dq|Em|Fl|Ic|Li|Nm|Ns|Op|Pa|Pq|Ql|Qq|Sq|Sy|Va|Xr|Ev|Fn|Fa|Ft|Xo|Xc|Oo|Oc"
                        r"|Bq|Brq|Aq|No|Tn|Ux|Bx|At|Dv|Er|Ot|St|Lk|Mt)\b")


def troff_to_text(src: str) -> str:
    """Plain paragraphs of a man page (blank line = paragraph break)."""
    if re.match(r"\s*\.so\s", src):  # a redirect to another page
        return ""
    out = []
    skip_until = None
    for line in src.splitlines():
        if skip_until:
            if re.match(skip_until, line):
                skip_until = None
            continue
        if line.startswith((".", "'")):
            m = re.match(r"[.'][ \t]*([A-Za-z]{1,3}|\\\")\s*(.*)", line)
            name, rest = (m.group(1), m.group(2)) if m else ("", "")
            if name in ("de", "am", "ig"):
                skip_until = r"\.\.\s*$"
            elif name in ("nf", "EX"):
                skip_until = r"[.'](fi|EE)\b"
            elif name == "TS":
                skip_until = r"[.']TE\b"
            elif name in _TEXT_MACROS:
                if name in ("SH", "SS", "Sh", "Ss", "TP", "IP", "HP", "It"):
                    out.append("")  # headings and list items start a paragraph
                text = _MDOC_WORD.sub(" ", rest.replace('"', " "))
                if name not in ("SH", "SS", "Sh", "Ss"):  # headings are mostly NAME, OPTIONS, ...
                    out.append(text)
                if name in ("SH", "SS", "Sh", "Ss", "IP", "HP"):
                    out.append("")
            elif name in ("PP", "LP", "P", "Pp", "sp", "br", "RS", "RE", "Bl", "El"):
                out.append("")
            continue
        out.append(line)
    text = "\n".join(out)
    for pattern, repl in _TROFF_ESC:
        text = pattern.sub(repl, text)
    return text


def info_to_text(src: str) -> str:
    out = []
    for node in src.split("\x1f"):
        lines = node.split("\n")
        if lines and lines[0].strip() == "":
            lines = lines[1:]
        if lines and lines[0].startswith(("File:", "Tag Table:", "Indirect:", "End Tag Table")):
            lines = lines[1:]
        for line in lines:
            if line.startswith(("* Menu:", "* ")) and "::" in line or line.startswith("* Menu:"):
                out.append("")
                continue
            out.append(line)
        out.append("")
    return "\n".join(out)


_TAG = re.compile(r"<(script|style|pre|code)\b.*?</\1>|<[^>]+>", re.S | re.I)


def html_to_text(src: str) -> str:
    src = re.sub(r"<(p|br|div|h\d|li|tr|td|dt|dd|ul|ol|table)\b", "\n\n<", src, flags=re.I)
    return html.unescape(_TAG.sub(" ", src))


def python_to_text(src: str) -> str:
    """Docstrings and comments of a Python file, as paragraphs."""
    out = []
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                out.append(doc)
                out.append("")
    try:
        comment = []
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                text = tok.string.lstrip("#").strip()
                if text.startswith(("!", "-*-", "type:", "noqa", "pragma", "pylint", "fmt:")):
                    continue
                comment.append(text)
            elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT) and comment:
                out.append("\n".join(comment))
                out.append("")
                comment = []
        if comment:
            out.append("\n".join(comment))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return "\n".join(out)


# ---------------------------------------------------------------- text -> sentences

_CODE_START = (">>>", "...", "$ ", "# ", "#!", "%", "In [", "Out[", ".. ", "::", "|", "+-", "//", "/*", "*/")
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_APOS = re.compile(r"(?<=[a-z])['\u2019](?=[a-z])")
_WORD = re.compile(r"[a-z0-9]+")


def _prose_line(line: str) -> bool:
    s = line.strip()
    if not s or s.startswith(_CODE_START):
        return False
    letters = sum(c.isalpha() or c == " " for c in s)
    return letters >= 0.75 * len(s)


_FUNCTION_WORDS = frozenset("the a an of to in is are be and or for on with that this it as by from not".split())


def _prose_share(tokens: list[str]) -> float:
    return sum(t in _FUNCTION_WORDS for t in tokens) / max(len(tokens), 1)


def tokenize_text(text: str) -> list[list[str]]:
    """Sentences of word tokens from plain paragraphs.

    Word lists, tables and command synopses are not prose: a sentence of 10+ tokens without a
    single function word ("the", "of", "is", ...) is dropped, and so is a whole document of 200+
    tokens where under 5% of the tokens are function words (English prose: 25-35%).
    """
    sentences = []
    paragraph: list[str] = []

    def flush():
        if not paragraph:
            return
        joined = " ".join(paragraph)
        paragraph.clear()
        joined = unicodedata.normalize("NFKD", joined).encode("ascii", "ignore").decode("ascii").lower()
        joined = _APOS.sub("", joined)
        for sent in _SENT_END.split(joined):
            toks = [t for t in _WORD.findall(sent) if len(t) <= MAX_TOKEN_CHARS and not t.isdigit()]
            for i in range(0, len(toks), MAX_TOKENS):
                chunk = toks[i:i + MAX_TOKENS]
                if len(chunk) >= MIN_TOKENS and (len(chunk) < 10 or _prose_share(chunk) > 0):
                    sentences.append(chunk)

    for line in text.split("\n"):
        if _prose_line(line):
            paragraph.append(line.strip())
        else:
            flush()
    flush()
    n = sum(len(s) for s in sentences)
    if n >= 200 and sum(_prose_share(s) * len(s) for s in sentences) < 0.05 * n:
        return []
    return sentences


def extract(task: tuple[str, str]) -> tuple[str, str, list[str]]:
    """(source, path) -> (source, path, sentences as space-joined lines)."""
    source, path = task
    try:
        raw = _read(path)
    except OSError:
        return source, path, []
    if not raw:
        return source, path, []
    if source == "man":
        text = troff_to_text(raw)
    elif source == "info":
        text = info_to_text(raw)
    elif source == "python":
        text = python_to_text(raw)
    elif re.search(r"\.html?(\.gz)?$", path, re.I):
        text = html_to_text(raw)
    else:
        text = raw
    return source, path, [" ".join(s) for s in tokenize_text(text)]


# ---------------------------------------------------------------- main

def tasks(sources: list[str], roots: list[str], order: str, seed: int) -> list[tuple[str, str]]:
    finders = {"man": man_files, "info": info_files, "doc": doc_files, "python": lambda: python_files(roots)}
    seen, out = set(), []
    for source in sources:
        for path in finders[source]():
            real = os.path.realpath(path)  # symlinked pages / venv links: read each file once
            if real in seen or not os.path.isfile(real):
                continue
            seen.add(real)
            out.append((source, path))
    if order == "mixed":
        out.sort(key=lambda t: hashlib.blake2b(f"{seed}\0{t[0]}\0{t[1]}".encode(), digest_size=8).digest())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out", nargs="?", default="/tmp/nsdist-text.txt", help="corpus file to write")
    p.add_argument("--sources", default=",".join(SOURCES), help=f"comma list of {', '.join(SOURCES)}")
    p.add_argument("--python-root", action="append", default=[], metavar="DIR",
                   help="extra directory of .py files (default: this interpreter's stdlib and site-packages)")
    p.add_argument("--order", choices=("mixed", "sorted"), default="mixed",
                   help="document order: sorted by source and path, or mixed by a hash of (seed, path)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-tokens", type=int, help="stop after this many tokens")
    p.add_argument("--no-dedup", action="store_true", help="keep repeated sentences")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="extraction processes")
    a = p.parse_args(argv)

    sources = [s.strip() for s in a.sources.split(",") if s.strip()]
    bad = [s for s in sources if s not in SOURCES]
    if bad:
        p.error(f"unknown source(s) {bad}; choose from {', '.join(SOURCES)}")
    if os.path.realpath(a.out).startswith(os.path.realpath(os.path.join(os.path.dirname(__file__), "..")) + os.sep):
        print("note: writing inside the repository; do not commit the corpus", file=sys.stderr)

    t0 = time.perf_counter()
    todo = tasks(sources, python_roots() + a.python_root, a.order, a.seed)
    print(f"{len(todo):,} files: " + ", ".join(f"{s} {sum(t[0] == s for t in todo):,}" for s in sources),
          file=sys.stderr)

    counts: collections.Counter = collections.Counter()
    per_source = {s: {"files": 0, "used": 0, "sentences": 0, "tokens": 0, "dropped_dups": 0} for s in sources}
    seen: set[bytes] = set()
    tokens = sentences = 0
    sha = hashlib.sha256()
    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="ascii", newline="\n") as f, \
            multiprocessing.Pool(max(1, a.jobs)) as pool:
        results = pool.imap(extract, todo, chunksize=16) if a.jobs > 1 else map(extract, todo)
        for i, (source, path, lines) in enumerate(results):
            st = per_source[source]
            st["files"] += 1
            kept = []
            for line in lines:
                n = line.count(" ") + 1
                if not a.no_dedup and n >= DEDUP_MIN_TOKENS:
                    key = hashlib.blake2b(line.encode(), digest_size=8).digest()
                    if key in seen:
                        st["dropped_dups"] += 1
                        continue
                    seen.add(key)
                kept.append(line)
                st["sentences"] += 1
                st["tokens"] += n
                tokens += n
                counts.update(line.split())
                if a.max_tokens and tokens >= a.max_tokens:
                    break
            if kept:
                st["used"] += 1
                data = "\n".join(kept) + "\n"
                f.write(data)
                sha.update(data.encode("ascii"))
                sentences += len(kept)
            if (i + 1) % 5000 == 0:
                print(f"  {i + 1:,}/{len(todo):,} files, {tokens:,} tokens, {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr)
            if a.max_tokens and tokens >= a.max_tokens:
                pool.terminate()
                break
    os.replace(tmp, a.out)

    for s, st in per_source.items():
        print(f"{s:>6}: {st['files']:,} files read, {st['used']:,} with text, {st['sentences']:,} sentences, "
              f"{st['tokens']:,} tokens, {st['dropped_dups']:,} repeated sentences dropped")
    print(f"wrote {a.out}: {tokens:,} tokens, {sentences:,} sentences, {os.path.getsize(a.out) / 1e6:,.1f} MB "
          f"in {time.perf_counter() - t0:.0f} s")
    print(f"vocabulary: {len(counts):,} distinct words, {sum(c >= 5 for c in counts.values()):,} with count >= 5")
    print(f"most frequent: {' '.join(w for w, _ in counts.most_common(20))}")
    print(f"sha256: {sha.hexdigest()}")
    if tokens < 10_000_000 and not a.max_tokens:
        print("note: under 10M tokens; add sources or --python-root DIR", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
