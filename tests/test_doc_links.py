"""Every relative link in README.md, DEVELOPERS.md and docs/*.md points to a file that exists and,
when it names an anchor, to a heading of that page as GitHub anchors it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def prose(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, with their numbers."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation gone, spaces become hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of a page's headings; repeats get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """The relative link targets of a page (code spans and blocks left out), with line numbers."""
    return links_in(page.read_text(encoding="utf-8"))


def links_in(text: str) -> list[tuple[int, str]]:
    """The relative link targets of markdown ``text``, with line numbers."""
    found = []
    for number, line in prose(text):
        line = CODE_SPAN.sub(lambda m: "[]" if m.group(0).endswith("]") else "x", line)
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
                found.append((number, target))
    return found


def broken(page: Path) -> list[str]:
    """What is wrong with the relative links of ``page``, one line per bad link."""
    problems = []
    for number, target in links(page):
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        shown = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page.name
        where = f"{shown}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with that anchor in {dest.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_and_heading(page: Path) -> None:
    assert broken(page) == []


def test_the_pages_link_to_each_other() -> None:
    readme = {target.partition("#")[0] for _, target in links(ROOT / "README.md")}
    docs = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert len(docs) >= 7
    assert docs <= readme, f"README.md links to no {sorted(docs - readme)}"
    linked = sum(len(links(page)) for page in PAGES)
    assert linked > 50


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("The `run-pipeline` command", "the-run-pipeline-command"),
        ("Capacity: calls the models carry", "capacity-calls-the-models-carry"),
        ("The call API and the page (WebSockets)", "the-call-api-and-the-page-websockets"),
        ("Health, metrics and calls (HTTP API)", "health-metrics-and-calls-http-api"),
        ("voxpipe's phone line in a Pipecat pipeline", "voxpipes-phone-line-in-a-pipecat-pipeline"),
        ("`tools.<name>.http`", "toolsnamehttp"),
        ("`session_store.redis`", "session_storeredis"),
        ("`llm: provider scripted`", "llm-provider-scripted"),
    ],
)
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_broken_link_or_anchor_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Same\n\n## Same\n\n```\n## In code\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#same-1) [ok](#page) [ok](other.md) [web](https://example.com/x#y)\n"
        "[gone](missing.md) [bad](other.md#same-2) [code](other.md#in-code) [self](#nowhere)\n"
        "`[not a link](missing.md)`\n"
    )
    problems = broken(page)
    assert [p.split(": ")[1] for p in problems] == [
        "missing.md",
        "other.md#same-2",
        "other.md#in-code",
        "#nowhere",
    ]
    assert problems[0].startswith("page.md:4: ")


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_each_docs_page_lists_its_sections(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# ") and "\nContents:\n" in text
    contents = text.split("\nContents:\n", 1)[1].split("\n## ", 1)[0]
    listed = {target for _, target in links_in(contents)}
    sections = [
        match.group(2)
        for _, line in prose(text)
        if (match := HEADING.match(line)) and match.group(1) == "##"
    ]
    assert sections
    for title in sections:
        assert f"#{slug(title)}" in listed, f"{page.name}: contents list lacks {title!r}"
