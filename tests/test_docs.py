"""The docs as a reader meets them: every ```python block of README.md and docs/*.md runs as written,
every link between the docs resolves, and the API page lists the public API.

The blocks of one file run in order in one namespace (a later block may use what an earlier one
made), in a fresh temporary folder with a private `DQN2SNN_CACHE`, as a user with a new checkout would
run them. A block that needs something the repository does not hold (a hub download, a Ray cluster)
has `<!-- needs: WHAT -->` on the line above it and a sentence saying so for the reader; the test
skips that block and no other. A traceback names the doc's own file and line.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import dqn2snn_plugin

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED_DOCS = [*RUNNABLE_DOCS, *sorted((ROOT / "docs" / "notebook").glob("*.md")), ROOT / "benchmarks" / "README.md",
               ROOT / "dev" / "README.md"]
NEEDS = re.compile(r"^<!--\s*needs:\s*(?P<what>.+?)\s*-->$")
FENCE = re.compile(r"^```(?P<lang>\S*)")
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")

# Docs another branch is rewriting: each entry fails strictly once the doc runs, so that it is removed.
@dataclass(frozen=True)
class Block:
    """One fenced code block of a doc: its language, its first code line (1-based), its code, and what
    it needs that a fresh checkout does not hold (None: nothing)."""

    lang: str
    line: int
    code: str
    needs: str | None


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        needs = NEEDS.match(above)
        blocks.append(Block(fence["lang"], i + 2, "\n".join(lines[i + 1:end]), needs["what"] if needs else None))
        i = end + 1
    return blocks


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _runnable(path: Path) -> bool:
    return any(block.lang == "python" and block.needs is None for block in code_blocks(path))


def _doc_param(path: Path):
    return pytest.param(_name(path), id=_name(path))


@pytest.mark.slow
@pytest.mark.parametrize("doc", [_doc_param(path) for path in RUNNABLE_DOCS if _runnable(path)])
def test_the_python_blocks_run_in_order_in_a_fresh_folder(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DQN2SNN_CACHE", str(tmp_path / "cache"))
    namespace: dict = {"__name__": "__main__"}
    for block in code_blocks(ROOT / doc):
        if block.lang == "python" and block.needs is None:
            # padded so that a traceback's line numbers are the doc's own
            exec(compile("\n" * (block.line - 1) + block.code, str(ROOT / doc), "exec"), namespace)


@pytest.mark.parametrize("doc", [_name(path) for path in RUNNABLE_DOCS])
def test_a_needs_marker_stands_right_above_a_python_block(doc):
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    markers = [n + 1 for n, line in enumerate(lines) if NEEDS.match(line.strip())]
    marked = [block.line - 2 for block in code_blocks(ROOT / doc) if block.needs is not None]
    assert markers == marked, f"{doc}: a needs marker that no python block follows, on lines {markers}"
    assert all(block.lang == "python" for block in code_blocks(ROOT / doc) if block.needs is not None)


def github_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a markdown file's headings: lower case, punctuation dropped, spaces as
    hyphens, `-1`, `-2`, ... on repeats (headings inside code blocks are not headings)."""
    anchors: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            repeat = 0
            while (f"{slug}-{repeat}" if repeat else slug) in anchors:
                repeat += 1
            anchors.add(f"{slug}-{repeat}" if repeat else slug)
    return anchors


@pytest.mark.parametrize("doc", [_name(path) for path in LINKED_DOCS])
def test_every_link_between_the_docs_resolves(doc):
    source = ROOT / doc
    broken = []
    for match in LINK.finditer(source.read_text(encoding="utf-8")):
        target = match["target"]
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:: outside the repository
        file, _, anchor = target.partition("#")
        path = (source.parent / file).resolve() if file else source
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in github_anchors(path):
            broken.append(target)
        elif "--" in anchor:
            broken.append(f"{target} (GitHub keeps '--', mkdocs makes it '-': reword the heading)")
    assert not broken, f"{doc}: links to nothing: {broken}"


def api_entries() -> list[str]:
    """The objects docs/api.md renders (mkdocstrings `::: dotted.name` lines)."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    return re.findall(r"^:::\s*(\S+)", text, flags=re.MULTILINE)


def test_the_api_page_renders_every_public_name_and_each_entry_exists():
    documented = set()
    for entry in api_entries():
        module, _, name = entry.rpartition(".")
        try:  # a whole module documents every public name defined in it
            target = importlib.import_module(entry)
            documented |= {key for key, value in vars(target).items()
                           if not key.startswith("_") and getattr(value, "__module__", None) == entry}
        except ModuleNotFoundError:
            target = getattr(importlib.import_module(module), name, None)
            documented.add(name)
        assert target is not None, f"docs/api.md renders {entry}, which does not exist"
    missing = sorted(set(dqn2snn_plugin.__all__) - documented)
    assert not missing, f"docs/api.md lacks these public names of dqn2snn_plugin: {missing}"
