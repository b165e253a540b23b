"""Write the stored-table fixtures that tests/test_table_compatibility.py loads.

Run once with the package of the version the folder is named after (``tables_v1``: main
at 8f5e571, before the package was reorganised into codecs and estimators); its output is
committed, so that tables saved by that version must keep loading and decoding
identically::

    python tests/data/make_table_fixtures.py tests/data/tables_v1
"""

import sys
from pathlib import Path

import numpy as np


def main(folder):
    import torch

    from skdirection import (
        DenseTable,
        DirectionAutoEncoder,
        FrequencyMixedCompressor,
        ProductQuantizer,
        ScalarQuantizer,
        TruncatedSVDCompressor,
        save_table,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    X = (rng.normal(size=(300, 8)) @ rng.normal(size=(8, 24))).astype(np.float32)
    counts = rng.zipf(1.5, size=300).astype(float)
    tables = {
        "svd_centred": TruncatedSVDCompressor(5, center=True, device="cpu").fit(X),
        "autoencoder_hidden": DirectionAutoEncoder(
            4, hidden_layer_sizes=(6,), max_iter=2, device="cpu", random_state=0
        ).fit(X),
        "int4_g8": ScalarQuantizer(4, group_size=8).fit(X),
        "int3_row": ScalarQuantizer(3).fit(X),
        "int8_row": ScalarQuantizer(8).fit(X),
        "pq3_norms": ProductQuantizer(3, device="cpu", random_state=0).fit(X),
        "pq4_plain": ProductQuantizer(
            4, keep_norms=False, device="cpu", random_state=0
        ).fit(X),
        "mixed_bytes": FrequencyMixedCompressor(10, ranks=(2, 4), random_state=0).fit(
            X, sample_weight=counts
        ),
        "mixed_params": FrequencyMixedCompressor(
            3, ratio_unit="params", ranks=(2, 4), random_state=0
        ).fit(X, sample_weight=counts),
    }
    decoded = {}
    for name, estimator in tables.items():
        table = estimator.compress(X)
        save_table(table, folder / f"{name}.safetensors")
        with torch.no_grad():
            decoded[name] = table.decode().numpy()
    save_table(DenseTable(torch.from_numpy(X).half()), folder / "dense_half.safetensors")
    decoded["dense_half"] = torch.from_numpy(X).half().float().numpy()
    np.savez(folder / "decoded.npz", **decoded)
    save_patch(folder / "patch_both")


def save_patch(folder):
    """A tiny Llama (tests/conftest.py's, vocabulary 51) in ``folder/base``, the same
    model patched and saved with ``save_compressed`` in ``folder``, and the logits the
    patched model gives on tokens 0..39."""
    import torch

    from skdirection import TruncatedSVDCompressor
    from skdirection.adapters.transformers import patch_embeddings, save_compressed

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.conftest import _tiny_llama

    model = _tiny_llama(51)
    model.save_pretrained(folder / "base")
    weight = model.get_input_embeddings().weight.detach().numpy()
    patch_embeddings(model, TruncatedSVDCompressor(4, device="cpu").fit(weight), "both")
    save_compressed(model, folder)
    with torch.no_grad():
        logits = model(input_ids=torch.arange(40)[None]).logits
    np.save(folder / "logits.npy", logits.numpy())


if __name__ == "__main__":
    main(sys.argv[1])
