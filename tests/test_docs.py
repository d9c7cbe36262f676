"""The documentation: README.md is the front door (small, the two set-up commands, a map of docs/), and
every page of docs/ is reachable from it through relative links that resolve, anchors included.

Fast and self-contained (re and pathlib only): the checker below is plain Python over the Markdown text.
Anchors follow GitHub's heading slugs: the heading's text (links reduced to their text) in lower case,
every character that is not a letter, digit, underscore, hyphen or space dropped, spaces turned into
hyphens, and "-1", "-2", ... appended to repeated slugs.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT = 15 * 1024  # bytes

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
WEB = re.compile(r"https?://", re.IGNORECASE)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines of `text` outside fenced code blocks (a fence closes with the same
    character, at least as long, and nothing after it)."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
            else:
                lines.append((number, line))
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip().strip(fence[0]):
            fence = None
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "_- ")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated slugs numbered as GitHub numbers them)."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image in the prose of `path` (code excluded; a
    link's text may run over several lines)."""
    text = path.read_text(encoding="utf-8")
    kept = dict(prose_lines(text))
    prose = "\n".join(
        INLINE_CODE.sub(lambda m: " " * len(m.group(0)), kept.get(number, ""))
        for number in range(1, len(text.splitlines()) + 1)
    )
    return [(prose.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(prose)]


def check_links(root: Path, files: list[Path]) -> list[str]:
    """Problems with the relative links of `files`: a target that does not exist (or lies outside `root`),
    an anchor that no heading of the target Markdown file has. Web and other scheme links are left to
    `web_links`."""
    problems = []
    root = root.resolve()
    for path in files:
        for number, target in links(path):
            where = f"{path.relative_to(root)}:{number}: {target}"
            if not target or SCHEME.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path.resolve()
            if root not in dest.parents and dest != root:
                problems.append(f"{where}: points outside the repository")
                continue
            if not dest.exists():
                problems.append(f"{where}: no such file")
                continue
            if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(root)}")
    return problems


def reachable(root: Path, start: Path) -> set[Path]:
    """The Markdown files of `root` reachable from `start` by following relative links."""
    root = root.resolve()
    seen, queue = {start.resolve()}, deque([start.resolve()])
    while queue:
        path = queue.popleft()
        for _, target in links(path):
            file_part = target.partition("#")[0]
            if not file_part or SCHEME.match(target):
                continue
            dest = (path.parent / file_part).resolve()
            if dest.suffix == ".md" and dest.is_file() and root in dest.parents and dest not in seen:
                seen.add(dest)
                queue.append(dest)
    return seen


def web_links(files: list[Path]) -> list[str]:
    """Every http(s) address anywhere in `files` (links, bare addresses, code)."""
    return [
        f"{path.name}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if WEB.search(line)
    ]


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# --------------------------------------------------------------------------- the repository's documentation


def test_readme_is_at_most_15_kb():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail into docs/ (limit {README_LIMIT})"


def test_every_relative_link_resolves():
    assert check_links(ROOT, doc_files()) == []


def test_every_docs_page_is_reachable_from_the_readme():
    seen = reachable(ROOT, ROOT / "README.md")
    missing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in seen]
    assert missing == [], f"not reachable from README.md: {missing}"


def test_no_web_links():
    assert web_links(doc_files()) == []


def test_readme_shows_the_two_set_up_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    fenced = "\n".join(
        block for i, block in enumerate(re.split(r"^```.*$", text, flags=re.MULTILINE)) if i % 2 == 1
    )
    for command in ("make run", "make test"):
        assert re.search(rf"^{command}\b", fenced, re.MULTILINE), f"README.md shows no `{command}` command line"


# --------------------------------------------------------------------------- the checker itself


def test_checker_reports_broken_links_anchors_and_unreachable_pages(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "# Front\n\n[a](docs/a.md) and [top](#front)\n\n```\n[not a link](docs/inside_code.md)\n```\n",
        encoding="utf-8",
    )
    (tmp_path / "docs" / "a.md").write_text(
        "# Page A\n\n## Same\n\n## Same\n\n"
        "[gone](missing.md), [b](b.md#no-such-heading), [two\nlines](also_missing.md), [b ok](b.md#the-b-page), [self](#same-1), "
        "[up](../README.md#front), `[code](nowhere.md)`, [outside](../../elsewhere.md)\n",
        encoding="utf-8",
    )
    (tmp_path / "docs" / "b.md").write_text("# The B page\n", encoding="utf-8")
    (tmp_path / "docs" / "orphan.md").write_text("# Orphan\n\nhttps://example.org\n", encoding="utf-8")

    problems = check_links(tmp_path, doc_files(tmp_path))
    assert len(problems) == 4, problems
    assert any("docs/a.md:7: missing.md: no such file" in p for p in problems)
    assert any("docs/a.md:7: also_missing.md: no such file" in p for p in problems)
    assert any("b.md#no-such-heading: no heading with anchor #no-such-heading" in p for p in problems)
    assert any("../../elsewhere.md: points outside the repository" in p for p in problems)

    seen = reachable(tmp_path, tmp_path / "README.md")
    assert (tmp_path / "docs" / "b.md").resolve() in seen
    assert (tmp_path / "docs" / "orphan.md").resolve() not in seen
    assert web_links(doc_files(tmp_path)) == ["orphan.md:3: https://example.org"]


def test_slugs_follow_githubs_rule():
    assert slug("Job status: `sacct` or `squeue`") == "job-status-sacct-or-squeue"
    assert slug("2. Write your site's profile") == "2-write-your-sites-profile"
    assert slug("Configuration (`sparse:`)") == "configuration-sparse"
    assert slug("Speed and agreement with the original's one-pair loop") == "speed-and-agreement-with-the-originals-one-pair-loop"
    assert slug("See [the page](x.md)") == "see-the-page"
