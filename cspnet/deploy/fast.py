"""Inference fast path for ConvBNAct: BN folded into cached weights, activation and residual add fused by oneDNN.

It runs for fused models (`model.fuse()`), in eval mode without autograd (torch.no_grad / inference_mode),
outside tracing, scripting, torch.compile and dispatch modes (FlopCounterMode), so training, gradients,
export, compile and MAC counting see the plain conv -> BN -> act graph. Unfused models keep exactly the
arithmetic of timm's implementation unless FOLD_UNFUSED is set (folding changes float rounding, ~1e-6 relative).
The cache is keyed on the tensors' versions: load_state_dict, optimizer steps and .to() invalidate it.
Set `cspnet.deploy.fast.ENABLED = False` to measure or debug the plain path.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from cspnet.nn.bn import fold_bn

ENABLED = True
FOLD_UNFUSED = False  # also fold BN on the fly in unfused eval models (not bit-equal to timm any more)
PACK = True  # keep weights in oneDNN's blocked layout (activations come out channels_last)
MAX_SHAPES = 4  # packed weights kept per conv, one per input shape seen (oldest dropped)
SPLIT_EXP = True  # see cross_stage
SPLIT_TRANSITION = False  # see cross_stage; measured within noise (+-4%) of concat + one conv, so off
_MKLDNN = hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def active(module: nn.Module) -> bool:
    """True when the fused path may replace conv -> BN -> act of a ConvBNAct `module`."""
    return (
        ENABLED
        and (FOLD_UNFUSED or not isinstance(module.bn, nn.BatchNorm2d))
        and not module.training
        and not torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.compiler.is_compiling()
        and _get_current_dispatch_mode() is None  # FlopCounterMode, FakeTensorMode, ... see the real ops
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
    return None  # e.g. mish: conv fused with BN, activation applied afterwards


class FoldCache(dict):
    """Folded/packed weights of one conv; never copied or pickled (deepcopy, EMA, torch.save get it empty)."""

    def __deepcopy__(self, memo: dict) -> FoldCache:
        return FoldCache()

    def __reduce__(self):
        return (FoldCache, ())


def cache_of(module: nn.Module) -> FoldCache:
    """The module's folded-weight cache (a plain attribute: not in state_dict)."""
    cache = module.__dict__.get("_fold")
    if cache is None:
        cache = module.__dict__["_fold"] = FoldCache()
    return cache


def _stamp(t: torch.Tensor | None) -> tuple | None:
    """Identity and in-place version of a tensor (inference tensors have no version counter)."""
    if t is None:
        return None
    return (t.data_ptr(), -1 if t.is_inference() else t._version, t.dtype, t.device)


@torch.no_grad()
def folded(conv: nn.Conv2d, bn: nn.Module, cache: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias of bn(conv(x)) in eval mode, recomputed only when a tensor changed."""
    is_bn = isinstance(bn, nn.BatchNorm2d)
    tensors = (conv.weight, conv.bias) + ((bn.weight, bn.bias, bn.running_mean, bn.running_var) if is_bn else ())
    key = tuple(_stamp(t) for t in tensors)
    if cache.get("key") != key:
        cache.clear()
        if is_bn:
            weight, bias = fold_bn(conv, bn)
            cache.update(key=key, weight=weight, bias=bias)
        else:  # already folded by fuse()
            cache.update(key=key, weight=conv.weight, bias=conv.bias)
    return cache["weight"], cache["bias"]


def _onednn(conv: nn.Conv2d, x, w, b, act: nn.Module, cache: dict, slot: str, residual=None) -> torch.Tensor:
    """act(conv(x; w, b) [+ residual]) with oneDNN post-ops; `slot` names this weight's packed copy in `cache`."""
    attr = onednn_attr(act)
    if not (_MKLDNN and x.device.type == "cpu" and x.dtype == torch.float32 and conv.padding_mode == "zeros"):
        y = conv._conv_forward(x, w.contiguous(), b)
        return act(y if residual is None else y + residual)
    geom = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    key = (slot, tuple(x.shape)) if PACK else slot
    pw = cache.get(key)
    if pw is None:  # once per weight (and input shape: oneDNN picks the blocked layout for it)
        pw = w.contiguous()
        if PACK:
            pw = torch.ops.mkldnn._reorder_convolution_weight(pw, *geom, list(x.shape))
            old = [k for k in cache if isinstance(k, tuple) and k[0] == slot]
            for k in old[: max(0, len(old) - MAX_SHAPES + 1)]:  # bounded: a few input shapes per weight
                del cache[k]
        cache[key] = pw
    args = (pw, b, *geom)
    if residual is None:
        if attr is not None:
            return torch.ops.mkldnn._convolution_pointwise(x, *args, attr[0], attr[1], "")
        return act(torch.ops.mkldnn._convolution_pointwise(x, *args, "none", [], ""))
    # oneDNN adds the residual inside the conv; only relu may follow in the same call
    relu = attr is not None and attr[0] == "relu"
    y = torch.ops.mkldnn._convolution_pointwise.binary(
        x, residual, *args, "add", None, "relu" if relu else None, [], ""
    )
    return y if relu else act(y)


def conv_bn_act(
    conv: nn.Conv2d, bn: nn.Module, act: nn.Module, x: torch.Tensor, cache: dict, residual=None
) -> torch.Tensor:
    """act(bn(conv(x)) [+ residual]) in one oneDNN call where possible (fp32 CPU), else folded conv + act."""
    w, b = folded(conv, bn, cache)
    return _onednn(conv, x, w, b, act, cache, "w", residual)


def _fusable(unit: nn.Module) -> bool:
    from cspnet.nn.layers import ConvBNAct

    return type(unit) is ConvBNAct and active(unit)


def cross_stage(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CrossStage.forward without split and concat copies (fused models in eval, see module docstring).

    SPLIT_EXP: the split 1x1 conv runs as two convs over weight slices, each part comes out contiguous.
    SPLIT_TRANSITION: conv(cat(a, b)) = conv_b(b) + conv_a(a), the add fused into the second conv; no concat.
    """
    x = stage.conv_down(x)
    exp, cross = stage.conv_exp, stage.split[0]
    if SPLIT_EXP and _fusable(exp):
        cache = cache_of(exp)
        w, b = folded(exp.conv, exp.bn, cache)
        xs = _onednn(exp.conv, x, w[:cross], b[:cross], exp.act, cache, "w_cross")
        xb = _onednn(exp.conv, x, w[cross:], b[cross:], exp.act, cache, "w_block")
    else:
        xs, xb = exp(x).split(stage.split, dim=1)
    xb = stage.blocks(xb)
    if stage.conv_transition_b is not None:
        xb = stage.conv_transition_b(xb)
    t = stage.conv_transition
    if t is None:
        return torch.cat([xs, xb], dim=1)
    if SPLIT_TRANSITION and _fusable(t):
        cache = cache_of(t)
        w, b = folded(t.conv, t.bn, cache)
        part = _onednn(t.conv, xs, w[:, :cross], b, nn.Identity(), cache, "w_cross")
        return _onednn(t.conv, xb, w[:, cross:], None, t.act, cache, "w_block", residual=part)
    return t(torch.cat([xs, xb], dim=1))


def cross_active(stage: nn.Module) -> bool:
    """True when cross_stage may run: a CSP stage whose split conv takes the fused path."""
    return stage.split is not None and _fusable(stage.conv_exp)


def residual_conv(unit: nn.Module, x: torch.Tensor, shortcut: torch.Tensor, act: nn.Module) -> torch.Tensor:
    """act(unit(x) + shortcut) for a linear ConvBNAct `unit`, the add fused into the conv when possible."""
    if active(unit) and isinstance(unit.act, nn.Identity):
        return conv_bn_act(unit.conv, unit.bn, act, x, cache_of(unit), shortcut)
    y = unit(x)
    y += shortcut
    return act(y)
