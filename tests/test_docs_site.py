"""The published docs site, tested the way a reader sees it.

The site is built once per session with `ftlab docs` (nbs/95_docs.ipynb), served on 127.0.0.1 and
loaded in headless Chromium with every other host unresolvable, so whatever renders was served by
the site itself. Assertions are on the DOM after the page's scripts ran: typeset math, rendered
widgets, plots, tables, API anchors, search; and a crawl of every page's internal links."""
from __future__ import annotations
import json, os, re, shutil, subprocess, sys, time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from bs4 import BeautifulSoup

from browser import StaticServer, dump_dom, find_chromium
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
def dom(server, chromium):
    "dom(path) -> BeautifulSoup of the page after its scripts ran (cached per path)."
    cache = {}
    def get(path: str) -> BeautifulSoup:
        if path not in cache: cache[path] = BeautifulSoup(dump_dom(chromium, server.url + path), "html.parser")
        return cache[path]
    return get

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
    test_pages = pages(site)[1:]
    assert hrefs == test_pages, (hrefs, test_pages)
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

def test_widgets_render(site, dom):
    "Widgets render from their saved state: every widget view on a chapter page and on the docs page."
    checked = []
    for page in dict.fromkeys([pick(site, "application/vnd.jupyter.widget-view+json"), "nbs/95_docs.html"]):
        soup = dom(page)
        views = soup.find_all("script", type="application/vnd.jupyter.widget-view+json")
        assert views, page
        for v in views:
            assert v.parent.select(".jupyter-widgets"), f"widget {json.loads(v.string)['model_id']} on {page} did not render"
        checked.append(page)
    soup = dom("nbs/95_docs.html")
    slider = soup.select_one(".widget-slider")
    assert slider is not None and slider.select_one(".widget-readout").get_text(strip=True) == "10"
    assert soup.select_one(".widget-interact .widget-output") is not None
    assert "1² + … + 10² = 385 = 385" in soup.select_one(".widget-interact").get_text()

def test_plot_image(site, dom, server):
    page = pick(site, '<img alt=', prefer=None)
    imgs = [i for i in dom(page).select(".cell_output img") if i["src"].endswith(".png")]
    assert imgs, page
    for i in imgs:
        path = urlsplit(urljoin(server.url + page, i["src"])).path
        assert (path, 200) in server.log, f"{path} was not loaded"

def test_every_page_renders(site, dom, server):
    """Every page of the site, loaded in Chromium: a title, math typeset where the page has math, every plot image
    fetched from the site, every widget view rendered. (The tests above look closely at chosen pages; this one
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
        for v in soup.find_all("script", type="application/vnd.jupyter.widget-view+json"):
            assert v.parent.select(".jupyter-widgets"), f"{page}: widget {json.loads(v.string)['model_id']} did not render"
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
    assert {"fetch-js", "stage-pages", "build-site"} <= frags, frags

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
