"""The numbers a patched model computes, for every codec and target.

A patched model must compute what the same model computes with a plain ``nn.Embedding``
and ``nn.Linear`` holding the decoded table (and, for a lossless table, what the
original model computes). Only behaviour is compared, never how the compressed modules
get there, so that a head computing its logits from the stored form stays covered.
"""

import copy

import numpy as np
import pytest
import torch

from skdirection import (
    DeduplicatedTable,
    DenseTable,
    DirectionAutoEncoder,
    FrequencyMixedCompressor,
    PartitionedTable,
    ProductQuantizer,
    ScalarQuantizer,
    TruncatedSVDCompressor,
)
from skdirection.adapters.transformers import patch_embeddings, unpatch_embeddings

pytestmark = pytest.mark.transformers

# Rows enough for the frequency-aware mix to give rows different codecs.
VOCAB = 512
TARGETS = ["input", "output", "both"]


def _codecs():
    """Fitted compressors (or tables) by name: each ``(weight, counts) -> table``."""

    def fitted(estimator, weighted=False):
        def make(weight, counts):
            sample_weight = counts if weighted else None
            return estimator.fit(weight, sample_weight=sample_weight).compress(weight)

        return make

    return {
        "svd": fitted(TruncatedSVDCompressor(4, device="cpu", random_state=0)),
        "autoencoder_hidden": fitted(
            DirectionAutoEncoder(
                4,
                hidden_layer_sizes=(8,),
                max_iter=1,
                batch_size=64,
                device="cpu",
                random_state=0,
            )
        ),
        "int4_g32": fitted(ScalarQuantizer(4, group_size=32)),
        "int2": fitted(ScalarQuantizer(2)),
        "pq": fitted(ProductQuantizer(4, n_centroids=16, device="cpu", random_state=0)),
        "mixed": fitted(
            FrequencyMixedCompressor(6, ranks=(4,), block_sizes=(4,), random_state=0),
            weighted=True,
        ),
        "float16": lambda weight, counts: DenseTable(torch.from_numpy(weight).half()),
        "mixed_repeated_rows": _repeated_rows_mixed,
    }


def _repeated_rows_mixed(weight, counts):
    # Half the rows copied from the other half: stored once, in a DeduplicatedTable.
    repeated = np.concatenate([weight[: VOCAB // 2]] * 2)
    mixed = FrequencyMixedCompressor(6, ranks=(4,), block_sizes=(4,), random_state=0)
    table = mixed.fit(repeated, sample_weight=counts).compress(repeated)
    assert isinstance(table, DeduplicatedTable)
    return table


@pytest.fixture(scope="module")
def tied_llama():
    from .conftest import _tiny_llama

    return _tiny_llama(VOCAB)


@pytest.fixture(scope="module")
def tables(tied_llama):
    weight = tied_llama.get_input_embeddings().weight.detach().numpy().copy()
    counts = np.random.RandomState(0).zipf(1.3, size=VOCAB).astype(float)
    return {name: make(weight, counts) for name, make in _codecs().items()}


def _ids():
    return torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _with_plain_weights(model, input_weight, head_weight):
    """A copy of ``model`` whose input embedding and head are plain torch layers holding
    the given matrices (untied), everything else unchanged."""
    reference = copy.deepcopy(model)
    reference.get_input_embeddings().weight = torch.nn.Parameter(input_weight.clone())
    reference.get_output_embeddings().weight = torch.nn.Parameter(head_weight.clone())
    return reference


def _tolerance(expected):
    # Relative to the logits' scale: a head off by a constant factor of 0.999 fails.
    return dict(rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def _assert_same_logits(actual, expected):
    torch.testing.assert_close(actual, expected, **_tolerance(expected))


def _decoded_reference(model, table, target):
    original = model.get_input_embeddings().weight.detach()
    with torch.no_grad():
        decoded = table.decode().to(original.dtype)
    input_weight = original if target == "output" else decoded
    head_weight = original if target == "input" else decoded
    return _with_plain_weights(model, input_weight, head_weight)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("codec", list(_codecs()))
def test_patched_logits_equal_a_dense_model_of_the_decoded_table(
    tied_llama, tables, codec, target
):
    model, ids, table = tied_llama, _ids(), tables[codec]
    original = _logits(model, ids)
    expected = _logits(_decoded_reference(model, table, target), ids)
    # The codec is lossy: the comparison below could not pass with the original matrix.
    assert not torch.allclose(original, expected, **_tolerance(expected))
    patch_embeddings(model, table, target=target)
    try:
        _assert_same_logits(_logits(model, ids), expected)
    finally:
        unpatch_embeddings(model)


def test_the_mixed_table_really_mixes_codecs(tables):
    table = tables["mixed"]
    assert isinstance(table, PartitionedTable)
    kinds = {type(part).__name__ for part in table.parts}
    assert len(table.parts) >= 3 and "DenseTable" in kinds


@pytest.mark.parametrize("target", TARGETS)
def test_lossless_table_gives_the_original_logits(tied_llama, target):
    model, ids = tied_llama, _ids()
    expected = _logits(model, ids)
    lossless = DenseTable(model.get_input_embeddings().weight.detach().clone())
    patch_embeddings(model, lossless, target=target)
    try:
        _assert_same_logits(_logits(model, ids), expected)
    finally:
        unpatch_embeddings(model)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("codec", ["svd", "int4_g32"])
def test_a_head_with_a_bias_keeps_it(tiny_bert, codec, target):
    """BERT's masked-LM head adds a bias to the logits: the patched head adds it too."""
    model = tiny_bert
    with torch.no_grad():
        model.cls.predictions.decoder.bias.normal_(0, 1.0)  # large enough to matter
    weight = model.get_input_embeddings().weight.detach().numpy().copy()
    table = _codecs()[codec](weight, None)
    ids = torch.randint(
        0, weight.shape[0], (2, 16), generator=torch.Generator().manual_seed(0)
    )
    expected = _logits(_decoded_reference(model, table, target), ids)
    patch_embeddings(model, table, target=target)
    _assert_same_logits(_logits(model, ids), expected)


def test_untied_head_patched_alone(tiny_llama_untied):
    model, ids = tiny_llama_untied, _ids() % tiny_llama_untied.config.vocab_size
    head = model.get_output_embeddings().weight.detach()
    table = ScalarQuantizer(2).fit(head.numpy()).compress(head.numpy())
    with torch.no_grad():
        decoded = table.decode()
    expected = _logits(
        _with_plain_weights(model, model.get_input_embeddings().weight.detach(), decoded),
        ids,
    )
    patch_embeddings(model, table, target="output")
    _assert_same_logits(_logits(model, ids), expected)
