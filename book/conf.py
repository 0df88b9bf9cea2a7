"""Sphinx configuration of the course book (`make book`).

The source folder is the repository itself, so every link the course writes for GitHub
(``notebooks/05_training.ipynb#a-heading`` in the README, ``../notebooks/...`` in the glossary and
FAQ) also resolves in the book. Only these are read: the README (the landing page: the course
map and its reading times), every chapter ``notebooks/NN_*.ipynb`` and the glossary and FAQ
in ``docs/``. The notebooks are shown with their committed outputs, never re-executed.

Everything the pages load is served from the book's own folder: MathJax comes from a pinned
PyPI package (``django-static-mathjax``, MathJax 3.2.2) and is copied into ``_static/mathjax``;
the theme's fonts and scripts ship with the theme. ``make test-book`` checks it in Chromium.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from docutils import nodes

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = re.compile(r"notebooks/(\d\d_\w+)")

project = "How LLMs generate text"
author = "the llmcourse authors"
copyright = "the llmcourse authors; code MIT"

extensions = ["myst_nb", "sphinx.ext.mathjax"]

# The landing page is the README; the chapters, glossary and FAQ hang under it (see
# add_table_of_contents below: the README itself stays plain Markdown for GitHub).
root_doc = "README"
include_patterns = ["README.md", "notebooks/[0-9][0-9]_*.ipynb", "docs/glossary.md",
                    "docs/faq.md", "data/README.md"]
# Prune everything else (.venv, data/cache, _build, ...): Sphinx walks only what is not
# excluded, and the build stays fast. Links to other files of the repository (the FAQ's
# ../data/results/*.json, ../Makefile) still work: the book carries a copy of each.
READ = {"README.md": None, "notebooks": None, "docs": None, "data": {"README.md"}}
exclude_patterns = sorted([p.name for p in ROOT.iterdir() if p.name not in READ]
                          + [f"data/{p.name}" for p in (ROOT / "data").iterdir()
                             if p.name not in READ["data"]])
exclude_patterns += ["**/.ipynb_checkpoints"]

# Notebooks: committed outputs as they are (nbval-ignore-output cells included).
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # no widget manager from a CDN (the chapters have no widgets)
nb_merge_streams = True

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True  # $$...$$ inside a paragraph, as Jupyter renders it
myst_update_mathjax = False  # the configuration below is the one we want
myst_heading_anchors = 6  # "#step-6--update-adamw" links from the glossary and the FAQ

# MathJax from the pinned package, copied into _static/mathjax (copy_mathjax below). It only
# typesets what Sphinx marked as math, never a stray "$" in a code cell's output.
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {
    "options": {
        "ignoreHtmlClass": "tex2jax_ignore|mathjax_ignore|document",
        "processHtmlClass": "tex2jax_process|mathjax_process|math",
    },
}

html_theme = "sphinx_book_theme"
html_title = "How LLMs generate text"
html_static_path = ["_static"]
html_extra_path = ["_extra"]  # index.html: the site's front door leads to the README
html_css_files = ["book.css"]
html_favicon = "_static/favicon.svg"  # else every browser asks for /favicon.ico and gets a 404
html_context = {"default_mode": "auto"}  # light or dark as the reader's system says
html_last_updated_fmt = None
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "navigation_with_keys": True,
}
html_show_sphinx = False
html_copy_source = True  # the theme's download button offers each chapter's .ipynb

TOCTREES = """

```{toctree}
:hidden:
:glob:
:caption: Chapters

notebooks/[0-9][0-9]_*
```

```{toctree}
:hidden:
:caption: Reference

docs/glossary
docs/faq
Data and checkpoints <data/README>
```
"""


def add_table_of_contents(app, docname: str, source: list[str]) -> None:
    """Append the book's (hidden) tables of contents to the README as Sphinx reads it."""
    if docname == root_doc:
        source[0] += TOCTREES


def add_run_note(app, doctree: nodes.document, docname: str) -> None:
    """Under each chapter's title: how to run it (`make lab`) and its workshop copy."""
    m = CHAPTER.fullmatch(docname)
    section = next(iter(doctree.findall(nodes.section)), None)
    if m is None or section is None:
        return
    name = m.group(1)
    para = nodes.paragraph()
    para += [
        nodes.Text("This page shows the notebook "),
        nodes.literal(text=f"notebooks/{name}.ipynb"),
        nodes.Text(" with its committed outputs. To run it yourself, "),
        nodes.literal(text="make lab"),
        nodes.Text(" sets the course up (the first time) and opens it in JupyterLab. For a "
                   "workshop, "),
        nodes.literal(text="make exercises"),
        nodes.Text(" writes learner copies with the solutions removed and the outputs cleared; "
                   "this chapter's is "),
        nodes.reference("", f"exercises/{name}.ipynb", refuri=f"../exercises/{name}.ipynb"),
        nodes.Text("."),
    ]
    note = nodes.admonition("", nodes.title(text="Run this chapter"), para,
                            classes=["tip", "run-this-chapter"])
    section.insert(1, note)


def copy_assets(app, exception: Exception | None) -> None:
    """MathJax into _static/mathjax; the workshop copies into exercises/ (as `make
    exercises` writes them)."""
    if exception is not None or app.builder.format != "html":
        return
    import mathjax  # django-static-mathjax: MathJax's own distribution, no Django needed

    from llmcourse.course.exercises import write_exercises

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    out = Path(app.outdir) / "_static" / "mathjax"
    # tex-chtml.js and what it loads on demand (TeX extensions, fonts, accessibility, speech).
    for sub in ("input", "output/chtml", "a11y", "sre", "ui", "adaptors"):
        shutil.copytree(es5 / sub, out / sub, dirs_exist_ok=True)
    shutil.copy2(es5 / "tex-chtml.js", out / "tex-chtml.js")
    write_exercises(ROOT / "notebooks", Path(app.outdir) / "exercises")


def setup(app):
    # MathJax on every page, not only those with math in their body: a chapter title with a
    # formula also sits in the navigation of the pages without one (search, index).
    app.set_html_assets_policy("always")
    app.connect("source-read", add_table_of_contents)
    app.connect("doctree-resolved", add_run_note)
    app.connect("build-finished", copy_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
