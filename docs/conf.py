"""Sphinx configuration of the skdirection documentation.

Build (warnings are errors; no network is used)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import re
import sys
import warnings

sys.path.insert(0, os.path.abspath(".."))

import skdirection  # noqa: E402

project = "skdirection"
author = "skdirection developers"
copyright = "2026, skdirection developers"
version = release = skdirection.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "**.codeobj.json"]
templates_path = ["_templates"]

# The build must work offline: no intersphinx inventories are fetched, and MathJax is
# loaded by the reader's browser, not at build time.
intersphinx_mapping = {}

autosummary_generate = True
# Document what each module lists in __all__, including names it re-exports.
autosummary_ignore_module_all = False
# Names a subpackage re-exports are documented once, where the user imports them first.
autosummary_context = {
    "documented_elsewhere": {
        "skdirection.codecs": list(skdirection.__all__),
        "skdirection.estimators": list(skdirection.__all__),
        "skdirection.adapters.transformers": [
            "CompressedEmbedding",
            "CompressedLMHead",
            "count_parameters",
        ],
    }
}
autodoc_typehints = "none"

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Cross-references to numpy/sklearn/torch types cannot resolve without intersphinx.
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

myst_heading_anchors = 3

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "abort_on_example_error": True,
    "show_memory": False,
    # Timings change on every build; they are printed, not written into the sources.
    "write_computation_times": False,
}

# The examples run in this process. On a small, busy CI machine a second torch thread
# spins against other jobs and makes small eigh and matmul calls up to ten times slower.
import torch  # noqa: E402

torch.set_num_threads(1)

# Matplotlib is used headless during the gallery build.
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")

html_theme = "pydata_sphinx_theme"
html_title = f"skdirection {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": False,
    "icon_links": [],
}
html_static_path = []
html_show_sourcelink = False


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Document only the members a class gets from skdirection itself.

    Methods inherited from scikit-learn and torch (``get_params``, ``nn.Module.apply``,
    ...) are documented upstream, and their docstrings link to labels that cannot
    resolve offline.
    """
    if what != "class":
        return None
    module = getattr(getattr(obj, "fget", obj), "__module__", None) or ""
    if not module.startswith("skdirection"):
        return True
    return None


_TRAILING_UNDERSCORE = re.compile(r"(?<=\w)_(?=[,)\]])")


def _escape_attribute_names_in_types(app, what, name, obj, options, lines):
    """Keep ``shape (n_features_in_,)`` in a numpydoc type from becoming a reST link.

    numpydoc copies a parameter's type verbatim into reST, where a word ending in ``_``
    is a reference to a target; scikit-learn style types name fitted attributes that way.
    """
    for i, line in enumerate(lines):
        if " : " in line and not line.startswith(" "):
            head, _, kind = line.partition(" : ")
            lines[i] = head + " : " + _TRAILING_UNDERSCORE.sub(r"\\_", kind)


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
    # Before numpydoc (priority 500) turns the sections into reST.
    app.connect("autodoc-process-docstring", _escape_attribute_names_in_types, priority=400)
