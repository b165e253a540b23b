import numpy as np
import pytest
import torch

from skdirection._engine.backend import inference_device, map_rows, resolve_device


def test_auto_resolves_to_an_available_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_cpu_resolves():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("device", ["gpu", "tpu:0", "cuda:x", ""])
def test_unknown_device_names_the_problem(device):
    with pytest.raises(ValueError, match="device"):
        resolve_device(device)


def test_device_must_be_a_string():
    with pytest.raises(TypeError, match="device must be a string"):
        resolve_device(3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_clear_error(device):
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_inference_falls_back_to_cpu_when_cuda_is_gone():
    assert inference_device("cuda") == torch.device("cpu")


def test_map_rows_streams_in_chunks_and_keeps_dtype():
    X = np.arange(50, dtype=np.float64).reshape(25, 2)
    out = map_rows(
        lambda rows: rows * 2,
        X,
        torch.device("cpu"),
        X.dtype,
        chunk_rows=7,
        dtype=torch.float64,
    )
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, X * 2)
