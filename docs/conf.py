# Sphinx configuration of the ftlab docs site. `ftlab docs` (ftlab.docs, nbs/95_docs.ipynb) stages
# nbdev's processed notebooks into _build/src and runs Sphinx with this folder as the conf dir.
# MathJax, RequireJS and the ipywidgets HTML manager are served from _static/vendor (copied there
# from npm by `ftlab docs`): the built site needs no CDN.
project = "ftlab"
author = "ftlab developers"
copyright = "ftlab developers"
extensions = ["myst_nb"]

root_doc = "index"
source_suffix = {".ipynb": "myst-nb", ".md": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints"]

# notebooks arrive executed (committed outputs + nbdev's show_doc pass): never execute here
nb_execution_mode = "off"
nb_render_markdown_format = "myst"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "attrs_inline"]
myst_all_links_external = True  # links are made relative and checked by ftlab.docs when staging
myst_heading_anchors = 0

# local JavaScript (relative to _static)
mathjax_path = "vendor/mathjax/tex-mml-chtml.js"
nb_ipywidgets_js = {
    "vendor/require.js": {},
    "ftlab-widgets.js": {},
    "vendor/html-manager/embed-amd.js": {},
}

html_theme = "sphinx_book_theme"
html_title = "ftlab"
html_static_path = ["_static"]
html_css_files = ["ftlab.css"]  # a wider text column; code wraps instead of running off the edge
html_theme_options = {
    "repository_url": "https://github.com/ftlab/ftlab",
    "use_repository_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "navbar_persistent": [],  # one search box (the sidebar's), not a second one in the header
}
html_copy_source = True  # the download button offers each page's notebook
html_show_sourcelink = False
html_last_updated_fmt = None
