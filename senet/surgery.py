"""SE blocks in networks you already have: :func:`add_se` (paper section 4, spec section 2).

``add_se(model)`` finds where the paper puts SE blocks and inserts them, in place:

* **residual blocks** (torchvision ``BasicBlock`` / ``Bottleneck``, timm ``ResNet`` blocks,
  senet's own ResNet blocks, and any block described by a :class:`ResidualLayout`): SE on the
  residual branch before the sum (Fig. 3), or at another ``placement`` (Tables 14-15). A block is
  replaced by :class:`SEResidual`, which keeps the block's own submodules under their own names
  and runs them through :class:`~senet.layers.ResidualUnit`, the project's single definition
  of the placements;
* **plain stacks** (VGG-like ``nn.Sequential``): SE after each convolution's non-linearity
  (``Conv2d``, optional norm layers, activation): the activation is wrapped in :class:`SEAfter`.

When a network has residual blocks, only they get SE (stems and other plain parts keep none, as
in the paper's SE-ResNets); otherwise every conv + activation of its ``nn.Sequential`` stacks
does.

Existing weights are untouched: the returned model is the model passed in (changed in place),
its parameters are the same ``Parameter`` objects under the same names (a state dict of the
original network still loads with ``strict=False``: only ``*.se.*`` keys are missing). Build
the optimizer after calling ``add_se``. New SE layers are initialised as senet's own SE models
are (He initialisation, zero biases), on the device and dtype of the block's weights.

Module types are recognised by exact type. Any other type that contains convolutions is an
error naming it; :func:`register_se_rule` tells ``add_se`` what to do with it (the extension
point): a :class:`ResidualLayout`, a function, :data:`DESCEND` or ``None``. A block class can
also carry its layout itself, as a class attribute ``se_layout``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Union

import torch
from torch import nn

from senet.layers import ResidualUnit, SEConfig, SqueezeExcite, make_block_se, runs_children_in_order
from senet.models._features import module_stages

DESCEND = "descend"  #: rule: the module is a container, look inside it

SERuleFn = Callable[[nn.Module, SEConfig, int], nn.Module]


@dataclass(frozen=True)
class ResidualLayout:
    """How a residual block computes ``act(shortcut(x) + branch(x))``, by the names of its children.

    Args:
        branch: children applied in this order form the residual branch (a name may repeat,
            e.g. torchvision's shared ``relu``; a child that is ``None`` on the block is skipped).
        shortcut: child applied to the input on the identity path, when not ``None`` on the block.
        act: child applied after the sum (``None``: no activation).
        conv3x3: index in ``branch`` after which ``placement="conv3x3"`` puts SE (after the 3x3
            convolution and its norm and activation); ``None`` if the block has no such point.

    The channels the SE block sees are read from the branch: the first convolution's input
    channels, and the channels after the last convolution or norm layer (and after
    ``branch[conv3x3]``).
    """

    branch: tuple[str, ...]
    shortcut: str | None = "downsample"
    act: str | None = None
    conv3x3: int | None = None


SERule = Union[ResidualLayout, SERuleFn, str, None]

_TV_BASIC = ResidualLayout(("conv1", "bn1", "relu", "conv2", "bn2"), "downsample", "relu", conv3x3=2)
_TV_BOTTLENECK = ResidualLayout(("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"),
                                "downsample", "relu", conv3x3=5)
# timm's own SE-ResNets apply SE just before ``drop_path``; here SE follows the whole branch,
# ``drop_path`` included: the same network in eval mode (and without stochastic depth).
_TIMM_BASIC = ResidualLayout(("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2", "drop_path"),
                             "downsample", "act2", conv3x3=4)
_TIMM_BOTTLENECK = ResidualLayout(("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3",
                                   "drop_path"), "downsample", "act3", conv3x3=7)


def _senet_block(block: nn.Module, se: SEConfig, stage: int) -> nn.Module:
    """senet's ResNet blocks have an ``se`` slot already: fill it."""
    if block.se is not None:
        raise ValueError(f"{type(block).__name__} already has an SE block")
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    mid = block.conv2.out_channels if hasattr(block, "bn3") else block.conv1.out_channels
    block.se = _new_se(se, stage, block.conv1.in_channels, last_bn.num_features, mid, block.conv1.weight)
    block.placement = se.placement
    return block


# Built-in rules, keyed by qualified type name so that neither torchvision nor timm is imported.
_RULES: dict[Any, SERule] = {
    "torchvision.models.resnet.BasicBlock": _TV_BASIC,
    "torchvision.models.resnet.Bottleneck": _TV_BOTTLENECK,
    "timm.models.resnet.BasicBlock": _TIMM_BASIC,
    "timm.models.resnet.Bottleneck": _TIMM_BOTTLENECK,
    "senet.models.resnet.BasicBlock": _senet_block,
    "senet.models.resnet.Bottleneck": _senet_block,
    "torchvision.models.resnet.ResNet": DESCEND,
    "torchvision.models.vgg.VGG": DESCEND,
    "timm.models.resnet.ResNet": DESCEND,
    "timm.models.vgg.VGG": DESCEND,
    "senet.models.resnet.ResNet": DESCEND,
    "timm.models.vgg.ConvMlp": None,  # VGG's FC classifier stored as convolutions: no SE
    "senet.models.resnet.Stem": None,
}

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_ACTS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
         nn.Hardswish, nn.Hardtanh, nn.Tanh, nn.Sigmoid)
_UNSET = object()


def register_se_rule(module_type: type | str, rule: SERule) -> None:
    """Tell :func:`add_se` what to do with modules of exactly ``module_type``.

    ``module_type`` is a class or its qualified name (``"package.module.Class"``). ``rule`` is:

    * a :class:`ResidualLayout`: the module is a residual block; SE goes in it as ``placement`` says;
    * a function ``rule(module, se_config, stage) -> nn.Module`` that puts an SE block into the
      module (build it with ``se_config.make(channels)``) and returns the module to use in its
      place (``stage`` is -1 unless ``add_se`` was given ``se_stages``);
    * :data:`DESCEND` (``"descend"``): a container; ``add_se`` looks at its children;
    * ``None``: no SE in this module or below it.

    A later registration for the same type replaces the earlier one.
    """
    if not (rule is None or rule == DESCEND or isinstance(rule, ResidualLayout) or callable(rule)):
        raise ValueError(f"rule must be a ResidualLayout, a function, {DESCEND!r} or None, got {rule!r}")
    _RULES[module_type] = rule


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _rule(module: nn.Module) -> Any:
    cls = type(module)
    for key in (cls, _qualname(cls)):
        if key in _RULES:
            return _RULES[key]
    layout = getattr(cls, "se_layout", None)
    return layout if isinstance(layout, ResidualLayout) else _UNSET


def _is_container(module: nn.Module) -> bool:
    return isinstance(module, (nn.ModuleList, nn.ModuleDict)) or runs_children_in_order(module)


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


class SEResidual(ResidualUnit):
    """A residual block run by :class:`~senet.layers.ResidualUnit` with an SE block.

    The block's children are adopted under their own names (same modules, same parameters,
    same state-dict keys); ``se`` is added. The computation is described by ``layout``; the
    block's own stochastic depth, if any, is part of its branch.
    """

    def __init__(self, block: nn.Module, layout: ResidualLayout, se: SqueezeExcite, placement: str) -> None:
        super().__init__()
        for name in layout.branch + tuple(n for n in (layout.shortcut, layout.act) if n):
            if not hasattr(block, name):
                raise ValueError(f"the ResidualLayout of {_qualname(type(block))} names {name!r}, "
                                 "which the block does not have")
        clash = {"se", "placement", "fuse_se", "concat_paths"} & {n for n, _ in block.named_children()}
        if clash:
            raise ValueError(f"{_qualname(type(block))} has children named {sorted(clash)}; add_se needs those names")
        for name, child in block.named_children():
            self.add_module(name, child)
        self.se = se
        self.placement = placement
        self.fuse_se = True  # the block's own stochastic depth, if any, is part of its branch
        self.wrapped = _qualname(type(block))
        self._branch_names = layout.branch
        self._conv3x3 = layout.conv3x3 if layout.conv3x3 is not None else -1
        self._shortcut_name = layout.shortcut
        self._act_name = layout.act

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        for i, name in enumerate(self._branch_names):
            module = self._modules.get(name)
            if module is not None:
                x = module(x)
            if i == self._conv3x3:
                x = self.se_inner(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self._modules.get(self._shortcut_name) if self._shortcut_name else None
        return self.merge(x, x if shortcut is None else shortcut(x))

    def dropped(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def post_act(self, x: torch.Tensor) -> torch.Tensor:
        act = self._modules.get(self._act_name) if self._act_name else None
        return x if act is None else act(x)

    def extra_repr(self) -> str:
        return f"wraps {self.wrapped}, placement={self.placement}"


class SEAfter(nn.Module):
    """``se(module(x))``: an SE block after one layer (the activation of a conv in a plain stack)."""

    def __init__(self, module: nn.Module, se: SqueezeExcite) -> None:
        super().__init__()
        self.module = module
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.module(x))



def _new_se(se: SEConfig, stage: int, cin: int, cout: int, mid: int | None, like: torch.Tensor) -> SqueezeExcite:
    if se.placement == "conv3x3" and mid is None:
        raise ValueError("placement 'conv3x3' needs the position of the 3x3 convolution (ResidualLayout.conv3x3)")
    block = make_block_se(se, stage, cin, cout, mid if mid is not None else cout)
    assert block is not None  # callers check the stage
    block.to(device=like.device, dtype=like.dtype)
    for conv in (block.fc1, block.fc2):  # as senet's SE models (He et al.; section 5.1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    return block


def _channels(block: nn.Module, layout: ResidualLayout) -> tuple[int, int, int | None]:
    """Input, output and ``conv3x3`` channels of the residual branch described by ``layout``."""
    cin = cout = mid = None
    for i, name in enumerate(layout.branch):
        module = getattr(block, name, None)
        for m in module.modules() if isinstance(module, nn.Module) else ():
            if isinstance(m, nn.Conv2d):
                cin = m.in_channels if cin is None else cin
                cout = m.out_channels
            elif isinstance(m, nn.GroupNorm):
                cout = m.num_channels
            elif isinstance(m, _NORMS):
                cout = m.num_features
        if i == layout.conv3x3:
            mid = cout
    if cin is None or cout is None:
        raise ValueError(f"the ResidualLayout of {_qualname(type(block))} names no convolution in its branch")
    return cin, cout, mid


@dataclass
class _Site:
    parent: nn.Module | None  # None: the model itself
    name: str
    module: nn.Module
    rule: Any  # ResidualLayout or function; None for a plain-stack activation
    channels: int = 0  # plain-stack sites: the convolution's output channels
    stage: int = -1
    path: str = ""  # the module's path in the model


def _unknown(module: nn.Module, path: str) -> ValueError:
    cls = type(module)
    return ValueError(
        f"add_se does not know the module type {_qualname(cls)} (at '{path}'), which contains convolutions. "
        f"Tell it where SE goes with senet.surgery.register_se_rule({cls.__name__}, rule), rule being a "
        "ResidualLayout(branch=..., shortcut=..., act=...) for a residual block, a function "
        f"(module, se_config, stage) -> module, {DESCEND!r} to look inside it, or None to leave it without SE"
    )


def _collect(module: nn.Module, path: str, sites: list[_Site], plain: list[_Site]) -> None:
    """Find the SE sites under ``module``: rule-handled blocks in ``sites``, plain-stack ones in ``plain``."""
    if isinstance(module, nn.Sequential) and _is_container(module):
        children = list(module.named_children())
        for i, (_, child) in enumerate(children):
            if not isinstance(child, nn.Conv2d):
                continue
            j = i + 1
            while j < len(children) and isinstance(children[j][1], _NORMS):
                j += 1
            if j < len(children) and isinstance(children[j][1], _ACTS):
                where = f"{path}.{children[j][0]}" if path else children[j][0]
                plain.append(_Site(module, children[j][0], children[j][1], None, child.out_channels, path=where))
    for name, child in module.named_children():
        where = f"{path}.{name}" if path else name
        rule = _rule(child)
        if rule is None or (rule is _UNSET and (isinstance(child, nn.Conv2d) or not _has_conv(child))):
            continue  # no SE there: told so, a lone conv whose activation the parent applies, or no conv at all
        if rule == DESCEND or (rule is _UNSET and _is_container(child)):
            _collect(child, where, sites, plain)
        elif rule is _UNSET:
            raise _unknown(child, where)
        else:
            sites.append(_Site(module, name, child, rule, path=where))


def _number_stages(model: nn.Module, sites: list[_Site], input_size: tuple[int, int, int]) -> None:
    """Stage of each site: from a senet model's ``feature_info`` (:func:`~senet.models.module_stages`);
    for other models ``log2(input side / site output side)``, from one forward pass on ``meta``."""
    if getattr(model, "feature_info", None):
        stages = module_stages(model)
        for site in sites:
            site.stage = stages[site.path]
        return
    shapes: dict[int, torch.Size] = {}

    def record(k: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            shapes.setdefault(k, output.shape)
        return hook

    hooks = [s.module.register_forward_hook(record(k)) for k, s in enumerate(sites)]
    meta = {n: torch.empty_like(t, device="meta") for n, t in model.named_parameters()}
    meta.update({n: torch.empty_like(t, device="meta") for n, t in model.named_buffers()})
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            torch.func.functional_call(model, meta, (torch.empty(1, *input_size, device="meta"),))
    except Exception as e:  # noqa: BLE001 (any failure means the same thing to the caller)
        raise ValueError(f"add_se(se_stages=...) runs the model once on the meta device at {input_size} to number "
                         f"its stages, and that failed ({type(e).__name__}: {e}); pass input_size=") from None
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for k, site in enumerate(sites):
        if k not in shapes:
            raise ValueError(f"add_se: module '{site.name}' ({type(site.module).__name__}) is not called by "
                             "the model's forward pass")
        site.stage = round(math.log2(input_size[1] / shapes[k][-2]))


def _apply(site: _Site, se: SEConfig) -> nn.Module:
    if site.rule is None:
        like = next((p for p in site.parent.parameters()), torch.empty(0))
        return SEAfter(site.module, _new_se(se, site.stage, site.channels, site.channels, None, like))
    if isinstance(site.rule, ResidualLayout):
        cin, cout, mid = _channels(site.module, site.rule)
        if se.placement == "conv3x3" and site.rule.conv3x3 is None:
            raise ValueError(f"placement 'conv3x3': the ResidualLayout of {_qualname(type(site.module))} "
                             "has no conv3x3 position")
        like = next(site.module.parameters())
        return SEResidual(site.module, site.rule, _new_se(se, site.stage, cin, cout, mid, like), se.placement)
    return site.rule(site.module, se, site.stage)


def add_se(
    model: nn.Module,
    placement: str = "standard",
    reduction: float = 16,
    se_stages: list[int] | tuple[int, ...] | None = None,
    *,
    input_size: tuple[int, int, int] | None = None,
    **se_options: Any,
) -> nn.Module:
    """Insert SE blocks into ``model`` where the paper puts them; returns ``model`` (changed in place;
    a lone residual block passed as ``model`` comes back wrapped in :class:`SEResidual`).

    Args:
        model: a torchvision / timm / senet CNN, or any network whose blocks have rules
            (:func:`register_se_rule`).
        placement: ``"standard"`` (SE on the residual branch before the sum, Fig. 3), or
            ``"pre"``, ``"post"``, ``"identity"``, ``"conv3x3"`` (Tables 14-15); plain stacks
            take only ``"standard"`` (after each convolution's activation).
        reduction: the reduction ratio ``r`` (Table 10).
        se_stages: the stages that get SE (Table 13), ``None`` for all. A block's stage is
            ``log2(input side / block output side)``: the paper's ResNet numbering (``conv2_x``
            at 56x56 for a 224x224 input is stage 2) and senet's own families'.
        input_size: ``(C, H, W)`` of the one forward pass on the ``meta`` device that numbers
            the stages when ``se_stages`` is given (default: ``(C, 224, 224)``, ``C`` the first
            convolution's input channels).
        **se_options: the other SE keywords of ``create_model``: ``se_bias``, ``squeeze``,
            ``gate``, ``se_divisor`` (e.g. ``se_divisor=8`` for timm's SE widths). ``stages=``,
            the old name of ``se_stages=``, still works with a ``FutureWarning``.

    Raises:
        ValueError: a module type that contains convolutions and has no rule (the message says
            how to register one), a model that already has SE blocks, no place for an SE
            block, or bad SE options.
    """
    if "stages" in se_options:  # the name before se_stages=, create_model's and the CLI's
        if se_stages is not None:
            raise ValueError("add_se got both se_stages= and stages= (its old name); pass se_stages= only")
        warnings.warn("add_se(stages=) is now add_se(se_stages=), as in create_model", FutureWarning, stacklevel=2)
        se_stages = se_options.pop("stages")
    se = SEConfig.from_kwargs({**se_options, "reduction": reduction, "placement": placement, "se_stages": se_stages})
    if any(isinstance(m, SqueezeExcite) for m in model.modules()):
        raise ValueError("the model already has SE blocks")
    root_rule = _rule(model)
    sites: list[_Site] = []
    plain: list[_Site] = []
    if root_rule is _UNSET or root_rule == DESCEND:
        _collect(model, "", sites, plain)
    elif root_rule is not None:  # a single block: it is returned wrapped
        sites.append(_Site(None, "", model, root_rule))
    if not sites:
        if se.placement != "standard" and plain:
            raise ValueError(f"placement {se.placement!r} needs residual blocks; {type(model).__name__} has none "
                             "(a plain stack takes SE after each convolution's activation: placement='standard')")
        sites = plain
    if not sites:
        raise ValueError(f"add_se found no place for an SE block in {type(model).__name__}: no residual block it "
                         "knows and no nn.Sequential with a convolution followed by an activation")
    if se.stages is not None:
        if input_size is None:
            first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
            input_size = (first.in_channels, 224, 224)
        _number_stages(model, sites, input_size)
        se.check_stages(sorted({s.stage for s in sites}))
    for site in sites:
        if not se.in_stage(site.stage):
            continue
        new = _apply(site, se)
        if site.parent is None:
            model = new
        elif new is not site.module:
            setattr(site.parent, site.name, new)
    return model
