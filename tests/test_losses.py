import pytest
import torch

from skdirection._engine.losses import (
    annealed_power,
    cosine_distance,
    direction_loss,
    element_error,
)


def test_paper_power_schedule():
    # alpha = 1 - 0.9 * epoch / 20, then 0.1 (method.md)
    assert annealed_power(0, 1.0, 0.1, 20) == pytest.approx(1.0)
    assert annealed_power(10, 1.0, 0.1, 20) == pytest.approx(0.55)
    assert annealed_power(20, 1.0, 0.1, 20) == pytest.approx(0.1)
    assert annealed_power(29, 1.0, 0.1, 20) == pytest.approx(0.1)


def test_cosine_distance_ignores_scale_and_sees_direction():
    x = torch.tensor([[1.0, 2.0], [1.0, 0.0]])
    assert torch.allclose(cosine_distance(3 * x, x), torch.zeros(2), atol=1e-6)
    assert torch.allclose(cosine_distance(-x, x), torch.full((2,), 2.0))


def test_element_error_matches_definition():
    x, x_hat = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, -4.0]])
    expected = ((1 + 1e-10) ** 0.5 + (4 + 1e-10) ** 0.5) / 2
    assert element_error(x_hat, x, 0.5).item() == pytest.approx(expected)


@pytest.mark.parametrize("power", [1.0, 0.55, 0.1])
def test_element_error_gradient_matches_autograd_of_the_definition(power):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    x_hat = torch.randn(6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    row_weights = torch.rand(6, generator=generator, dtype=torch.float64)
    (row_weights * element_error(x_hat, x, power)).sum().backward()
    fused = x_hat.grad.clone()
    x_hat.grad = None
    reference = ((x_hat - x).abs() + 1e-10).pow(power).mean(dim=1)
    (row_weights * reference).sum().backward()
    torch.testing.assert_close(fused, x_hat.grad)
    assert torch.autograd.gradcheck(
        lambda a: element_error(a, x, power), (x_hat.detach().requires_grad_(),)
    )


def test_weights_select_rows():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x_hat = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # second row orthogonal: distance 1
    kwargs = dict(cosine_weight=1.0, element_weight=0.0, element_power=1.0, rmse_weight=0.0)
    only_first = direction_loss(x_hat, x, torch.tensor([2.0, 0.0]), **kwargs)
    only_second = direction_loss(x_hat, x, torch.tensor([0.0, 2.0]), **kwargs)
    assert only_first.item() == pytest.approx(0.0, abs=1e-6)
    assert only_second.item() == pytest.approx(1.0)


def test_cosine_distance_matches_torch_in_values_and_gradients():
    import torch.nn.functional as F

    from skdirection._engine.losses import cosine_distance

    generator = torch.Generator().manual_seed(0)
    X_hat = torch.randn(40, 9, dtype=torch.float64, generator=generator)
    X = torch.randn(40, 9, dtype=torch.float64, generator=generator)
    X_hat[3], X[5] = 0.0, 0.0  # clamped norms
    X_hat.requires_grad_(True)
    X.requires_grad_(True)
    upstream = torch.randn(40, dtype=torch.float64, generator=generator)
    ours = cosine_distance(X_hat, X)
    theirs = 1 - F.cosine_similarity(X_hat, X, dim=1, eps=1e-6)
    torch.testing.assert_close(ours, theirs)
    for mine, reference in zip(
        torch.autograd.grad((ours * upstream).sum(), (X_hat, X)),
        torch.autograd.grad((theirs * upstream).sum(), (X_hat, X)),
        strict=True,
    ):
        torch.testing.assert_close(mine, reference)
