"""The course website, built and opened in a real headless Chromium (Debian's ``chromium``,
driven by Playwright, as the chat-page test does).

The site is built with ``docs/build_site.py`` (every lesson executed with its worked answers,
then rendered by Sphinx) into a temporary folder, served over loopback by a real HTTP server,
and every lesson page and the API reference are opened: no console errors, no failed request,
every figure drawn (images with a non-zero natural size), the navigation lists the lessons by
stage, search finds a term, and the API reference documents the package's main names.

Executed lessons are cached under ``build/site-work/executed`` by the hash of everything that
can change their outputs (the build script's own cache). ``test_notebooks.py``, which runs just
before this file, stores its runs with the worked answers there, so in a whole-suite run (CI)
the lessons are executed once for both; run alone, this test executes those not cached. Without
Sphinx (the ``docs`` extra, which the ``dev`` extra includes) or Chromium this test fails rather
than skips.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("BUILDLM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
API_NAMES = ["GPT", "ModelConfig", "Tokenizer", "Engine", "Trainer", "load"]

pytestmark = pytest.mark.slow


def _build_site_module():
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "docs" / "build_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict, list[Path]]:
    """``(site folder, build stats, lessons)``: the site built from this checkout."""
    site = _build_site_module()
    tmp = tmp_path_factory.mktemp("site")
    stats = site.build(tmp / "out", tmp / "work", site.CACHE, jobs=max(1, min(4, os.cpu_count() or 1)))
    print(f"site build: {json.dumps({k: round(v, 1) for k, v in stats.items()})}")
    return tmp / "out", stats, site.lessons()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output readable
        pass


@pytest.fixture(scope="module")
def url(built) -> str:
    """The site served over loopback by a real HTTP server (the standard library's)."""
    handler = functools.partial(_Quiet, directory=str(built[0]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (never ``playwright install``)."""
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} not found: `apt-get install -y chromium`"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def visit(browser, url):
    """``visit(path) -> (page, problems)``: the page loaded; every console error, uncaught
    exception and failed request so far in ``problems``. The site must not need the network:
    a request leaving loopback is a problem too (and is answered locally, so it fails fast)."""
    pages = []

    def open_(path: str):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)

        def outside(route):
            problems.append(f"request off the machine: {route.request.url}")
            route.fulfill(status=200, body="")

        page.route(lambda u: urlparse(u).hostname not in ("127.0.0.1", None), outside)
        page.goto(url + path, wait_until="load")
        pages.append(page)
        return page, problems

    yield open_
    for page in pages:
        page.close()


def test_a_new_lesson_joins_the_navigation_from_its_file_name(tmp_path):
    """No configuration lists the lessons: a ``tutorials/NN_*.ipynb`` is found, titled by its
    first heading, and placed in its part of the course by its stage number."""
    import nbformat

    site = _build_site_module()
    shipped = {}
    for name, heading in [("01_first.ipynb", "Stage 1 — First"), ("10_later.ipynb", "Stage 10 — Later")]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {heading}\n\nIntro.")])
        nbformat.write(nb, str(tmp_path / name))
        shipped[tmp_path / name] = tmp_path / name
    src = tmp_path / "src"
    site.stage_pages(src, shipped)
    index = (src / "index.md").read_text()
    part1, part2 = index.index(":caption: Part 1"), index.index(":caption: Part 2")
    assert part1 < index.index("Stage 1 — First <lessons/01_first>") < part2
    assert part2 < index.index("Stage 10 — Later <lessons/10_later>")
    page = nbformat.read(str(src / "lessons" / "10_later.ipynb"), as_version=4)
    assert "worked answers" in page.cells[1].source and "_shipped/10_later.ipynb" in page.cells[1].source
    assert (src / "lessons" / "_shipped" / "10_later.ipynb").is_file()


def test_the_site_builds_every_lesson_and_reports_its_time_and_size(built):
    out, stats, lessons = built
    assert lessons and stats["lessons"] == len(lessons)
    for path in lessons:
        assert (out / "lessons" / f"{path.stem}.html").is_file(), f"no page for {path.name}"
        assert (out / "_downloads").is_dir()
    assert (out / "readme.html").is_file() and (out / "architecture.html").is_file()
    assert 0.1 < stats["size_mb"] < 200, stats
    # The stored notebooks stay clean: the build wrote only into its own folders.
    import nbformat

    for path in lessons:
        nb = nbformat.read(str(path), as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name


def test_every_lesson_page_loads_cleanly_and_shows_its_figures(built, visit):
    _, _, lessons = built
    for path in lessons:
        page, problems = visit(f"/lessons/{path.stem}.html")
        heading = page.inner_text("article h1")
        assert heading.startswith(f"Stage {int(path.name[:2])}"), (path.name, heading)
        # The note that the page shows the worked answers, with the notebook to try it.
        note = page.locator(".admonition", has_text="worked answers")
        assert note.count() == 1, f"{path.name}: no 'worked answers' note"
        link = note.locator("a.download")
        assert link.count() == 1 and link.get_attribute("href").endswith(path.name)
        # Figures: every image decoded, with a non-zero natural size (scrolled into view first,
        # in case an image loads lazily).
        images = page.locator("article img")
        assert images.count() >= 1, f"{path.name}: no figure on the page"
        page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('article img')).every(i => i.complete)"
        )
        sizes = page.eval_on_selector_all(
            "article img", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight, i.src])"
        )
        empty = [src for w, h, src in sizes if not (w > 0 and h > 0)]
        assert not empty, f"{path.name}: images with no size: {empty}"
        # Outputs are there: the check cells ran (a lesson prints what it compared).
        assert page.locator(".cell_output").count() >= 3, f"{path.name}: no outputs rendered"
        assert problems == [], f"{path.name}: {problems}"


def test_navigation_lists_the_lessons_by_stage(built, visit):
    _, _, lessons = built
    page, problems = visit("/index.html")
    links = page.eval_on_selector_all(
        ".sidebar-tree a.reference", "as => as.map(a => [a.textContent.trim(), a.getAttribute('href')])"
    )
    lesson_links = [(text, href) for text, href in links if href.startswith("lessons/")]
    assert [href for _, href in lesson_links] == [f"lessons/{p.stem}.html" for p in lessons]
    stages = [int(re.match(r"Stage (\d+)", text)[1]) for text, _ in lesson_links]
    assert stages == [int(p.name[:2]) for p in lessons] == sorted(stages)
    captions = page.eval_on_selector_all(".sidebar-tree .caption", "cs => cs.map(c => c.textContent)")
    assert any(c.startswith("Part 1") for c in captions), captions
    texts = {t for t, _ in links}
    assert "The README" in texts and "Architecture map" in texts and "API reference" in texts
    assert problems == []


def test_search_finds_a_term(built, visit):
    page, problems = visit("/search.html?q=multihead")
    page.wait_for_selector("#search-results ul.search li", timeout=30_000)
    hits = page.eval_on_selector_all(
        "#search-results ul.search li a", "as => as.map(a => a.getAttribute('href'))"
    )
    assert any("04_self_attention" in h for h in hits), hits
    assert problems == []


def test_the_api_reference_documents_the_main_names(built, visit):
    out = built[0]
    documented: set[str] = set()
    for path in ["/api/index.html", *(f"/api/{p.stem}.html" for p in sorted((out / "api").glob("*.html")))]:
        page, problems = visit(path)
        ids = page.eval_on_selector_all("dt.sig[id]", "ds => ds.map(d => d.id)")
        documented.update(i.rsplit(".", 1)[-1] for i in ids)
        assert problems == [], f"{path}: {problems}"
    missing = [n for n in API_NAMES if n not in documented]
    assert not missing, f"the API reference does not document {missing}"
    # With their docstrings, not just their names.
    page, _ = visit("/api/model.html")
    assert len(page.inner_text("[id='buildlm.model.GPT'] + dd")) > 100
