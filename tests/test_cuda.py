"""The CUDA path: runs where a GPU is present, skipped elsewhere."""

import pickle

import numpy as np
import pytest
import torch

from skdirection import (
    DirectionAutoEncoder,
    ProductQuantizer,
    ScalarQuantizer,
    TruncatedSVDCompressor,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
FAST = dict(max_iter=5, learning_rate=1e-2, lr_step_size=100, random_state=0)


def test_auto_device_picks_cuda(embeddings):
    autoencoder = DirectionAutoEncoder(3, **FAST).fit(embeddings)
    assert autoencoder.device_.startswith("cuda")
    assert isinstance(autoencoder.transform(embeddings), np.ndarray)


def test_cuda_fit_is_reproducible(embeddings):
    first = DirectionAutoEncoder(3, device="cuda", **FAST).fit(embeddings)
    second = DirectionAutoEncoder(3, device="cuda", **FAST).fit(embeddings)
    np.testing.assert_array_equal(first.transform(embeddings), second.transform(embeddings))


def test_cuda_and_cpu_autoencoders_reach_the_same_quality(embeddings):
    params = {**FAST, "max_iter": 20}
    gpu = DirectionAutoEncoder(4, device="cuda", **params).fit(embeddings).score(embeddings)
    cpu = DirectionAutoEncoder(4, device="cpu", **params).fit(embeddings).score(embeddings)
    assert gpu == pytest.approx(cpu, abs=0.02)


@pytest.mark.parametrize("algorithm", ["covariance_eigh", "randomized", "exact"])
def test_cuda_svd_matches_cpu(embeddings, algorithm):
    X = embeddings.astype(np.float64)
    gpu = TruncatedSVDCompressor(4, algorithm=algorithm, device="cuda", random_state=0).fit(
        X
    )
    cpu = TruncatedSVDCompressor(4, algorithm=algorithm, device="cpu", random_state=0).fit(
        X
    )
    assert gpu.device_.startswith("cuda")
    np.testing.assert_allclose(gpu.singular_values_, cpu.singular_values_, rtol=1e-6)
    np.testing.assert_allclose(gpu.components_, cpu.components_, atol=1e-6)


def test_cuda_model_pickles_without_tensors(embeddings):
    autoencoder = DirectionAutoEncoder(3, device="cuda", **FAST).fit(embeddings)
    payload = pickle.dumps(autoencoder)
    restored = pickle.loads(payload)
    assert b"torch" not in payload
    np.testing.assert_array_equal(
        restored.transform(embeddings), autoencoder.transform(embeddings)
    )


def test_cuda_product_quantizer_matches_cpu_quality(embeddings):
    X = embeddings.astype(np.float32)
    gpu = ProductQuantizer(4, n_centroids=32, device="cuda", random_state=0).fit(X)
    cpu = ProductQuantizer(4, n_centroids=32, device="cpu", random_state=0).fit(X)
    # Same starting rows; sums in another order may flip a few ties.
    assert gpu.score(X) == pytest.approx(cpu.score(X), abs=0.01)
    assert isinstance(gpu.compress(X).decode(), torch.Tensor)


def test_cuda_scalar_quantizer_matches_cpu(embeddings):
    gpu = ScalarQuantizer(3, group_size=8, device="cuda").fit(embeddings)
    cpu = ScalarQuantizer(3, group_size=8, device="cpu").fit(embeddings)
    np.testing.assert_allclose(
        gpu.inverse_transform(gpu.transform(embeddings)),
        cpu.inverse_transform(cpu.transform(embeddings)),
        atol=1e-3,
    )
    table = gpu.compress(embeddings)
    assert table.decode().device.type == "cpu"
    np.testing.assert_allclose(
        table.decode().numpy(), cpu.compress(embeddings).decode().numpy(), atol=1e-3
    )


def test_quantized_table_logits_on_cuda(embeddings):
    # Every layout of packed codes (8, 4, 3 bits; per row and in groups) gives on the
    # GPU the logits of its decoded table.
    h = torch.randn(3, embeddings.shape[1], generator=torch.Generator().manual_seed(0))
    for bits, group_size in ((8, None), (4, None), (3, 8), (2, 8)):
        table = ScalarQuantizer(bits, group_size=group_size).fit(embeddings)
        table = table.compress(embeddings).to("cuda")
        expected = h.cuda() @ table.decode().float().T
        torch.testing.assert_close(table.linear(h.cuda()), expected, rtol=1e-4, atol=1e-4)


def test_centroid_search_ignores_tf32(embeddings):
    from skdirection._engine.kmeans import nearest_centroids
    from skdirection.codecs.product import blocked

    rows = torch.from_numpy(embeddings).float()
    blocks = blocked(rows, 4)
    # Codebooks of near-duplicates: only full float32 precision ranks them right.
    books = blocks[:, :64] + 1e-3 * torch.randn(
        blocks.shape[0], 64, 4, generator=torch.Generator().manual_seed(0)
    )
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        on_gpu = nearest_centroids(blocks.cuda(), books.cuda()).cpu()
    finally:
        torch.set_float32_matmul_precision(precision)
    assert torch.get_float32_matmul_precision() == precision
    torch.testing.assert_close(on_gpu, nearest_centroids(blocks, books))


def test_one_part_partitioned_table_built_on_cuda(embeddings):
    # With one part no ids are stored: the empty ids must still sit with the rows.
    from skdirection import DenseTable, PartitionedTable

    rows = torch.from_numpy(embeddings).cuda()
    ids = torch.zeros(len(rows), dtype=torch.long, device="cuda")
    table = PartitionedTable([DenseTable(rows)], ids)
    assert table.packed_assignment.is_cuda
    torch.testing.assert_close(table.decode(), rows)
    h = torch.randn(2, rows.shape[1], device="cuda")
    torch.testing.assert_close(table.linear(h), h @ rows.T, rtol=1e-4, atol=1e-4)
