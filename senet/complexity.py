"""Parameter and FLOP counting with the paper's convention.

One multiply-add is one FLOP (as in the ResNet paper and SENet's Table 2). Counted:
convolutions and fully connected layers, and the whole SE block (its pooling, its two
FC layers and the channel-wise scaling, paper section 4: "+0.01 GFLOPs"). Batch norm,
activations, element-wise sums and the network's other pooling layers are not counted,
as in the papers whose figures the project is checked against.

A module can take over its own count by defining ``flops(input_shape) -> int`` (per
image, input shape without the batch dimension); its children are then not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Complexity:
    """Parameters and multiply-adds of one forward pass of one image."""

    params: int
    flops: int

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def count_params(model: nn.Module) -> int:
    """Number of parameters (each shared tensor once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _own_counter(module: nn.Module) -> bool:
    return callable(getattr(module, "flops", None))


def complexity(model: nn.Module, input_size: tuple[int, ...] = (3, 224, 224)) -> Complexity:
    """Count ``model``'s parameters and FLOPs for one input of ``input_size`` (C, H, W).

    The forward pass runs in eval mode on the device of the model's parameters, which may
    be ``"meta"`` (build the model under ``with torch.device("meta"):`` to count without
    computing anything). The model's train/eval mode is restored afterwards.
    """
    skip: set[int] = set()
    for m in model.modules():
        if _own_counter(m):
            skip.update(id(c) for c in m.modules() if c is not m)
    total = [0]

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if id(module) in skip:
            return
        x = inputs[0]
        if _own_counter(module):
            total[0] += int(module.flops(x.shape[1:]))
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total[0] += output[0].numel() * k
        elif isinstance(module, nn.Linear):
            total[0] += output[0].numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if _own_counter(m) or isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return Complexity(count_params(model), total[0])
