"""Shake-Shake (Gastaldi 2017): forward weights ``a``, backward weights ``b``, checked by hand."""

import pytest
import torch

from senet.layers.shake import ShakeShakeFunction, shake_shake
from senet.models.shake_shake import ShakeResNet

N = 4


def _branches(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(N, 3, 2, 2, generator=g, dtype=torch.float64).requires_grad_()
    x2 = torch.randn(N, 3, 2, 2, generator=g, dtype=torch.float64).requires_grad_()
    grad = torch.randn(N, 3, 2, 2, generator=g, dtype=torch.float64)
    return x1, x2, grad


def _run(forward: str, backward: str, level: str, seed: int = 123, training: bool = True):
    x1, x2, grad = _branches()
    torch.manual_seed(seed)
    y = shake_shake(x1, x2, forward, backward, level, training)
    y.backward(grad)
    return x1, x2, grad, y


def _per_image(t: torch.Tensor) -> torch.Tensor:
    """The single value each image's tensor holds (asserting it is constant within the image)."""
    flat = t.reshape(t.shape[0], -1)
    assert torch.allclose(flat, flat[:, :1].expand_as(flat), atol=1e-9)
    return flat[:, 0]


def test_shake_shake_image_matches_hand_computation():
    x1, x2, grad, y = _run("shake", "shake", "image")
    # The documented draws: a = torch.rand(N) then b = torch.rand(N), float32, global CPU RNG.
    torch.manual_seed(123)
    a = torch.rand(N).double()
    b = torch.rand(N).double()
    for i in range(N):
        expected = a[i] * x1[i] + (1 - a[i]) * x2[i]
        torch.testing.assert_close(y[i], expected.detach())
        torch.testing.assert_close(x1.grad[i], b[i] * grad[i])
        torch.testing.assert_close(x2.grad[i], (1 - b[i]) * grad[i])
    assert not torch.allclose(a, b)  # b is drawn independently of a


def test_forward_and_backward_weights_recovered_from_outputs():
    """Without relying on the draw order: ``a`` read off the output, ``b`` off the gradients."""
    x1, x2, grad, y = _run("shake", "shake", "image", seed=7)
    a = _per_image(((y - x2) / (x1 - x2)).detach())
    b = _per_image(x1.grad / grad)
    torch.testing.assert_close(x2.grad, (1 - b).view(N, 1, 1, 1) * grad)
    assert ((a > 0) & (a < 1)).all() and ((b > 0) & (b < 1)).all()
    assert len(set(a.tolist())) == N  # one coefficient per image
    assert not torch.allclose(a, b)
    # plain autograd would have given a * grad: Shake-Shake's backward differs from it
    assert not torch.allclose(x1.grad, a.view(N, 1, 1, 1) * grad)


def test_batch_level_uses_one_coefficient_for_the_whole_batch():
    x1, x2, grad, y = _run("shake", "shake", "batch")
    a = _per_image(((y - x2) / (x1 - x2)).detach())
    b = _per_image(x1.grad / grad)
    assert torch.allclose(a, a[:1].expand(N)) and torch.allclose(b, b[:1].expand(N))
    torch.manual_seed(123)
    expected_a, expected_b = torch.rand(1).double(), torch.rand(1).double()
    torch.testing.assert_close(a, expected_a.expand(N))
    torch.testing.assert_close(b, expected_b.expand(N))


def test_keep_reuses_the_forward_coefficient():
    x1, x2, grad, y = _run("shake", "keep", "image")
    a = _per_image(((y - x2) / (x1 - x2)).detach())
    torch.testing.assert_close(x1.grad, a.view(N, 1, 1, 1) * grad)
    torch.testing.assert_close(x2.grad, (1 - a).view(N, 1, 1, 1) * grad)


def test_shake_even_scales_gradients_by_half():
    x1, x2, grad, y = _run("shake", "even", "image")
    a = _per_image(((y - x2) / (x1 - x2)).detach())
    assert len(set(a.tolist())) == N
    torch.testing.assert_close(x1.grad, 0.5 * grad)
    torch.testing.assert_close(x2.grad, 0.5 * grad)


def test_even_forward_with_shake_backward():
    x1, x2, grad, y = _run("even", "shake", "image")
    torch.testing.assert_close(y, (0.5 * (x1 + x2)).detach())
    b = _per_image(x1.grad / grad)
    assert len(set(b.tolist())) == N
    torch.manual_seed(123)  # forward "even" draws nothing, so b is the first draw
    torch.testing.assert_close(b, torch.rand(N).double())


def test_eval_uses_half_and_draws_nothing():
    x1, x2, grad = _branches()
    state = torch.get_rng_state()
    y = shake_shake(x1, x2, "shake", "shake", "image", training=False)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(y, (0.5 * x1 + 0.5 * x2).detach())
    y.backward(grad)
    torch.testing.assert_close(x1.grad, 0.5 * grad)


def test_same_seed_same_draws_and_different_seed_different_draws():
    _, _, _, y1 = _run("shake", "shake", "image", seed=5)
    _, _, _, y2 = _run("shake", "shake", "image", seed=5)
    _, _, _, y3 = _run("shake", "shake", "image", seed=6)
    assert torch.equal(y1, y2) and not torch.allclose(y1, y3)


def test_function_gradcheck_with_fixed_weights():
    x1, x2, _ = _branches()
    a = torch.tensor([0.2, 0.9, 0.5, 0.1], dtype=torch.float64).view(N, 1, 1, 1)
    # with b = a the function is the linear map a*x1 + (1-a)*x2, whose exact gradient gradcheck knows
    assert torch.autograd.gradcheck(lambda u, v: ShakeShakeFunction.apply(u, v, a, a), (x1, x2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"forward": "keep"}, "shake_forward"),
        ({"backward": "odd"}, "shake_backward"),
        ({"level": "pixel"}, "shake_level"),
    ],
)
def test_invalid_options_raise(kwargs, match):
    x1, x2, _ = _branches()
    with pytest.raises(ValueError, match=match):
        shake_shake(x1, x2, **kwargs)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="one shape"):
        shake_shake(torch.zeros(2, 3), torch.zeros(2, 4))


def test_bf16_branches_keep_their_dtype():
    x1 = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    x2 = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    y = shake_shake(x1, x2)
    assert y.dtype == torch.bfloat16
    y.sum().backward()
    assert x1.grad.dtype == torch.bfloat16 and x2.grad.dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_draws_come_from_the_tensors_device_generator():
    x1, x2 = torch.randn(N, 2, device="cuda"), torch.randn(N, 2, device="cuda")
    cpu_state = torch.get_rng_state()
    torch.cuda.manual_seed(3)
    y = shake_shake(x1, x2, "shake", "keep", "image")
    assert torch.equal(torch.get_rng_state(), cpu_state)
    torch.cuda.manual_seed(3)
    a = torch.rand(N, device="cuda").view(N, 1)
    torch.testing.assert_close(y, a * x1 + (1 - a) * x2)


def test_network_is_stochastic_in_training_and_deterministic_in_eval():
    torch.manual_seed(0)
    model = ShakeResNet(8, 8, num_classes=3)
    x = torch.randn(2, 3, 16, 16)

    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return model(x).detach()

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))
    model.eval()
    assert torch.equal(run(1), run(2))
    even = ShakeResNet(8, 8, num_classes=3, shake_forward="even", shake_backward="even")
    even.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    train_even = even(x)
    torch.manual_seed(2)
    assert torch.equal(train_even, even(x))  # Even-Even draws nothing: training mode is deterministic
