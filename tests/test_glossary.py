"""The bilingual glossary (docs/glossary.md) and the FAQ (docs/faq.md).

- Every term that issue 12 lists is in the glossary (the list below is the spec, copied from the
  issue), with the issue's Chinese term, a one-line definition in each language and a link to
  the chapter section that teaches it.
- Every relative link of both files points to a file of the repository and, when it names an
  anchor, to a heading of that file: for a notebook, a heading of one of its markdown cells.
- Every number of the FAQ is printed by a notebook the same paragraph (list item, table row)
  links to, or stored in a result file it links to, or is one of a few named exceptions.

Anchors are computed the way MyST (the book's Markdown parser) computes them with
``myst_heading_anchors``, which mimics GitHub's rule: the heading's text and code spans (math is
left out), lowercased, spaces turned into hyphens, then every character dropped that is not a
word character, a CJK ideograph or a hyphen. When the book's configuration exists, the tests
read its anchor depth from it; when ``myst_parser`` is installed, they compare our slugs with
its own on every notebook heading.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GLOSSARY = DOCS / "glossary.md"
FAQ = DOCS / "faq.md"
NOTEBOOKS = ROOT / "notebooks"

# Issue 12, "Glossary (English / 中文)": "At least these". English term -> the Chinese term the
# issue gives (None where it gives the English word only; the glossary adds a Chinese gloss).
ISSUE_TERMS: dict[str, str | None] = {
    "natural language generation": "自然语言生成",
    "large language model": "大语言模型",
    "Transformer": "Transformer 架构",
    "self-attention": "自注意力机制",
    "query/key/value": "查询/键/值",
    "scaled dot-product attention": "缩放点积注意力",
    "multi-head attention": "多头注意力",
    "causal mask": "因果掩码",
    "positional encoding": "位置编码",
    "rotary position embedding": "旋转位置编码",
    "feed-forward network": "前馈神经网络",
    "residual connection": "残差连接",
    "layer normalization": "层归一化",
    "RMSNorm": None,
    "encoder": "编码器",
    "decoder": "解码器",
    "cross-attention": "交叉注意力",
    "tokenization": "分词",
    "byte-pair encoding": "字节对编码",
    "vocabulary": "词表",
    "embedding": "嵌入",
    "logits": None,
    "softmax": None,
    "temperature": "温度",
    "preprocessing": "预处理",
    "initialization": "初始化",
    "forward pass": "前向传播",
    "loss function": "损失函数",
    "cross-entropy": "交叉熵",
    "backpropagation": "反向传播",
    "parameter update": "参数更新",
    "learning rate": "学习率",
    "warm-up": "预热",
    "gradient clipping": "梯度裁剪",
    "overfitting": "过拟合",
    "perplexity": "困惑度",
    "greedy decoding": "贪心解码",
    "beam search": "束搜索",
    "top-k sampling": None,
    "nucleus (top-p) sampling": "核采样",
    "repetition penalty": "重复惩罚",
    "KV cache": "键值缓存",
    "machine translation": "机器翻译",
    "text summarization": "文本摘要",
    "model size": "模型大小",
    "compute": "计算资源",
    "quantization": "量化",
    "knowledge distillation": "知识蒸馏",
    "mixed precision": "混合精度",
    "data parallelism": "数据并行",
    "grouped-query attention": "分组查询注意力",
}

TABLE_HEADER = ["English", "中文", "Definition", "定义", "Taught in"]
CJK = re.compile(r"[\u3400-\u9fff]")
MARKDOWN = MarkdownIt("commonmark").enable("table")

# Where the book's configuration may live, and MyST's default anchor depth when it is unset.
BOOK_CONFIGS = ["book/conf.py", "docs/conf.py", "conf.py", "book/_config.yml", "_config.yml"]
ALL_LEVELS = 6


# ------------------------------------------------------------------------------ slugs
_MATH = re.compile(r"\$\$.+?\$\$|\$[^$]+?\$")
_NOT_IN_SLUG = re.compile(r"[^\w\u4e00-\u9fff\- ]")


def slug(title: str) -> str:
    """MyST's (and, near enough, GitHub's) anchor of a heading's text.

    >>> slug("1 · Why two halves?")
    '1--why-two-halves'
    """
    return _NOT_IN_SLUG.sub("", title.lower().replace(" ", "-"))


def heading_title(inline: Token) -> str:
    """The text an anchor is made from: text and code spans, inline math left out."""
    parts: list[str] = []
    text = ""
    for child in inline.children or []:
        if child.type == "text":
            text += child.content
        elif child.type == "code_inline":
            parts.append(_MATH.sub("", text) + child.content)
            text = ""
    return "".join(parts) + _MATH.sub("", text)


def headings(markdown: str) -> list[tuple[int, str]]:
    """(level, title) of every heading of a Markdown text, in order."""
    tokens = MARKDOWN.parse(markdown)
    return [(int(tok.tag[1]), heading_title(tokens[i + 1]))
            for i, tok in enumerate(tokens) if tok.type == "heading_open"]


def unique_slugs(titled: list[tuple[int, str]], max_level: int) -> list[str]:
    """Slugs of the headings up to max_level, a repeat getting -1, -2, ... as MyST does."""
    seen: list[str] = []
    for level, title in titled:
        if level > max_level:
            continue
        base = candidate = slug(title)
        i = 1
        while candidate in seen:
            candidate = f"{base}-{i}"
            i += 1
        seen.append(candidate)
    return seen


def notebook_markdown(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def anchors(path: Path, max_level: int) -> list[str]:
    """The anchors a reader can link to in a notebook or a Markdown file."""
    if path.suffix == ".ipynb":
        titled = [h for cell in notebook_markdown(path) for h in headings(cell)]
    else:
        titled = headings(path.read_text(encoding="utf-8"))
    return unique_slugs(titled, max_level)


def test_slug_follows_the_rules_the_book_uses():
    cases = {
        "## 1 · Why two halves?": "1--why-two-halves",
        "### 3.1 `Conv1D`: the same function, with the matrix stored transposed":
            "31-conv1d-the-same-function-with-the-matrix-stored-transposed",
        "### GPT-2's `bytes_to_unicode` trick": "gpt-2s-bytes_to_unicode-trick",
        "## 4. Why divide by $\\sqrt{d_k}$?": "4-why-divide-by-",
        "## 6. FLOPs per token: ≈ 2N to run, ≈ 6N to train":
            "6-flops-per-token--2n-to-run--6n-to-train",
        "### 中文：为什么要除以 √d_k？": "中文为什么要除以-d_k",
        "## `cache/`: fetched assets (git-ignored)": "cache-fetched-assets-git-ignored",
    }
    for markdown, expected in cases.items():
        [(_, title)] = headings(markdown)
        assert slug(title) == expected, (markdown, slug(title))
    assert unique_slugs([(2, "Summary"), (2, "Summary"), (2, "Summary")], 6) == \
        ["summary", "summary-1", "summary-2"]
    assert unique_slugs([(2, "A"), (3, "B")], 2) == ["a"]


# ------------------------------------------------------------------------ book config
@cache
def book_config() -> tuple[Path, str] | None:
    for name in BOOK_CONFIGS:
        path = ROOT / name
        if path.is_file() and "myst" in (text := path.read_text(encoding="utf-8")):
            return path, text
    return None


def anchor_depth() -> int:
    """How deep the book makes heading anchors (all levels when there is no book yet)."""
    found = book_config()
    if found is None:
        return ALL_LEVELS
    match = re.search(r"myst_heading_anchors\W{0,4}(\d+)", found[1])
    return int(match.group(1)) if match else 0


def test_the_book_makes_the_anchors_these_pages_link_to():
    found = book_config()
    if found is None:
        pytest.skip("no book configuration yet (" + ", ".join(BOOK_CONFIGS) + ")")
    path, text = found
    rel = path.relative_to(ROOT)
    custom = re.search(r"myst_heading_slug_func\W{0,4}(\S+)", text)
    assert custom is None or custom.group(1).strip("\"',") == "github", \
        f"{rel} sets its own slug function: make slug() in this test compute the same anchors"
    deepest = max(level for doc in (GLOSSARY, FAQ) for level in linked_heading_levels(doc))
    assert anchor_depth() >= deepest, \
        (f"{rel} makes anchors down to level {anchor_depth()} (myst_heading_anchors), but "
         f"the glossary and FAQ link to headings of level {deepest}")


# ------------------------------------------------------------------------------ links
def links(path: Path) -> list[str]:
    """Every link target of a Markdown file, tables included."""
    out = []
    for tok in MARKDOWN.parse(path.read_text(encoding="utf-8")):
        for child in tok.children or []:
            if child.type == "link_open":
                out.append(str(child.attrs["href"]))
    return out


def is_external(href: str) -> bool:
    return bool(urlsplit(href).scheme)


def resolve(doc: Path, href: str) -> tuple[Path, str]:
    parts = urlsplit(href)
    target = doc if not parts.path else (doc.parent / unquote(parts.path)).resolve()
    return target, unquote(parts.fragment)


def linked_heading_levels(doc: Path) -> list[int]:
    levels = []
    for href in links(doc):
        if is_external(href):
            continue
        target, fragment = resolve(doc, href)
        if fragment and target.suffix in (".ipynb", ".md") and target.is_file():
            if target.suffix == ".ipynb":
                titled = [h for cell in notebook_markdown(target) for h in headings(cell)]
            else:
                titled = headings(target.read_text(encoding="utf-8"))
            levels += [level for level, title in titled if slug(title) == fragment]
    return levels or [1]


@pytest.mark.parametrize("doc", [GLOSSARY, FAQ], ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    depth = anchor_depth()
    hrefs = [h for h in links(doc) if not is_external(h)]
    assert hrefs, f"{doc.name} has no links"
    broken = []
    for href in hrefs:
        target, fragment = resolve(doc, href)
        if href.startswith("/") or not target.is_relative_to(ROOT):
            broken.append(f"{href}: not a path inside the repository")
        elif not target.is_file():
            broken.append(f"{href}: no such file")
        elif fragment:
            if target.suffix not in (".ipynb", ".md"):
                broken.append(f"{href}: an anchor on a file that has no headings")
            elif fragment not in anchors(target, depth):
                known = ", ".join(anchors(target, depth))
                broken.append(f"{href}: no heading with that anchor in {target.name} ({known})")
    assert not broken, f"{doc.name}, {len(broken)} broken link(s):\n" + "\n".join(broken)


def test_link_checker_can_fail(tmp_path):
    doc = tmp_path / "docs" / "x.md"
    doc.parent.mkdir()
    doc.write_text("# Top\n[a](../notebooks/01_attention.ipynb#no-such-section)\n"
                   "[b](../notebooks/01_attention.ipynb#51-the-causal-mask)\n[c](#top)\n",
                   encoding="utf-8")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_attention.ipynb").write_text(
        (NOTEBOOKS / "01_attention.ipynb").read_text(encoding="utf-8"), encoding="utf-8")
    found = {href: resolve(doc, href) for href in links(doc)}
    ok = {href: frag in anchors(target, ALL_LEVELS) for href, (target, frag) in found.items()}
    assert ok == {"../notebooks/01_attention.ipynb#no-such-section": False,
                  "../notebooks/01_attention.ipynb#51-the-causal-mask": True, "#top": True}


def test_our_slugs_are_myst_parsers_own():
    """The oracle: MyST's parser (with dollarmath, as the book renders math) and its slug
    function, on every heading of every notebook and of the two pages."""
    pytest.importorskip("myst_parser")
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser
    try:  # myst-parser >= 5.2; before, the same function lived in the renderer's module
        from myst_parser.slugs import github_slugify as default_slugify
    except ImportError:
        from myst_parser.mdit_to_docutils.base import default_slugify

    parser = create_md_parser(MdParserConfig(enable_extensions={"dollarmath"}), RendererHTML)
    texts = [cell for nb in sorted(NOTEBOOKS.glob("*.ipynb")) for cell in notebook_markdown(nb)]
    texts += [GLOSSARY.read_text(encoding="utf-8"), FAQ.read_text(encoding="utf-8")]
    compared = 0
    for text in texts:
        tokens = parser.parse(text)
        theirs = [default_slugify("".join(c.content for c in tokens[i + 1].children or []
                                          if c.type in ("text", "code_inline")))
                  for i, tok in enumerate(tokens) if tok.type == "heading_open"]
        ours = [slug(title) for _, title in headings(text)]
        assert ours == theirs
        compared += len(ours)
    assert compared > 100


# --------------------------------------------------------------------------- glossary
def table_rows(path: Path) -> list[tuple[str, list[Token]]]:
    """(the letter heading above it, the cells' inline tokens) of every glossary table row."""
    rows: list[tuple[str, list[Token]]] = []
    tokens = MARKDOWN.parse(path.read_text(encoding="utf-8"))
    section, row, header = "", None, None
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            section = tokens[i + 1].content
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "inline" and row is not None:
            row.append(tok)
        elif tok.type == "tr_close":
            cells = [c.content.strip() for c in row]
            if cells == TABLE_HEADER:
                header = section
            else:
                assert header == section, f"a table under '{section}' without the header row"
                rows.append((section, row))
            row = None
    return rows


def plain(inline: Token) -> str:
    return "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))


@cache
def glossary() -> list[dict]:
    entries = []
    for section, cells in table_rows(GLOSSARY):
        assert len(cells) == len(TABLE_HEADER), f"row {[c.content for c in cells]}: 5 cells"
        term, chinese, definition, definition_zh, taught = cells
        entries.append({"section": section, "term": term.content.strip(),
                        "chinese": chinese.content.strip(), "definition": plain(definition),
                        "definition_zh": plain(definition_zh),
                        "links": [str(c.attrs["href"]) for c in taught.children or []
                                  if c.type == "link_open"]})
    return entries


def test_every_term_of_the_issue_is_in_the_glossary():
    by_term: dict[str, list[dict]] = {}
    for entry in glossary():
        by_term.setdefault(entry["term"], []).append(entry)
    missing = [term for term in ISSUE_TERMS if term not in by_term]
    assert not missing, f"terms of issue 12 missing from the glossary: {missing}"
    doubled = [term for term, found in by_term.items() if len(found) > 1]
    assert not doubled, f"terms with more than one entry: {doubled}"
    wrong = {term: by_term[term][0]["chinese"] for term, zh in ISSUE_TERMS.items()
             if zh is not None and zh not in by_term[term][0]["chinese"]}
    assert not wrong, f"not the issue's Chinese term: {wrong}"
    assert len(glossary()) > len(ISSUE_TERMS), "also the other terms the chapters teach"


def test_every_entry_is_bilingual_one_line_each_and_linked():
    bad = []
    for e in glossary():
        name = e["term"]
        if not name or CJK.search(name):
            bad.append(f"{name!r}: the English term")
        if not CJK.search(e["chinese"]):
            bad.append(f"{name}: the Chinese term {e['chinese']!r} has no Chinese")
        if CJK.search(e["definition"]) or not e["definition"].endswith(".") \
                or not 20 <= len(e["definition"]) <= 200:
            bad.append(f"{name}: the English definition is not one English sentence or two")
        if len(CJK.findall(e["definition_zh"])) < 8 or not e["definition_zh"].endswith("。") \
                or len(e["definition_zh"]) > 110:
            bad.append(f"{name}: the Chinese definition is not one line of Chinese")
        chapters = [h for h in e["links"] if re.match(r"\.\./notebooks/\d\d_\w+\.ipynb#.", h)]
        if not chapters or len(chapters) != len(e["links"]):
            bad.append(f"{name}: links {e['links']}, want links to chapter sections")
    assert not bad, "\n".join(bad)


def test_glossary_is_alphabetical_under_its_letters():
    terms = [e["term"] for e in glossary()]
    out_of_order = [(a, b) for a, b in zip(terms, terms[1:], strict=False)
                    if a.lower() > b.lower()]
    assert not out_of_order, f"not in alphabetical order: {out_of_order}"
    misplaced = [e["term"] for e in glossary() if e["section"] != e["term"][0].upper()]
    assert not misplaced, f"under the wrong letter heading: {misplaced}"


# -------------------------------------------------------------------------------- FAQ
NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?:e[+-]\d+)?(?![\w])")
# Numbers the FAQ quotes from the text rather than from an output, each with its source.
QUOTED = {
    "3.11": "README: the committed outputs were made with Python 3.11",
    "45": "chapter 01's own reading estimate for its sections 1-5",
    "2.0": "chapter 05's asserted bound, stated in its text",
    "95": "chapter 06's asserted bound, stated in its text",
}


def no_thousands(text: str) -> str:
    return re.sub(r"(?<=\d),(?=\d{3})", "", text)


def blocks(path: Path) -> list[tuple[str, list[str]]]:
    """(prose, link targets) per paragraph, list item and table row: numbers inside code spans
    and link texts left out."""
    out: list[tuple[str, list[str]]] = []
    group: list[Token] | None = None
    depth = 0
    for tok in MARKDOWN.parse(path.read_text(encoding="utf-8")):
        if tok.type in ("list_item_open", "tr_open"):
            depth += 1
            if depth == 1:
                group = []
        elif tok.type in ("list_item_close", "tr_close"):
            depth -= 1
            if depth == 0 and group is not None:
                out.append(_prose(group))
                group = None
        elif tok.type == "inline":
            if group is None:
                out.append(_prose([tok]))
            else:
                group.append(tok)
    return out


def _prose(inlines: list[Token]) -> tuple[str, list[str]]:
    text, hrefs, in_link = [], [], False
    for inline in inlines:
        for child in inline.children or []:
            if child.type == "link_open":
                in_link = True
                hrefs.append(str(child.attrs["href"]))
            elif child.type == "link_close":
                in_link = False
            elif child.type == "text" and not in_link:
                text.append(child.content)
        text.append("\n")
    return "".join(text), hrefs


@cache
def printed(path: Path) -> str:
    """What a notebook printed (every text output), or a result file's numbers, as text."""
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        out = []
        for cell in nb["cells"]:
            for o in cell.get("outputs", []):
                if o.get("output_type") == "stream":
                    out.append("".join(o["text"]))
                elif "text/plain" in o.get("data", {}):
                    out.append("".join(o["data"]["text/plain"]))
        return no_thousands("\n".join(out))
    if path.suffix == ".json":
        values: list[str] = []

        def walk(v):
            if isinstance(v, bool):
                return
            if isinstance(v, int):
                values.append(str(v))
            elif isinstance(v, float):
                values.extend(f"{v:.{k}f}" for k in range(7))
            elif isinstance(v, dict):
                for x in v.values():
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)

        walk(json.loads(path.read_text(encoding="utf-8")))
        return "\n".join(values)
    return ""


def unsourced_numbers(prose: str, sources: str) -> list[str]:
    missing = []
    for number in NUMBER.findall(no_thousands(prose)):
        if number in QUOTED or (number.isdigit() and int(number) <= 12):
            continue  # a section, chapter or small count; or a quoted bound
        if not re.search(rf"(?<![\d.]){re.escape(number)}(?!\d)", sources):
            missing.append(number)
    return missing


def test_every_faq_number_is_printed_where_its_paragraph_links():
    bad = []
    for prose, hrefs in blocks(FAQ):
        sources = "\n".join(printed(resolve(FAQ, h)[0]) for h in hrefs
                            if not is_external(h) and resolve(FAQ, h)[0].is_file())
        missing = unsourced_numbers(prose, sources)
        if missing:
            bad.append(f"{missing} in: {' '.join(prose.split())[:100]}")
    assert not bad, "numbers not printed by what their paragraph links to:\n" + "\n".join(bad)


def test_number_check_can_fail():
    ch05 = printed(NOTEBOOKS / "05_training.ipynb")
    assert unsourced_numbers("loss 4.4684 against ln V = 4.4308, 8,500 pairs", ch05) == ["8500"]
    assert unsourced_numbers("1.37 nats", ch05) == ["1.37"]  # 1.371 is printed, not 1.37
    assert unsourced_numbers("a window of 64 characters, perplexity 87.2", ch05) == []


def test_faq_cites_the_committed_result_files():
    cited = {resolve(FAQ, h)[0] for h in links(FAQ) if not is_external(h)}
    results = {p for p in cited if p.parent == ROOT / "data" / "results"}
    assert results and all(p.is_file() for p in results)
    assert ROOT / "data" / "checkpoints" / "shakespeare-gpt" / "results.json" in cited


def test_faq_answers_each_question_in_both_languages():
    titled = headings(FAQ.read_text(encoding="utf-8"))
    questions = [t for level, t in titled if level == 2]
    chinese = [t for level, t in titled if level == 3]
    assert len(questions) >= 10, questions
    assert len(chinese) == len(questions)
    assert all(t.startswith("中文") and CJK.search(t) for t in chinese)
    for needle in ("learn language", "generation tasks", "main challenges", "addressed",
                   "√d_k", "greedy decoding repeat", "numbers differ", "GPU", "offline",
                   "workshop"):
        assert any(needle in q for q in questions), f"no question about {needle!r}"
