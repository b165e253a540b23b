import numpy as np
import pytest
import torch

from skdirection import (
    DirectionAutoEncoder,
    LowRankTable,
    TruncatedSVDCompressor,
    load_table,
    save_table,
)

from .conftest import names


@pytest.fixture(params=["svd", "centered_svd", "autoencoder", "deep_autoencoder"])
def fitted_table(request, embeddings):
    models = {
        "svd": TruncatedSVDCompressor(4, device="cpu"),
        "centered_svd": TruncatedSVDCompressor(4, center=True, device="cpu"),
        "autoencoder": DirectionAutoEncoder(4, max_iter=2, device="cpu", random_state=0),
        "deep_autoencoder": DirectionAutoEncoder(
            4, hidden_layer_sizes=(8,), max_iter=2, device="cpu", random_state=0
        ),
    }
    model = models[request.param].fit(embeddings)
    return model, model.compress(embeddings)


def test_table_decodes_like_inverse_transform(fitted_table, embeddings):
    model, table = fitted_table
    expected = model.inverse_transform(model.transform(embeddings))
    np.testing.assert_allclose(table.decode().numpy(), expected, rtol=1e-5, atol=1e-5)
    assert table.num_embeddings == embeddings.shape[0]
    assert table.embedding_dim == embeddings.shape[1]


def test_table_counts_every_stored_value(fitted_table):
    _, table = fitted_table
    assert table.n_parameters == sum(p.numel() for p in table.parameters())
    assert table.n_bytes == 4 * table.n_parameters
    assert not any(p.requires_grad for p in table.parameters())


def test_safetensors_round_trip(fitted_table, tmp_path):
    _, table = fitted_table
    save_table(table, tmp_path / "table.safetensors")
    loaded = load_table(tmp_path / "table.safetensors")
    assert isinstance(loaded, LowRankTable)
    rows = torch.tensor([0, 5, 9])
    assert torch.equal(loaded(rows), table(rows))
    assert loaded.n_parameters == table.n_parameters


def test_truncated_file_is_a_clear_error(fitted_table, tmp_path):
    _, table = fitted_table
    path = tmp_path / "table.safetensors"
    save_table(table, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=names(path, "not a readable safetensors file")):
        load_table(path)


def test_tampered_metadata_is_a_clear_error(fitted_table, tmp_path):
    from safetensors.torch import save_file

    _, table = fitted_table
    path = tmp_path / "table.safetensors"
    tensors = {k: v.contiguous() for k, v in table.state_dict().items()}
    save_file(tensors, str(path), metadata={"skdirection_table": '{"class": "os.system"}'})
    with pytest.raises(ValueError, match=names(path, "damaged skdirection table")):
        load_table(path)
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=names(path, "holds no skdirection table")):
        load_table(path)
