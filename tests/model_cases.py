"""Small models of every family and code path, for the tests of tools and exporters."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import torch
from torch import nn

import senet
from tests.conftest import randomise

# (name, keywords, input side): every family, its SE and plain paths, the stochastic-depth path,
# the deep stem and the odd layouts (ceil-mode pooling, valid padding, grouped convolutions)
FAMILY_CASES = [
    ("se_resnet18", {"se_stages": (3, 4)}, 64),
    ("se_resnext26_32x4d", {"stem": "deep", "down_kernel": 3, "drop_path_rate": 0.1}, 64),
    ("cifar_se_resnet20", {}, 32),
    ("se_wrn16_8", {}, 32),
    ("se_shake_shake26_2x32d", {}, 32),
    ("se_vgg16_bn", {"mlp_width": 32}, 256),
    ("se_bn_inception", {}, 64),
    ("se_inception_resnet_v2", {"blocks": (1, 1, 1)}, 139),
    ("se_mobilenet", {"width_mult": 0.25}, 64),
    ("se_shufflenet_g3", {"layers": (2, 1, 1)}, 64),
]
PLACEMENT_CASES = [("cifar_se_resnet20", {"placement": p}, 32) for p in ("pre", "post", "identity", "conv3x3")]
IDS = [c[0] for c in FAMILY_CASES]


def small(name: str, kwargs: dict, side: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model in eval mode with random BN statistics, an input and a second input of another
    batch size and spatial size (for the dynamic-shape checks)."""
    torch.manual_seed(0)
    model = randomise(senet.create_model(name, num_classes=5, **kwargs)).eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(2, 3, side, side, generator=g), torch.randn(1, 3, side + 32, side + 64, generator=g)


def assert_close(out: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    err = (out - ref).abs().max().item()
    assert err <= rel * ref.abs().max().item(), f"max |diff| {err:.3g} for logits up to {ref.abs().max().item():.3g}"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
