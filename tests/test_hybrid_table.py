import numpy as np
import pytest
import torch

from skdirection import (
    DenseTable,
    LinearDecodedTable,
    NormScaledTable,
    PartitionedTable,
    QuantizedTable,
    load_table,
    save_table,
)


@pytest.fixture
def X():
    return torch.from_numpy(
        np.random.RandomState(0).normal(size=(30, 12)).astype(np.float32)
    )


def _nested(X):
    basis = torch.linalg.svd(X, full_matrices=False).Vh[:4]
    latent = QuantizedTable.from_rows(X[10:] @ basis.T, 8)
    lowrank = NormScaledTable(
        LinearDecodedTable(latent, basis.half()), X[10:].norm(dim=1).half()
    )
    head = DenseTable(X[:10].half())
    # head rows and tail rows interleave: part ids, not a prefix, decide
    assignment = torch.tensor([0] * 10 + [1] * 20)
    order = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    return PartitionedTable([head, lowrank], assignment), order


def test_partitioned_decodes_each_part(X):
    table, _ = _nested(X)
    decoded = table.decode()
    torch.testing.assert_close(decoded[:10], X[:10].half().float())
    # norms are restored exactly (to float16) even though the rank-4 direction is not
    torch.testing.assert_close(
        decoded[10:].norm(dim=1), X[10:].norm(dim=1).half().float(), rtol=1e-5, atol=1e-5
    )
    idx = torch.tensor([[3, 25], [11, 0]])
    torch.testing.assert_close(table(idx), decoded[idx])


def test_bytes_count_every_part(X):
    table, _ = _nested(X)
    expected = (
        10 * 12 * 2  # float16 head rows
        + 20 * (4 + 2 * 2)  # int8 latent codes + float16 scale, offset
        + 4 * 12 * 2  # float16 basis
        + 20 * 2  # float16 norms
        + 4  # 30 one-bit part ids, packed
    )
    assert table.n_bytes == expected


def test_interleaved_assignment(X):
    assignment = torch.tensor([i % 3 for i in range(30)])
    parts = [DenseTable(X[assignment == k]) for k in range(3)]
    table = PartitionedTable(parts, assignment)
    torch.testing.assert_close(table.decode(), X)
    assert table.n_bytes == 30 * 12 * 4 + 8  # two-bit ids: 60 bits -> 8 bytes


def test_save_load_round_trip(X, tmp_path):
    table, _ = _nested(X)
    save_table(table, tmp_path / "t.safetensors")
    loaded = load_table(tmp_path / "t.safetensors")
    assert type(loaded) is PartitionedTable and loaded.n_bytes == table.n_bytes
    torch.testing.assert_close(loaded.decode(), table.decode())


def test_bad_assignment(X):
    with pytest.raises(ValueError, match="assigned"):
        PartitionedTable(
            [DenseTable(X[:5]), DenseTable(X[5:])], torch.zeros(30, dtype=torch.long)
        )
