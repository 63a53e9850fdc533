"""Fusion for inference: `fuse_model(model)` swaps training modules for fused inference modules, in place.

A layer-level module swap, so it lives beside the modules it swaps: a model offers `.fuse()` from here, and
cspnet.deploy re-exports it (cspnet.deploy.fuse) for the deployment path.

- ConvBNAct -> FusedConvAct: BN folded into the conv (cspnet.nn.bn, the one folding home).
- CrossStage -> FusedCrossStage: the split conv runs as one conv per part, over weight slices taken from the
  stage's own split sizes, so neither part is a strided copy of one wide output.
- Bottleneck, BasicBlock, DarkBlock -> FusedResidual: the residual add (and a ReLU after it) inside the last
  conv's oneDNN call.

On fp32 CPU tensors in eager mode without autograd, each fused conv is one oneDNN call (conv + bias + activation
[+ add]) on weights pre-packed in oneDNN's blocked layout, one copy per input shape (a few kept). Everywhere else
(tracing, scripting, torch.compile, ONNX export, dispatch modes such as FlopCounterMode, autograd, other dtypes or
devices) the same modules run plain torch ops on the folded weights, which those tools understand.
The training modules in cspnet.nn know nothing of this: each has one plain forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from cspnet.nn.blocks import BasicBlock, Bottleneck, DarkBlock
from cspnet.nn.bn import fuse_conv_bn
from cspnet.nn.layers import ConvBNAct
from cspnet.nn.stages import CrossStage

_MKLDNN = hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


@dataclass(frozen=True)
class FuseOptions:
    """What the fused modules may do beyond folding BN; all on by default (off: for ablations and debugging)."""

    onednn: bool = True  # one oneDNN call per conv (+ bias + activation [+ add]); False: folded conv, plain torch ops
    pack: bool = True  # weights in oneDNN's blocked layout, packed once per input shape (activations come out blocked)
    split: bool = True  # the CSP split conv as one conv per part over weight slices, instead of conv + split
    max_shapes: int = 4  # packed weights kept per conv (one per input shape seen, oldest dropped)


def fuse_model(
    model: nn.Module, *, onednn: bool = True, pack: bool = True, split: bool = True, max_shapes: int = 4
) -> nn.Module:
    """Put `model` in eval mode and swap every fusable module inside it for its fused twin; returns the model.

    Works on any module that contains ConvBNAct / CrossStage / residual blocks (a CspNet, a FeatureNet, a detector).
    Modules shared with another model are swapped where `model` holds them. Inference only: the fused weights do
    not require grad.
    """
    opts = FuseOptions(onednn, pack, split, max_shapes)
    return _swap(model.eval(), opts)


def _swap(module: nn.Module, opts: FuseOptions) -> nn.Module:
    make = _FUSERS.get(type(module))  # exact types: a subclass may have its own forward
    if make is not None:
        return make(module, opts).eval()
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = _swap(child, opts)
    return module


def _eager_fast(x: torch.Tensor) -> bool:
    """True where oneDNN calls may replace plain torch ops: eager fp32 CPU, nothing watching the ops."""
    return (
        _MKLDNN
        and x.is_cpu
        and x.dtype == torch.float32
        and not (torch.is_grad_enabled() and x.requires_grad)
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.compiler.is_compiling()
        and _get_current_dispatch_mode() is None  # FlopCounterMode, FakeTensorMode, ... see the plain ops
    )


def onednn_attr(act: nn.Module) -> tuple[str, list] | None:
    """oneDNN post-op name and scalars for an activation module, None if oneDNN cannot fuse it."""
    if isinstance(act, nn.Identity):
        return "none", []
    if isinstance(act, nn.ReLU):
        return "relu", []
    if isinstance(act, nn.LeakyReLU):
        return "leaky_relu", [act.negative_slope]
    if isinstance(act, nn.SiLU):
        return "swish", []
    return None  # e.g. mish: the conv runs fused with its bias, the activation afterwards


class PackCache(dict):
    """Packed weights of one conv; never copied or pickled (deepcopy, torch.save get it empty)."""

    def __deepcopy__(self, memo: dict) -> PackCache:
        return PackCache()

    def __reduce__(self):
        return (PackCache, ())


def _stamp(t: torch.Tensor | None) -> tuple | None:
    """Identity and in-place version of a tensor (inference tensors have no version counter)."""
    if t is None:
        return None
    return (t.data_ptr(), -1 if t.is_inference() else t._version, t.dtype, t.device)


class FusedConvAct(nn.Module):
    """act(conv(x) + bias), BN folded into the conv; one oneDNN call on pre-packed weights where possible."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module, opts: FuseOptions = FuseOptions()) -> None:
        super().__init__()
        self.conv = conv
        self.act = act
        self.opts = opts
        self.__dict__["_packed"] = PackCache()  # a plain attribute: not in state_dict, not a submodule

    @classmethod
    def from_unit(cls, unit: ConvBNAct, opts: FuseOptions = FuseOptions()) -> FusedConvAct:
        return cls(fuse_conv_bn(unit.conv, unit.bn).requires_grad_(False), unit.act, opts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._plan(x, "w")
        if plan is None:
            return self.act(self.conv(x))
        return _call(x, plan, self.act)

    def forward_parts(self, x: torch.Tensor, sizes: tuple[int, ...]) -> list[torch.Tensor]:
        """The output cut into channel parts of `sizes`, each part computed by its own weight slice (no split copy)."""
        if self.opts.split and self._plan(x, "w", check_only=True):
            parts, start = [], 0
            for i, n in enumerate(sizes):
                parts.append(_call(x, self._plan(x, i, slice(start, start + n)), self.act))
                start += n
            return parts
        return list(self(x).split(sizes, dim=1))

    def forward_add(self, x: torch.Tensor, residual: torch.Tensor, act: nn.Module) -> torch.Tensor:
        """act(conv(x) + bias + residual) for a linear unit (own act Identity): the add inside the conv call."""
        plan = self._plan(x, "w")
        if plan is None:
            return act(self.conv(x) + residual)
        return _call(x, plan, act, residual)

    def _plan(
        self, x: torch.Tensor, slot: str | int, rows: slice | None = None, check_only: bool = False
    ) -> tuple | bool | None:
        """The arguments of one oneDNN call on x (weight packed for x's shape, bias), or None: run plain torch ops.

        Built once per weight version and input shape and kept, so the per-call work is a few lookups (at batch 1
        the Python around ~60 convs is a visible share of a forward).
        """
        if not (self.opts.onednn and _eager_fast(x)):
            return None
        conv = self._modules["conv"]
        w, b = conv._parameters["weight"], conv._parameters["bias"]
        if w.requires_grad and torch.is_grad_enabled():
            return None
        cache = self._packed
        stamp = (_stamp(w), _stamp(b))
        if cache.get("stamp") != stamp:  # load_state_dict, .to(), in-place edits: repack
            cache.clear()
            cache["stamp"] = stamp
            cache["ok"] = w.dtype == torch.float32 and conv.padding_mode == "zeros"
        if check_only or not cache["ok"]:
            return cache["ok"] or None
        key = (slot, x.shape) if self.opts.pack else (slot,)
        plan = cache.get(key)
        if plan is None:  # once per weight (and input shape: oneDNN picks the blocked layout for it)
            geom = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
            pw = (w if rows is None else w[rows]).contiguous()
            if self.opts.pack:
                pw = torch.ops.mkldnn._reorder_convolution_weight(pw, *geom, list(x.shape))
                old = [k for k in cache if isinstance(k, tuple) and k[0] == slot]
                for k in old[: max(0, len(old) - self.opts.max_shapes + 1)]:  # bounded: a few shapes per weight
                    del cache[k]
            pb = None if b is None else (b if rows is None else b[rows].contiguous())
            plan = cache[key] = (pw, pb, *geom)
        return plan


def _call(x: torch.Tensor, plan: tuple, act: nn.Module, residual: torch.Tensor | None = None) -> torch.Tensor:
    """One oneDNN convolution: conv + bias + act, or with a residual, act(conv + bias + residual)."""
    attr = onednn_attr(act)
    if residual is None:
        if attr is not None:
            return torch.ops.mkldnn._convolution_pointwise(x, *plan, attr[0], attr[1], "")
        return act(torch.ops.mkldnn._convolution_pointwise(x, *plan, "none", [], ""))
    relu = attr is not None and attr[0] == "relu"  # oneDNN adds the residual inside; only relu may follow it
    w, b, *geom = plan
    y = torch.ops.mkldnn._convolution_pointwise.binary(
        x, residual, w, b, *geom, "add", None, "relu" if relu else None, [], ""
    )
    return y if relu else act(y)


class FusedResidual(nn.Module):
    """A residual block: act(last(body(x)) + shortcut(x)), the add fused into the last conv's oneDNN call.

    add_after_act (DarkBlock): last(body(x)) + x, the block's activation already inside `last`; oneDNN applies
    post-ops in the order add -> activation, so that add stays a separate (in-place) op.
    """

    def __init__(
        self, body: nn.Module, last: FusedConvAct, downsample: nn.Module | None, act: nn.Module, add_after_act: bool
    ) -> None:
        super().__init__()
        self.body = body
        self.last = last
        self.downsample = downsample
        self.act = act
        self.add_after_act = add_after_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.body(x)
        if self.add_after_act:
            y = self.last(y)
            return y + shortcut if y.requires_grad else y.add_(shortcut)
        if isinstance(self.last, FusedConvAct):
            return self.last.forward_add(y, shortcut, self.act)
        return self.act(self.last(y) + shortcut)


class FusedCrossStage(nn.Module):
    """CrossStage for inference: the split conv as one conv per part (FusedConvAct.forward_parts), no split copy.

    Not a CrossStage subclass (fused models hold no CrossStage), but it runs CrossStage's own forward: only
    `split_parts` differs.
    """

    def __init__(self, stage: CrossStage, opts: FuseOptions) -> None:
        super().__init__()
        self.cfg = stage.cfg
        self.out_chs = stage.out_chs
        self.split = stage.split
        self.conv_exp = self.conv_transition_b = self.conv_transition = None  # absent in a plain stage
        for name, child in stage.named_children():
            setattr(self, name, None if child is None else _swap(child, opts))

    forward = CrossStage.forward

    def split_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, ...] | list[torch.Tensor]:
        if isinstance(self.conv_exp, FusedConvAct):
            return self.conv_exp.forward_parts(x, self.split)
        return CrossStage.split_parts(self, x)


def _residual(body: list[str], last: str, act: str | None, add_after_act: bool = False):
    def make(block: nn.Module, opts: FuseOptions) -> FusedResidual:
        down = getattr(block, "downsample", None)
        fused = FusedResidual(
            nn.Sequential(*[_swap(getattr(block, n), opts) for n in body]),
            _swap(getattr(block, last), opts),
            None if down is None else _swap(down, opts),
            getattr(block, act) if act else nn.Identity(),
            add_after_act,
        )
        fused.out_chs = block.out_chs
        return fused

    return make


_FUSERS: dict[type, Callable[[nn.Module, FuseOptions], nn.Module]] = {
    ConvBNAct: FusedConvAct.from_unit,
    CrossStage: FusedCrossStage,
    Bottleneck: _residual(["conv1", "conv2"], "conv3", "act3"),
    BasicBlock: _residual(["conv1"], "conv2", "act2"),
    DarkBlock: _residual(["conv1"], "conv2", None, add_after_act=True),
}
