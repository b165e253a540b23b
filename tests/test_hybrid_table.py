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
    """A float16 head part and a norm-scaled rank-4 part whose rows interleave: the
    part ids, not a prefix, say which row is where. Returns the table, the part id
    of every row and the rank-4 part."""
    assignment = torch.tensor([0] * 10 + [1] * 20)[
        torch.randperm(30, generator=torch.Generator().manual_seed(0))
    ]
    head_rows, tail_rows = X[assignment == 0], X[assignment == 1]
    basis = torch.linalg.svd(tail_rows, full_matrices=False).Vh[:4]
    latent = QuantizedTable.from_rows(tail_rows @ basis.T, 8)
    lowrank = NormScaledTable(
        LinearDecodedTable(latent, basis.half()), tail_rows.norm(dim=1).half()
    )
    head = DenseTable(head_rows.half())
    return PartitionedTable([head, lowrank], assignment), assignment, lowrank


def test_partitioned_decodes_each_part(X):
    table, assignment, lowrank = _nested(X)
    assert not torch.equal(assignment, assignment.sort().values)  # not a prefix
    decoded = table.decode()
    head, tail = assignment == 0, assignment == 1
    torch.testing.assert_close(decoded[head], X[head].half().float())
    # Each tail row is its own rank-4 decoding, with its norm restored (to float16).
    torch.testing.assert_close(decoded[tail], lowrank.decode().float())
    torch.testing.assert_close(
        decoded[tail].norm(dim=1), X[tail].norm(dim=1).half().float(), rtol=1e-5, atol=1e-5
    )
    cosines = torch.nn.functional.cosine_similarity(decoded[tail], X[tail])
    assert 0.3 < float(cosines.mean()) < 0.999  # rank 4 of 12: close, not exact
    idx = torch.tensor([[3, 25], [11, 0]])
    torch.testing.assert_close(table(idx), decoded[idx])


def test_bytes_count_every_part(X):
    table = _nested(X)[0]
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
    table = _nested(X)[0]
    save_table(table, tmp_path / "t.safetensors")
    loaded = load_table(tmp_path / "t.safetensors")
    assert type(loaded) is PartitionedTable and loaded.n_bytes == table.n_bytes
    torch.testing.assert_close(loaded.decode(), table.decode())


def test_bad_assignment(X):
    with pytest.raises(ValueError, match="assigned"):
        PartitionedTable(
            [DenseTable(X[:5]), DenseTable(X[5:])], torch.zeros(30, dtype=torch.long)
        )


def test_values_count_each_part_as_it_counts_them(X):
    # Packed scalar codes count one value a code (not a byte), also inside a part.
    ids = torch.tensor([0, 1] * 15)
    quantized = QuantizedTable.from_rows(X[ids == 0], 4)
    dense = DenseTable(X[ids == 1])
    table = PartitionedTable([quantized, dense], ids)
    assert quantized.n_parameters == 15 * 12 + 2 * 15  # codes, and a scale and offset a row
    assert table.n_parameters == quantized.n_parameters + 15 * 12 + 4  # + 30 one-bit ids
    assert table.n_bytes == quantized.n_bytes + dense.n_bytes + 4
