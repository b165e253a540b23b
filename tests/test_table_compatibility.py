"""Tables and patches saved by an earlier version load and decode identically.

The fixtures in tests/data/tables_v1 were written by tests/data/make_table_fixtures.py
with the package as it stood before its reorganisation into codecs and estimators.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from skdirection import load_table

from .conftest import names

FIXTURES = Path(__file__).parent / "data" / "tables_v1"
DECODED = np.load(FIXTURES / "decoded.npz")
# Decoders whose hidden layers sum products in the order the machine's BLAS kernel picks:
# the same stored tensors decode to within a float32 rounding of their largest terms, not
# bit for bit, from one CPU to another (on an AMD EPYC, 21% of autoencoder_hidden's
# values differed by at most 1.2e-7 from those written on the machine that made them).
SUMMED_BY_THE_MACHINES_BLAS = {"autoencoder_hidden"}


@pytest.mark.parametrize("name", sorted(DECODED.files))
def test_saved_tables_decode_bit_identically(name):
    table = load_table(FIXTURES / f"{name}.safetensors")
    with torch.no_grad():
        decoded = table.decode().numpy()
    if name in SUMMED_BY_THE_MACHINES_BLAS:
        np.testing.assert_allclose(decoded, DECODED[name], rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(decoded, DECODED[name])
    rows = torch.tensor([[3, 0], [299, 7]])
    # A matrix product over a few rows may round differently from one over all of them.
    np.testing.assert_allclose(
        table(rows).detach().numpy(), DECODED[name][rows.numpy()], rtol=1e-5, atol=1e-6
    )


@pytest.mark.transformers
def test_a_saved_patch_loads_onto_its_base_model():
    from transformers import AutoModelForCausalLM

    from skdirection.adapters.transformers import load_compressed

    folder = FIXTURES / "patch_both"
    model = AutoModelForCausalLM.from_pretrained(
        folder / "base", local_files_only=True
    ).eval()
    assert load_compressed(folder, model=model) is model
    assert model._skdirection_patch["target"] == "both"
    with pytest.raises(ValueError, match=names(folder, "earlier save_compressed")):
        load_compressed(folder)
    with torch.no_grad():
        logits = model(input_ids=torch.arange(40)[None]).logits
    # The fixture's logits multiplied the decoded matrix; the head now computes them
    # from the stored form, which rounds differently (the table decodes bit-identically).
    np.testing.assert_allclose(
        logits.numpy(), np.load(folder / "logits.npy"), rtol=1e-5, atol=1e-6
    )
