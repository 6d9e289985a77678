"""The published docs site, tested the way a reader sees it.

The site is built once per session with `ftlab docs` (nbs/95_docs.ipynb), served on 127.0.0.1 and
loaded in headless Chromium with every other host unresolvable, so whatever renders was served by
the site itself. Assertions are on the DOM after the page's scripts ran: typeset math, rendered
widgets, plots, tables, API anchors, search; and a crawl of every page's internal links."""
from __future__ import annotations
import json, os, re, shutil, subprocess, sys, time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit
from urllib.request import urlopen

import pytest
from bs4 import BeautifulSoup

from browser import StaticServer, dump_dom, dump_page, find_chromium
from ftlab.docs import readme_text, site_notebooks, sphinx_anchor

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def site() -> Path:
    "Build the site (`ftlab docs`, warnings are errors) into _build/html once per session."
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", "import sys; from ftlab.cli import main; sys.exit(main(['docs']))"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"ftlab docs failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    out = ROOT/"_build"/"html"
    print(f"\nftlab docs: {time.time()-t0:.1f}s, {sum(f.stat().st_size for f in out.rglob('*') if f.is_file())/1e6:.1f} MB")
    return out

@pytest.fixture(scope="session")
def chromium() -> str: return find_chromium()

@pytest.fixture(scope="session")
def server(site):
    with StaticServer(site) as s: yield s

@pytest.fixture(scope="session")
def loaded(server, chromium):
    "loaded(path) -> (BeautifulSoup of the page after its scripts ran, its console messages), cached per path."
    cache = {}
    def get(path: str):
        if path not in cache:
            text, console = dump_page(chromium, server.url + path)
            cache[path] = BeautifulSoup(text, "html.parser"), console
        return cache[path]
    return get

@pytest.fixture(scope="session")
def dom(loaded):
    "dom(path) -> BeautifulSoup of the page after its scripts ran (cached per path)."
    return lambda path: loaded(path)[0]

def pages(site: Path) -> list[str]:
    "The chapter pages, in sidebar order: index.html, then nbs/*.html by file name."
    return [p.with_suffix(".html").as_posix() for p in site_notebooks(ROOT)]

def html(site: Path, page: str) -> str: return (site/page).read_text(encoding="utf-8")

def pick(site: Path, marker: str, prefer: str | None = None) -> str:
    "A page whose built HTML contains `marker`: `prefer` if it has it, else a chapter before the docs chapter."
    cands = [p for p in pages(site) if marker in html(site, p)]
    assert cands, f"no page of the site contains {marker!r}"
    if prefer and prefer in cands: return prefer
    chapters = [p for p in cands if p not in ("index.html", "nbs/95_docs.html")]
    return (chapters or cands)[0]

# ---------------------------------------------------------------- the site as built
def test_sidebar_in_chapter_order(site):
    nav = BeautifulSoup(html(site, "index.html"), "html.parser").select("nav.bd-docs-nav a.reference.internal")
    hrefs = [a["href"] for a in nav]
    test_pages = pages(site)[1:] + ["genindex.html"]   # the chapters, then the API index
    assert hrefs == test_pages, (hrefs, test_pages)
    assert nav[-1].get_text(strip=True) == "API index"
    assert (site/"search.html").exists() and (site/"searchindex.js").exists()

def test_no_cdn_in_the_site(site):
    "Every script and stylesheet of every page is the site's own (MathJax, RequireJS, widget manager included)."
    for p in pages(site):
        soup = BeautifulSoup(html(site, p), "html.parser")
        urls = [t.get("src") for t in soup.find_all("script")] + [t.get("href") for t in soup.find_all("link", rel="stylesheet")]
        external = [u for u in urls if u and urlsplit(u).scheme in ("http", "https") or (u or "").startswith("//")]
        assert not external, (p, external)
    assert (site/"_static/vendor/mathjax/tex-mml-chtml.js").exists()
    assert (site/"_static/vendor/html-manager/embed-amd.js").exists() and (site/"_static/vendor/require.js").exists()

def test_readme_in_step_with_index():
    assert (ROOT/"README.md").read_text(encoding="utf-8") == readme_text(ROOT), \
        "README.md differs from index.ipynb: run `ftlab docs --readme` (edit index.ipynb, not README's top part)"

# ---------------------------------------------------------------- in the browser
def math_page(site: Path) -> str:
    "The loss chapter when it exists (its whole point is math), else another page with math."
    losses = [p for p in pages(site) if re.match(r"nbs/\d+_losses\.html$", p)]
    return losses[0] if losses else pick(site, 'class="math', prefer="nbs/95_docs.html")

def assert_math_typeset(soup: BeautifulSoup, page: str):
    "Every math element of `page` holds MathJax output (`<mjx-container>`) and no raw TeX is left."
    maths = soup.select(".math")
    assert maths, f"{page} has no math"
    untyped = [m for m in maths if not m.find("mjx-container")]
    assert not untyped, f"{len(untyped)}/{len(maths)} math elements of {page} not typeset, e.g. {untyped[0].get_text()[:80]!r}"

def test_math_is_typeset(site, dom, server):
    page = math_page(site)
    soup = dom(page)
    assert_math_typeset(soup, page)
    assert len(soup.find_all("mjx-container")) >= len(soup.select(".math"))
    assert any(p.startswith("/_static/vendor/mathjax/") and s == 200 for p, s in server.log), "MathJax was not served by the site"

def test_math_negative_control(site, chromium, tmp_path):
    "The same page with MathJax pointed at a CDN (unreachable here) fails the math check: the check can fail."
    page = math_page(site)
    copy = tmp_path/"site"
    shutil.copytree(site, copy, ignore=shutil.ignore_patterns("jupyter_execute"))
    src = (copy/page).read_text(encoding="utf-8")
    patched = re.sub(r'src="[./]*_static/vendor/mathjax/tex-mml-chtml\.js[^"]*"',
                     'src="https://cdn.jsdelivr.net/npm/mathjax@3.2.2/es5/tex-mml-chtml.js"', src)
    assert patched != src
    (copy/page).write_text(patched, encoding="utf-8")
    with StaticServer(copy) as s:
        soup = BeautifulSoup(dump_dom(chromium, s.url + page), "html.parser")
    assert soup.select(".math") and not soup.find_all("mjx-container")
    with pytest.raises(AssertionError, match="not typeset"): assert_math_typeset(soup, page)

_CONTROLS = (".widget-slider, .widget-dropdown, .widget-button, .widget-text, .widget-toggle-button, .widget-checkbox, "
             ".widget-play, .widget-radio, .widget-select, button.jupyter-button, .jupyter-widgets input, .jupyter-widgets select")

def widget_cells(nb_path: Path) -> int:
    "How many widgets with controls the source notebook displays (progress bars and bare `Output()` areas not counted)."
    nb = json.loads((ROOT/nb_path).read_text(encoding="utf-8"))
    n = 0
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            d = o.get("data", {})
            plain = "".join(d.get("text/plain", "")) if isinstance(d.get("text/plain", ""), list) else d.get("text/plain", "")
            if "application/vnd.jupyter.widget-view+json" in d and not _PROGRESS.search(plain) and plain.strip() != "Output()": n += 1
    return n

def dead_controls(soup: BeautifulSoup) -> list[str]:
    "Widget controls on a page with no kernel: a slider, a dropdown, a button… that would do nothing."
    return [f"{' '.join(c.get('class', []))}: {c.get_text(' ', strip=True)[:40]!r}" for c in (soup.select_one("article") or soup).select(_CONTROLS)]

def test_no_dead_widget_controls(site, dom):
    """No page shows widget controls (no kernel: they would do nothing). Each widget of a chapter is a note that it is live
    in JupyterLab, naming its controls, with what it displayed when the chapter ran (60's projection, 70's tables…)."""
    bad, seen = {}, 0
    for nb_path in site_notebooks(ROOT):
        page = nb_path.with_suffix(".html").as_posix()
        soup = dom(page)
        problems = dead_controls(soup)
        problems += [f"widget view {json.loads(v.string)['model_id']}" for v in soup.find_all("script", type="application/vnd.jupyter.widget-view+json")]
        notes = soup.select("article .ftlab-widget-note")
        if len(notes) != (want := widget_cells(nb_path)): problems.append(f"{len(notes)} widget notes for {want} widgets")
        for n in notes:
            text = n.get_text(" ", strip=True)
            if not text.startswith("Interactive in JupyterLab") or "run this chapter" not in text: problems.append(f"note: {text[:80]!r}")
        if problems: bad[page] = problems[:5]
        seen += len(notes)
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)
    assert seen >= 10, seen
    # what the widgets showed is on the page, static: 95's interact printed its line, 60's dropdown drew its projection
    soup = dom("nbs/95_docs.html")
    assert "1² + … + 10² = 385 = 385" in soup.select_one("article").get_text()
    assert "for n = 10" in " ".join(n.get_text(" ") for n in soup.select(".ftlab-widget-note"))
    if (site/"nbs/60_domain_adaptation.html").exists():
        note = dom("nbs/60_domain_adaptation.html").select_one(".ftlab-widget-note")
        cell = note.find_parent(class_="cell")
        assert "method = " in note.get_text() and cell.select(".cell_output img"), "60's projection is not shown under its note"

def test_dead_control_check_can_fail():
    soup = BeautifulSoup('<article><div class="jupyter-widgets widget-slider"><div class="widget-readout">10</div></div>'
                         '<div class="jupyter-widgets"><select><option>mmd</option></select></div></article>', "html.parser")
    assert len(dead_controls(soup)) == 2, dead_controls(soup)

def test_no_js_errors_or_missing_files(site, loaded, server):
    "Every page loads with no uncaught JavaScript error (the widget manager's `reading 'Queue'`) and every file it asks for exists (icon fonts)."
    errors = {}
    for p in pages(site):
        _, console = loaded(p)
        if (bad := [l for l in console if re.search(r"Uncaught|TypeError|ReferenceError|SyntaxError", l)]): errors[p] = bad[:3]
    missing = sorted({path for path, status in server.log if status == 404 and path != "/favicon.ico"})  # no favicon: Chromium asks anyway
    assert not errors and not missing, json.dumps({"errors": errors, "404": missing}, indent=1)
    assert not any("html-manager" in path for path, _ in server.log), "a page still loads the widget manager"

def test_plot_image(site, dom, server):
    page = pick(site, '<img alt=', prefer=None)
    imgs = [i for i in dom(page).select(".cell_output img") if i["src"].endswith(".png")]
    assert imgs, page
    for i in imgs:
        path = urlsplit(urljoin(server.url + page, i["src"])).path
        assert (path, 200) in server.log, f"{path} was not loaded"

def test_figures_are_retina(site, dom):
    """A figure executed by scripts/execute_notebooks.py is a retina PNG: twice its display size in pixels, shown at its
    display size (95's plot; a chapter's figures are when the chapter is next executed)."""
    import struct
    soup = dom("nbs/95_docs.html")
    imgs = [i for i in soup.select(".cell_output img") if i["src"].endswith(".png")]
    assert imgs
    for i in imgs:
        m = re.search(r"width:\s*(\d+)px", i.get("style", "")) or re.fullmatch(r"(\d+)(?:px)?", i.get("width", ""))
        assert m, f"{i['src']} has no display size: {i}"
        png = (site/"nbs"/unquote(i["src"])).resolve().read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", png[16:20])[0] >= 2*int(m.group(1)) - 2, (i["src"], m.group(1))

def test_every_page_renders(site, dom, server):
    """Every page of the site, loaded in Chromium: a title, math typeset where the page has math, every plot image
    fetched from the site. (The tests above look closely at chosen pages; this one
    makes sure no page is left unseen.)"""
    seen = []
    for page in pages(site):
        soup = dom(page)
        h1 = soup.select_one("article h1, main h1, h1")
        assert h1 is not None and h1.get_text(strip=True), f"{page}: no title after its scripts ran"
        if soup.select(".math"): assert_math_typeset(soup, page)
        for i in soup.select(".cell_output img"):
            if i["src"].startswith("data:"):   # embedded in the page (e.g. a widget's saved image): must not be empty
                assert len(i["src"]) > 200, f"{page}: an embedded image is empty"; continue
            path = urlsplit(urljoin(server.url + page, i["src"])).path
            assert (path, 200) in server.log, f"{page}: image {path} was not served"
        seen.append(page)
    assert len(seen) == len(site_notebooks(ROOT)) >= 8, seen

def test_dataframe_table(site, dom):
    page = pick(site, 'class="dataframe')
    tables = dom(page).select(".cell_output table.dataframe")
    assert tables and all(len(t.select("tbody tr")) >= 1 for t in tables)

def test_api_anchors(site, dom):
    "show_doc headings get Sphinx anchors; nbdev's API links point at them."
    import ftlab.docs
    soup = dom("nbs/95_docs.html")
    ids = {t["id"] for t in soup.find_all(id=True)}
    funcs = [n for n in ftlab.docs.__all__ if callable(getattr(ftlab.docs, n))]
    missing = [n for n in funcs if sphinx_anchor(n) not in ids]
    assert not missing, missing
    # backticked names in prose became links to the API entry (nbdev's add_links, rewritten relative)
    frags = {urlsplit(a["href"]).fragment for a in soup.select("p a[href], li a[href]") if "95_docs.html#" in a["href"]}
    assert {"fetch-js", "build-site"} <= frags, frags
    # a name of the staging room (re-exported by ftlab.docs) links to its entry on the room's own page
    staged = {urlsplit(a["href"]).fragment for a in soup.select("p a[href], li a[href]") if "95a_staging.html#" in a["href"]}
    assert "stage-pages" in staged, staged

def api_entries(soup: BeautifulSoup) -> list:
    "The show_doc headings of a page (myst-nb renders a heading in a cell's output as a rubric)."
    return soup.select("article .cell_output p.rubric")

def test_api_reference(site, dom):
    """The API reference: the site's index lists every function of a module at its entry; show_doc entries have their own
    anchors (no `id1`… from a repeated entry: 60's API section lists links instead); docments are parameter tables,
    and signatures carry no comments."""
    import ftlab.docs
    idx = BeautifulSoup(html(site, "genindex.html"), "html.parser")
    links = {a.get_text(" ", strip=True): a["href"] for a in idx.select("article a[href]")}
    funcs = [n for n in ftlab.docs.__all__ if callable(getattr(ftlab.docs, n))]
    missing = [n for n in funcs if not any(k.startswith(n + " (ftlab.docs)") and "nbs/95_docs.html#" in h for k, h in links.items())]
    assert not missing, (missing, list(links)[:20])
    bad = {}
    for p in pages(site):
        names = [r.get_text(strip=True) for r in api_entries(dom(p))]
        # a name shown twice gets a second anchor `id1`, `id2`… (60's API section did, 23 times). (An entry whose anchor
        # is taken by a section or another entry, 95's `display_math` and "Display math", 02's `Claim` and `claim`,
        # also gets `idN`: nbdev's links to it land on the other one, a neighbour of it.)
        if (dup := sorted({n for n in names if names.count(n) > 1})): bad[p] = dup[:5]
    assert not bad, bad
    page = "nbs/60_domain_adaptation.html" if (site/"nbs/60_domain_adaptation.html").exists() else "nbs/95_docs.html"
    soup = dom(page)
    if page.startswith("nbs/60"):
        entry = next(r for r in api_entries(soup) if r.get_text(strip=True) == "encode_texts")
        out = entry.find_parent(class_="cell_output")
        sig = out.select_one("pre").get_text()
        assert sig.startswith("def encode_texts(") and "#" not in sig, sig
        table = out.select_one("table")
        assert table is not None and "Details" in table.get_text() and "longer texts are truncated" in table.get_text(), out.get_text()[:400]
        api = soup.select_one("section#api")
        assert api is not None and api.select('a[href="#encode-texts"]'), "60's API section does not link to the entries"

@pytest.mark.parametrize("query,page", [("sha256", "nbs/00_assets.html"), ("MathJax", "nbs/95_docs.html")])
def test_search(site, dom, query, page):
    if not (site/page).exists(): pytest.skip(f"{page} is not part of the site")
    hits = [a["href"] for a in dom(f"search.html?q={query}").select("#search-results ul.search li a")]
    assert any(urlsplit(h).path.endswith(page) for h in hits), (query, hits)

# ---------------------------------------------------------------- links
def test_internal_links(site):
    "Crawl every HTML file: each internal link's target file exists, and so does its #anchor."
    files = sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)
    ids, n_links, broken = {}, 0, []
    def ids_of(f: Path):
        if f not in ids:
            s = BeautifulSoup(f.read_text(encoding="utf-8"), "html.parser")
            ids[f] = {t["id"] for t in s.find_all(id=True)} | {t["name"] for t in s.find_all("a", attrs={"name": True})}
        return ids[f]
    for f in files:
        soup = BeautifulSoup(f.read_text(encoding="utf-8"), "html.parser")
        for tag, attr in (("a", "href"), ("link", "href"), ("script", "src"), ("img", "src")):
            for t in soup.find_all(tag, attrs={attr: True}):
                u = t[attr]
                sp = urlsplit(u)
                if sp.scheme or u.startswith("//") or u.startswith(("mailto:", "javascript:")): continue
                n_links += 1
                target = (f.parent/unquote(sp.path)).resolve() if sp.path else f
                if target.is_dir(): target = target/"index.html"
                if not target.exists(): broken.append(f"{f.relative_to(site)}: {u} (no file)"); continue
                if sp.fragment and target.suffix == ".html" and unquote(sp.fragment) not in ids_of(target):
                    broken.append(f"{f.relative_to(site)}: {u} (no anchor)")
    print(f"\ncrawled {len(files)} pages, {n_links} internal links")
    assert n_links > 100 and not broken, "\n".join(broken[:50])

# ---------------------------------------------------------------- what a reader would stop at (issue 34)
# Each check returns the problems it found on one page (empty: none), so a failure names page and text.
_TEX_COMMAND = re.compile(r"\\(?:frac|t?frac|operatorname|mathbb|mathbf|mathcal|mathrm|text|sum|log|exp|hat|bar|tilde|widehat|"
                          r"sqrt|lVert|rVert|left|right|big|Big|qquad|quad|alpha|beta|theta|lambda|sigma|varepsilon|epsilon|"
                          r"nabla|partial|mid|le|ge|ne|top|cdot|dots|ldots|in|arg|min|max|pi|phi|varphi|mu|Delta|chi|eta)\b")
_CODE = "pre, code, script, style, mjx-container, mjx-assistive-mml, .highlight, .cell_input, .linenos, nav, .search"

def prose_text(soup: BeautifulSoup) -> str:
    "The article's rendered text outside code, typeset math and navigation: what a reader reads as prose."
    art = BeautifulSoup(str(soup.select_one("article") or soup), "html.parser")
    for t in art.select(_CODE): t.decompose()
    return art.get_text(" ")

def math_problems(soup: BeautifulSoup) -> list[str]:
    "Stray `$` and unrendered TeX commands in the page's prose."
    text = prose_text(soup)
    ctx = lambda m: text[max(0, m.start()-40):m.end()+40].replace("\n", " ")
    return ([f"stray $: …{ctx(m)}…" for m in re.finditer(r"\$", text)] +
            [f"raw TeX {m.group(0)}: …{ctx(m)}…" for m in _TEX_COMMAND.finditer(text)])

_INLINE = ["i", "em", "b", "strong", "u", "s", "sup", "sub", "small", "big", "tt", "font"]

def leaked_tags(soup: BeautifulSoup) -> list[str]:
    "Block content (headings, paragraphs, cells, sections) inside an inline tag: an unclosed `<i>` (or the like) leaked."
    art = soup.select_one("article") or soup
    return [f"<{t.name}> {t.get_text(' ', strip=True)[:60]!r} is inside <{t.find_parent(_INLINE).name}>"
            for t in art.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "section", "div", "table", "ul", "ol"])
            if t.find_parent(_INLINE) is not None]

_BUILD_PATH = re.compile(r"/tmp/ipykernel|site-packages|dist-packages|\.venv/|\S+\.py:\d+: \w+Warning")
_PROGRESS = re.compile(r"\d+%\|[^|\n]*\|\s*[\d.]+[kMG]?/[\d.?]+[kMG]?\s*\[")

def output_noise(soup: BeautifulSoup) -> list[str]:
    "Build-machine paths, warnings with a file path, and frozen progress bars (text or widget) in the page's cell outputs."
    res = []
    for o in soup.select(".cell_output"):
        text = o.get_text(" ")
        res += [f"build path: …{text[max(0, m.start()-60):m.end()+40]!r}…" for m in _BUILD_PATH.finditer(text)]
        res += [f"progress bar: {text[max(0, m.start()-40):m.end()+20]!r}" for m in _PROGRESS.finditer(text)]
        res += [f"progress widget: {w.get_text(' ', strip=True)[:60]!r}" for w in o.select(".widget-progress, .widget-hprogress, progress")]
    return res

def download_link(soup: BeautifulSoup) -> str | None:
    "The href of the page's 'download .ipynb' button."
    a = soup.select_one('a[href$=".ipynb"][href*="_sources/"]')
    return a["href"] if a else None

def nb_cells(nb: dict) -> list[tuple[str, str]]:
    return [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"]) for c in nb["cells"]]

def test_math_renders_everywhere(site, dom):
    "No page shows a stray `$` or a TeX command outside code: every formula was typeset (display math in a paragraph included)."
    bad = {p: m[:5] for p in pages(site) if (m := math_problems(dom(p)))}
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)

def test_math_check_can_fail():
    "The check finds what the broken pages showed: run-together `$`, raw `\\operatorname`."
    soup = BeautifulSoup('<article><p>by $ <span class="math">x</span> with $\\operatorname{median}</p>'
                         '<pre>cost = "$5"</pre><p>fine</p></article>', "html.parser")
    found = math_problems(soup)
    assert len([f for f in found if f.startswith("stray")]) == 2 and any("operatorname" in f for f in found), found

def test_no_leaked_inline_tags(site, dom):
    "No page has headings, paragraphs or cells inside an <i>/<em>/<b>…: an unclosed tag from a docstring leaks into the rest of the page."
    bad = {p: t[:5] for p in pages(site) if (t := leaked_tags(dom(p)))}
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)
    if (site/"nbs/03a_parts.html").exists():  # the page where 'layer.<i>' in block_of's docstring did it
        soup = dom("nbs/03a_parts.html")
        assert "layer.<i>" in soup.select_one("article").get_text(), "block_of's docstring lost its text"

def test_leaked_tag_check_can_fail():
    "Chromium's DOM for a docstring's unclosed `<i>`: the browser reopens the <i> around everything after it."
    soup = BeautifulSoup("<article><p><em>The block 'layer.<i>'</i></em></p><i><section><h2>Next</h2><p>text</p></section></i></article>",
                         "html.parser")
    assert len(leaked_tags(soup)) == 3, leaked_tags(soup)

def test_no_build_noise_in_outputs(site, dom):
    "No cell output shows the build machine's paths (`/tmp/ipykernel_…`, `site-packages`, `.venv/`) or a frozen progress bar."
    bad = {p: n[:5] for p in pages(site) if (n := output_noise(dom(p)))}
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)

def test_noise_check_can_fail():
    soup = BeautifulSoup('<div class="cell_output"><pre>/work/.venv/lib/python3.11/site-packages/x.py:3: FutureWarning: old</pre>'
                         '<pre>Map: 100%|##########| 512/512 [00:00&lt;00:00, 9000.0 examples/s]</pre></div>', "html.parser")
    found = output_noise(soup)
    assert {f.split(":")[0] for f in found} == {"build path", "progress bar"}, found

def test_download_is_the_source_notebook(site, dom, server):
    "Every page's download button serves its source notebook (the one that runs), and every chapter says how to run it."
    for nb_path in site_notebooks(ROOT):
        page = nb_path.with_suffix(".html").as_posix()
        soup = dom(page)
        href = download_link(soup)
        assert href, f"{page}: no .ipynb download button"
        with urlopen(urljoin(server.url + page, href), timeout=30) as r: served = json.loads(r.read().decode("utf-8"))
        source = json.loads((ROOT/nb_path).read_text(encoding="utf-8"))
        assert nb_cells(served) == nb_cells(source), f"{page}: the download ({href}) is not {nb_path}"
        if nb_path.parts[0] == "nbs":
            block = next((a for a in soup.select("article .admonition") if "Run this chapter" in a.get_text()), None)
            assert block is not None, f"{page}: no 'Run this chapter in JupyterLab' block"
            cmds = block.select_one("pre").get_text()
            assert "git clone " in cmds and "pip install torch==2.13.0 -e ." in cmds and f"jupyter lab {nb_path.as_posix()}" in cmds, cmds
            assert "bash scripts/test.sh" in block.get_text()

# ---------------------------------------------------------------- layout at a 1280 px window
_PROBE = """<!doctype html><html><body style="margin:0"><iframe id="f" style="width:1280px;height:900px;border:0"></iframe>
<pre id="out"></pre><script>
const f = document.getElementById("f");
f.onload = () => setTimeout(() => {
  const d = f.contentDocument, w = f.contentWindow;
  const vis = e => { const r = e.getBoundingClientRect(), cs = w.getComputedStyle(e); return r.width > 0 && r.height > 0 && cs.visibility != "hidden" && cs.display != "none"; };
  const art = d.querySelector("article.bd-article"), cs = w.getComputedStyle(art);
  const pres = [...d.querySelectorAll("article pre")].filter(vis);
  document.getElementById("out").textContent = JSON.stringify({
    text: art.getBoundingClientRect().width - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight),
    pres: pres.length, cut: pres.filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.textContent.slice(0, 60)),
    searches: [...d.querySelectorAll("input[type=search], .search-button-field, .search-button")].filter(vis).length});
}, 3000);
f.src = "site/" + new URLSearchParams(location.search).get("page");
</script></body></html>"""

def layout(chromium: str, site: Path, tmp: Path, page: str) -> dict:
    "Measure `page` laid out at 1280 px (in an iframe of a probe page served beside the site): text column, cut code, search boxes."
    (tmp/"site").symlink_to(site.resolve(), target_is_directory=True)
    (tmp/"probe.html").write_text(_PROBE, encoding="utf-8")
    with StaticServer(tmp) as s:
        soup = BeautifulSoup(dump_page(chromium, s.url + "probe.html?page=" + page, window="1400,1000")[0], "html.parser")
    return json.loads(soup.select_one("#out").get_text())

@pytest.mark.parametrize("page", ["nbs/60_domain_adaptation.html", "nbs/95_docs.html"])
def test_layout_at_1280(site, chromium, tmp_path, page):
    "At a 1280 px window the text column is at least 800 px wide, no code block runs off its edge, and there is one search box."
    if not (site/page).exists(): pytest.skip(f"{page} is not part of the site")
    m = layout(chromium, site, tmp_path, page)
    assert m["text"] >= 800, m
    assert m["pres"] > 10 and not m["cut"], m
    assert m["searches"] == 1, m
