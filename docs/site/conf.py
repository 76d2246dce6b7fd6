"""Sphinx configuration of the course website (built by ``docs/build_site.py``).

The build script copies this file into a staging folder next to the pages it generates (the
README, the architecture map, the executed lessons and the API pages), so the paths here are
relative to that folder, not to ``docs/site/``.
"""

project = "buildlm"
html_title = "buildlm: build an LLM from scratch"
author = "buildlm contributors"

extensions = [
    "myst_nb",  # Markdown (MyST) pages and Jupyter notebooks with their stored outputs
    "sphinx.ext.autodoc",  # the API reference, from the docstrings
    "sphinx.ext.napoleon",  # docstrings with "Args:" / "Returns:" sections
]

# The lessons arrive executed (with the worked answers injected) by docs/build_site.py;
# Sphinx renders their outputs and never runs a kernel itself.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

exclude_patterns = ["_build", "lessons/_shipped/**", "**.ipynb_checkpoints"]

# `Name` in a docstring links to that name where the API reference documents it.
default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_favicon = "_static/favicon.svg"
html_static_path = ["_static"]
html_show_sourcelink = False
html_copy_source = False

# The README and the map quote file paths (`src/buildlm/...`) in code spans, not links;
# a page they name that is not on the site is not an error worth failing the build on.
suppress_warnings = ["myst.xref_missing", "myst.header"]
