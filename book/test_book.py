"""The built book, checked page by page in a real browser (`make test-book`).

Headless Chromium (Debian's ``chromium`` with its ``chromium-driver``, driven by Selenium) opens
every page of ``_build/book/html`` from a local ``http.server`` on 127.0.0.1 and checks:

- no console errors and no failed request (every response below 400, nothing that failed to
  load), and every request goes to that local server: nothing from a CDN or elsewhere;
- every internal link resolves, and so does its anchor (``page.html#section``);
- every figure has loaded (``naturalWidth > 0``);
- every formula Sphinx marked as math has been typeset by MathJax, and no raw ``$...$``,
  ``$$...$$``, ``\\(...\\)`` or ``\\[...\\]`` is left in the text;
- the landing page (the README) lists every chapter ``notebooks/NN_*.ipynb``; each chapter page
  has its "Run this chapter" note, its table of contents, and previous/next links;
- the search page finds a word of the course; no absolute path of a machine is in the output.

It saves a screenshot of each page's first screen under ``_build/book/screenshots`` and prints
what it counted. Run ``make book`` first (``make test-book`` does).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build" / "book"
HTML = BUILD / "html"
SHOTS = BUILD / "screenshots"
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WINDOW = (1400, 1000)
# Raw TeX delimiters in visible text: "$$...$$", "$x$" (a "$" right after a word character or
# followed by a space does not open math), "\(...\)" and "\[...\]".
RAW_MATH = re.compile(r"\$\$.+?\$\$|(?<![\w$\\])\$[^\s$][^$\n]*?\$(?!\w)|\\\(.+?\\\)|\\\[.+?\\\]",
                      re.S)
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|root|home)/")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A browser leaving a page may drop a download half-way: not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Page:
    """What the browser saw on one page."""

    path: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    images: list[dict] = field(default_factory=list)
    math: dict = field(default_factory=dict)
    raw_math: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def pages_in(site: Path) -> list[str]:
    """Every HTML page of a built site, as a path relative to its folder."""
    skip = ("_static/", "_sources/", "_downloads/", "_images/")
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not p.relative_to(site).as_posix().startswith(skip))


def browser():
    """Headless Chromium through chromedriver; fails with what to install when missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail("the book is tested in Debian's Chromium: `apt-get install chromium "
                    "chromium-driver` (.ci/run installs them when they are missing)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                # Nothing but this machine: a request for any other host fails at once (and the
                # test reports it) instead of waiting for a network.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))


# Runs in the page once it has loaded: waits for MathJax and for every image, then reports.
INSPECT = """
const done = arguments[arguments.length - 1];
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const imgs = Array.from(document.images);
  imgs.forEach(img => { img.loading = "eager"; });
  await Promise.all(imgs.map(img => img.decode().catch(() => null)));
  const article = document.querySelector("article.bd-article") || document.body;
  // The whole page: a formula in a chapter's title is in every page's navigation too.
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll("pre, code, script, style, mjx-container, .math, .highlight,"
                         + " .output, .cell_output").forEach(n => n.remove());
  const math = Array.from(document.querySelectorAll(".math"));
  done({
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
    ids: Array.from(document.querySelectorAll("[id], a[name]")).map(n => n.id || n.name),
    images: imgs.map(img => ({src: img.currentSrc || img.src, complete: img.complete,
                              width: img.naturalWidth})),
    math: {marked: math.length,
           typeset: math.filter(m => m.querySelector("mjx-container")).length,
           errors: document.querySelectorAll("mjx-merror, [data-mjx-error]").length},
    text: clone.innerText,
    articleLinks: Array.from(article.querySelectorAll("a[href]")).map(a => a.href),
    title: document.title,
    runNote: !!article.querySelector(".run-this-chapter"),
    pageToc: document.querySelectorAll(".bd-toc-nav a, #pst-page-toc-nav a").length,
    prev: (document.querySelector("a.left-prev") || {}).href || null,
    next: (document.querySelector("a.right-next") || {}).href || null,
    sidebar: Array.from(document.querySelectorAll(".bd-sidebar-primary a[href]"))
                  .map(a => a.href),
  });
})();
"""


def visit(driver, base: str, path: str, shots: Path) -> Page:
    """Open one page, wait for it to settle, collect what it did and what it shows; save a
    screenshot of its first screen in ``shots``."""
    page = Page(path)
    driver.get(base + path)
    driver.set_script_timeout(60)
    seen = driver.execute_async_script(INSPECT)
    shots.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(shots / (path.removesuffix(".html").replace("/", "__") + ".png")))
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            page.console_errors.append(entry["message"])
    responses = {}
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.requestWillBeSent":
            page.requests.append(params["request"]["url"])
        elif msg["method"] == "Network.responseReceived":
            responses[params["requestId"]] = params["response"]
            if params["response"]["status"] >= 400:
                page.failed_requests.append(f"{params['response']['status']} "
                                            f"{params['response']['url']}")
        elif msg["method"] == "Network.loadingFailed":
            url = responses.get(params["requestId"], {}).get("url", params["requestId"])
            page.failed_requests.append(f"{params.get('errorText')} {url}")
    page.links = seen["links"]
    page.ids = set(seen["ids"])
    page.images = seen["images"]
    page.math = seen["math"]
    page.raw_math = [m.group(0)[:80] for m in RAW_MATH.finditer(seen["text"])]
    page.info = {k: seen[k] for k in ("title", "runNote", "pageToc", "prev", "next",
                                       "articleLinks", "sidebar")}
    return page


class IdParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


@functools.cache
def ids_of(file: Path) -> frozenset[str]:
    parser = IdParser()
    parser.feed(file.read_text(encoding="utf-8"))
    return frozenset(parser.ids)


@contextlib.contextmanager
def served(site: Path):
    """Serve ``site`` on 127.0.0.1 (a free port) while the block runs; yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def crawl(site: Path, shots: Path) -> tuple[str, dict[str, Page], list[str], dict[str, int]]:
    """Visit every page of ``site`` in Chromium: ``(base URL, pages, problems, counts)``."""
    with served(site) as base:
        driver = browser()
        try:
            pages = {path: visit(driver, base, path, shots) for path in pages_in(site)}
        finally:
            driver.quit()
        problems, counts = check(site, base, pages)
    return base, pages, problems, counts


def resolve(site: Path, url: str) -> str | None:
    """What is wrong with an internal link (its page does not load, or lacks its anchor)."""
    target, fragment = urldefrag(url)
    rel = unquote(urlsplit(target).path).lstrip("/")
    file = site / rel
    if file.is_dir():
        file = file / "index.html"
    try:
        with urllib.request.urlopen(target, timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    if status != 200:
        return f"{url}: HTTP {status}"
    if fragment and file.suffix == ".html" and unquote(fragment) not in ids_of(file):
        return f"{url}: no element with id {fragment!r} in {rel}"
    return None


def check(site: Path, base: str, pages: dict[str, Page]) -> tuple[list[str], dict[str, int]]:
    """Every problem the pages showed, and how much was checked."""
    problems: list[str] = []
    counts = dict.fromkeys(["pages", "links", "distinct links", "anchors", "figures",
                            "formulas", "external links"], 0)
    counts["pages"] = len(pages)
    checked: dict[str, str | None] = {}
    for path, page in pages.items():
        problems += [f"{path}: console error: {e}" for e in page.console_errors]
        problems += [f"{path}: failed request: {r}" for r in page.failed_requests]
        problems += [f"{path}: request leaves the book: {u}" for u in page.requests
                     if not u.startswith((base, "data:", "blob:"))]
        for url in page.links:
            if not url.startswith(base):
                counts["external links"] += urlsplit(url).scheme in ("http", "https")
                continue
            counts["links"] += 1
            counts["anchors"] += bool(urldefrag(url)[1])
            if url not in checked:
                checked[url] = resolve(site, url)
            if checked[url]:
                problems.append(f"{path}: broken link {checked[url]}")
        for img in page.images:
            counts["figures"] += 1
            if not (img["complete"] and img["width"] > 0):
                problems.append(f"{path}: figure not loaded: {img['src'][:120]}")
        counts["formulas"] += page.math["typeset"]
        if page.math["typeset"] != page.math["marked"] or page.math["errors"]:
            problems.append(f"{path}: MathJax typeset {page.math['typeset']} of "
                            f"{page.math['marked']} formulas ({page.math['errors']} errors)")
        problems += [f"{path}: raw TeX left in the text: {m!r}" for m in page.raw_math]
    counts["distinct links"] = len(checked)
    return problems, counts


@pytest.fixture(scope="module")
def book():
    """The book visited page by page: ``(base URL, {path: Page}, problems, counts)``."""
    if not (HTML / "README.html").is_file():
        pytest.fail(f"no book in {HTML.relative_to(ROOT)}: run `make book` first")
    shutil.rmtree(SHOTS, ignore_errors=True)
    return crawl(HTML, SHOTS)


def test_book_in_a_real_browser(book):
    _, pages, problems, counts = book
    external = counts.pop("external links")
    print("\nbook: checked " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + f" ({external} links to other sites, not followed); first-screen screenshots in "
          f"{SHOTS.relative_to(ROOT)}/")
    assert counts["pages"] >= len(CHAPTERS) + 3, f"only {sorted(pages)} were built"
    assert not problems, "\n".join(problems)
    assert counts["figures"] and counts["formulas"] and counts["anchors"], "nothing was checked"


def test_the_checks_catch_a_broken_page(tmp_path):
    """The same checks on a page with one of each fault: each must be reported."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "ok.html").write_text("<html><body><p id='here'>fine</p></body></html>")
    (site / "bad.html").write_text(
        "<html><head><link rel='icon' href='data:,'></head><body><article class='bd-article'>"
        "<script>console.error('boom')</script>"
        "<img src='missing.png'><img src='https://cdn.example.org/logo.png'>"
        "<a href='ok.html#here'>good</a><a href='nowhere.html'>gone</a>"
        "<a href='ok.html#not-there'>no anchor</a>"
        "<p>raw $x^2$ and $$y = 1$$ and \\(z\\)</p>"
        "<span class='math'>\\(w\\)</span></article></body></html>")
    _, _, problems, counts = crawl(site, tmp_path / "shots")
    said = "\n".join(problems)
    for fault in ("console error: ", "failed request: 404", "request leaves the book: "
                  "https://cdn.example.org/logo.png", "broken link ", "nowhere.html: HTTP 404",
                  "no element with id 'not-there'", "figure not loaded", "typeset 0 of 1",
                  "raw TeX left in the text: '$x^2$'", "'$$y = 1$$'", "'\\\\(z\\\\)'"):
        assert fault in said, f"not reported: {fault!r}; reported:\n{said}"
    assert "ok.html#here" not in said
    assert counts["links"] == 3 and counts["anchors"] == 2 and counts["figures"] == 2


def test_landing_page_lists_every_chapter(book):
    base, pages, _, _ = book
    landing = pages["README.html"].info
    linked = {urldefrag(u)[0] for u in landing["articleLinks"]}
    missing = [c for c in CHAPTERS if f"{base}notebooks/{c}.html" not in linked]
    assert not missing, f"the landing page (README's chapter table) does not link {missing}"
    in_nav = {urldefrag(u)[0] for u in landing["sidebar"]}
    missing = [c for c in CHAPTERS if f"{base}notebooks/{c}.html" not in in_nav]
    assert not missing, f"the book's navigation lacks {missing}"
    for page in ("docs/glossary.html", "docs/faq.html"):
        assert f"{base}{page}" in in_nav, f"{page} is not in the book's navigation"
    assert pages["index.html"].info["title"] == landing["title"], "index.html does not lead home"


def test_chapter_pages_say_how_to_run_and_navigate(book):
    base, pages, _, _ = book
    chapter_pages = [f"notebooks/{c}.html" for c in CHAPTERS]
    for i, path in enumerate(chapter_pages):
        assert path in pages, f"{path} was not built"
        info = pages[path].info
        assert info["runNote"], f"{path} has no 'Run this chapter' note"
        assert info["pageToc"] >= 2, f"{path} has no table of contents of its own"
        if i > 0:
            assert info["prev"] == base + chapter_pages[i - 1], f"{path}: previous is wrong"
        if i + 1 < len(chapter_pages):
            assert info["next"] == base + chapter_pages[i + 1], f"{path}: next is wrong"
        workshop = f"{base}exercises/{CHAPTERS[i]}.ipynb"
        assert workshop in info["articleLinks"], f"{path} does not link its workshop copy"


def test_search_finds_the_course(book):
    with served(HTML) as base:
        driver = browser()
        try:
            driver.get(base + "search.html?q=softmax")
            driver.set_script_timeout(60)
            hits = driver.execute_async_script("""
                const done = arguments[arguments.length - 1];
                const start = Date.now();
                (function poll() {
                  const n = document.querySelectorAll("#search-results li").length;
                  if (n > 0 || Date.now() - start > 30000) { done(n); }
                  else { setTimeout(poll, 100); }
                })();""")
        finally:
            driver.quit()
    assert hits > 0, "the book's search found nothing for 'softmax'"


def test_no_machine_path_in_the_output():
    found = []
    for file in HTML.rglob("*"):
        if file.suffix in (".html", ".js", ".txt", ".ipynb", ".css") and file.is_file():
            text = file.read_text(encoding="utf-8", errors="replace")
            found += [f"{file.relative_to(HTML)}: {m.group(0)}" for m in
                      MACHINE_PATH.finditer(text)]
    assert not found, "absolute paths of a machine in the book:\n" + "\n".join(found[:20])
