"""HTML articles: the main text only, with h1-h6 as the heading path.

Saved web pages carry menus, scripts, cookie banners and footers around the article; indexing
those would make every page of a site look alike. The noise elements are removed, the
``<article>`` (or ``<main>``) is preferred when present, and the remaining blocks are read
in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from bs4 import BeautifulSoup
from bs4.element import NavigableString, PreformattedString, Tag

from memory_pipeline.errors import ParseError
from memory_pipeline.ingest.limits import current_limits
from memory_pipeline.ingest.text_repair import repair_many
from memory_pipeline.records import Document, Kind
from memory_pipeline.sources._article import build_document, collapse_spaces, group_sections, readable_stem

_NOISE = (
    "script",
    "style",
    "noscript",
    "nav",
    "footer",
    "aside",
    "form",
    "iframe",
    "svg",
    "template",
    "button",
    "canvas",
    "object",
    "embed",
    "dialog",
    "select",
    "textarea",
    "link",
    "meta",
)
_NOISE_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "dialog"}
_WHITESPACE = re.compile(r"\s+")
_HEADINGS = {f"h{level}" for level in range(1, 7)}
_BLOCKS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "body",
    "ul",
    "ol",
    "blockquote",
    "table",
    "thead",
    "tbody",
    "dl",
    "dt",
    "dd",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "hr",
    "center",
    "header",
}


def parse_html(path: Path) -> Iterator[Document]:
    """One article per HTML file."""
    data = path.read_bytes()
    check_nesting(path, data, current_limits().max_nesting_depth)
    soup = BeautifulSoup(data, "lxml")
    if soup.find() is None:
        raise ParseError(path, "no HTML content")
    page_title = collapse_spaces(soup.title.get_text(" ")) if soup.title else ""
    root = main_content(soup)
    blocks = html_blocks(root)
    if not blocks:
        raise ParseError(path, "no text in the page's main content")

    h1 = root.find("h1") or soup.find("h1")
    h1_text = collapse_spaces(h1.get_text(" ")) if h1 else ""
    title = h1_text if h1_text and (not page_title or h1_text in page_title) else page_title
    headings = sorted({heading for heading_path, _ in blocks for heading in heading_path})
    texts = [title or readable_stem(path), *headings, *(text for _, text in blocks)]
    fixed, repair = repair_many(texts)
    title, fixed_headings = fixed[0], dict(zip(headings, fixed[1 : 1 + len(headings)], strict=True))
    sections = group_sections(
        (tuple(fixed_headings[h] for h in heading_path), text)
        for (heading_path, _), text in zip(blocks, fixed[1 + len(headings) :], strict=True)
    )
    yield build_document(
        path,
        fmt="html",
        kind=Kind.ARTICLE,
        title=title,
        repair=repair.model_copy(update={"source_encoding": soup.original_encoding or "utf-8"}),
        sections=sections,
    )


class _DepthProbe:
    """An lxml parser target that only counts open elements, and stops the parse past the limit."""

    def __init__(self, path: Path, limit: int):
        self.path, self.limit, self.depth = path, limit, 0

    def start(self, tag: str, attrib: dict) -> None:
        self.depth += 1
        if self.depth > self.limit:
            raise ParseError(self.path, f"HTML nested deeper than {self.limit} elements (limits.max_nesting_depth)")

    def end(self, tag: str) -> None:
        self.depth -= 1

    def close(self) -> None:
        return None


def check_nesting(path: Path, data: bytes, limit: int) -> None:
    """Refuse HTML nested past the limit before building a tree: the tree walk costs time with the
    square of the depth, and recursion with the depth. One streaming pass of lxml, no tree kept."""
    from lxml import etree

    parser = etree.HTMLParser(target=_DepthProbe(path, limit))
    parser.feed(data)
    parser.close()


def main_content(soup: BeautifulSoup) -> Tag:
    """Remove noise elements, then pick the longest ``<article>``, else ``<main>``, else the body.

    A ``<header>`` inside an article is kept: it usually holds the article's own title.
    """
    for tag in soup.find_all(_NOISE):
        tag.decompose()
    for tag in soup.find_all(True):
        if tag.decomposed:
            continue
        hidden = tag.has_attr("hidden") or tag.get("aria-hidden") == "true"
        hidden = hidden or "display:none" in str(tag.get("style", "")).replace(" ", "")
        if hidden or tag.get("role") in _NOISE_ROLES or (tag.name == "header" and tag.find_parent("article") is None):
            tag.decompose()
    articles = soup.find_all("article")
    if articles:
        return max(articles, key=lambda tag: len(tag.get_text(" ", strip=True)))
    return soup.find("main") or soup.find(attrs={"role": "main"}) or soup.body or soup


def html_blocks(root: Tag) -> list[tuple[tuple[str, ...], str]]:
    """Text blocks in reading order with their heading path; list items and table rows stay together."""
    blocks: list[tuple[tuple[str, ...], str]] = []
    headings: list[tuple[int, str]] = []
    buffer: list[str] = []
    last_was_item = False
    item_depth = 0

    def flush(*, item: bool | None = None) -> None:
        nonlocal last_was_item
        item = item_depth > 0 if item is None else item
        lines = [collapse_spaces(line) for line in "".join(buffer).split("\n")]
        text = "\n".join(line for line in lines if line)
        buffer.clear()
        if not text or text == "-":
            return
        path = tuple(h for _, h in headings)
        if item and last_was_item and blocks and blocks[-1][0] == path:
            blocks[-1] = (path, f"{blocks[-1][1]}\n{text}")
        else:
            blocks.append((path, text))
        last_was_item = item

    def walk(node: Tag) -> None:
        nonlocal last_was_item, item_depth
        for child in node.children:
            if isinstance(child, NavigableString):
                if not isinstance(child, PreformattedString):
                    buffer.append(_WHITESPACE.sub(" ", str(child)))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name in _HEADINGS:
                flush()
                heading = collapse_spaces(child.get_text(" "))
                if heading:
                    level = int(name[1])
                    headings[:] = [h for h in headings if h[0] < level] + [(level, heading)]
                    last_was_item = False
            elif name == "br":
                buffer.append("\n")
            elif name == "pre":
                flush()
                code = child.get_text().strip("\n")
                if code.strip():
                    blocks.append((tuple(h for _, h in headings), code))
                    last_was_item = False
            elif name == "li":
                flush()
                buffer.append("- ")
                item_depth += 1
                walk(child)
                flush()
                item_depth -= 1
            elif name == "tr":
                flush()
                cells = [collapse_spaces(cell.get_text(" ")) for cell in child.find_all(["td", "th"], recursive=False)]
                buffer.append(" | ".join(cell for cell in cells if cell))
                flush(item=True)
            elif name in _BLOCKS:
                flush()
                walk(child)
                flush()
            else:
                walk(child)

    walk(root)
    flush()
    return blocks
