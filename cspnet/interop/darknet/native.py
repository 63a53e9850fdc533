"""From a darknet cfg to the native zoo: `from_darknet` returns the native model where the cfg is exactly one.

Exact twins (weights converted, outputs checked equal):
  csdarknet53.cfg -> cspdarknet53 (leaky 0.1), csdarknet53-omega.cfg -> cspdarknet53 with act="mish",
  darknet53.cfg -> darknet53 (leaky 0.1), csresnet50.cfg -> cspresnet50 and csresnext50.cfg -> cspresnext50
  with layout="darknet" (the authors' layout; the default layout is timm's, see cspnet/models/zoo.py).
Darknet splits a CSP stage with two 1x1 convs (cross part, block part) and routes [block, cross]; the native
stage has one conv_exp and concatenates [cross, block]. So conv_exp = the two convs stacked along the output
channels, and conv_transition's input channels are reordered to match.

Not exact, so the cfg-built model is returned (see NOT_NATIVE for what differs).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from cspnet.errors import ConfigError
from cspnet.interop.darknet.cfg import parse_cfg
from cspnet.interop.darknet.model import AvgPool, Conv, DarknetModel, Route, Softmax
from cspnet.interop.darknet.weights import read_weights
from cspnet.models import CspNet, create_model
from cspnet.nn.layers import ConvBNAct

# cfg file stem -> native model name
NATIVE = {
    "csdarknet53": "cspdarknet53",
    "csdarknet53-omega": "cspdarknet53",
    "darknet53": "darknet53",
    "csresnet50": "cspresnet50",
    "csresnext50": "cspresnext50",
}
# architecture arguments the native model needs to be the cfg's network
NATIVE_ARGS = {"csresnet50": {"layout": "darknet"}, "csresnext50": {"layout": "darknet"}}

NOT_NATIVE = {
    "yolov4": "the native YOLOv4 does not exist yet",
}


class NotNative(ConfigError):
    """The cfg does not map exactly onto the native model."""


def native_name(cfg: str | Path) -> str | None:
    """The native model a cfg file corresponds to, by its file name; None when there is none."""
    return NATIVE.get(Path(cfg).stem)


def _act_key(act: nn.Module) -> tuple:
    if isinstance(act, nn.LeakyReLU):
        return ("leaky", round(act.negative_slope, 6))
    return (type(act).__name__,)


def _head_conv(dk: DarknetModel) -> int:
    """Index of the classifier conv: [avgpool] -> 1x1 conv without BN -> optional [softmax] at the end."""
    layers = list(dk.layers)
    end = len(layers) - 1 if isinstance(layers[-1], Softmax) else len(layers)
    i = end - 1
    ok = i >= 1 and isinstance(layers[i], Conv) and isinstance(layers[i - 1], AvgPool)
    if not ok or layers[i].conv.kernel_size != (1, 1) or layers[i].conv.bias is None:
        raise NotNative("the cfg does not end in [avgpool] -> 1x1 [convolutional] (-> [softmax])")
    return i


def _cat_bn(dks: list[Conv]) -> dict[str, torch.Tensor]:
    bns = [c.bn for c in dks]
    return {
        "conv.weight": torch.cat([c.conv.weight for c in dks], 0),
        "bn.weight": torch.cat([b.weight for b in bns], 0),
        "bn.bias": torch.cat([b.bias for b in bns], 0),
        "bn.running_mean": torch.cat([b.running_mean for b in bns], 0),
        "bn.running_var": torch.cat([b.running_var for b in bns], 0),
        "bn.num_batches_tracked": bns[0].num_batches_tracked,
    }


def native_state_dict(dk: DarknetModel, native: CspNet) -> dict[str, torch.Tensor]:
    """Map the cfg model's tensors onto `native`'s keys; NotNative when the two are not the same network."""
    head = _head_conv(dk)
    convs = [(i, m) for i, m in enumerate(dk.layers) if isinstance(m, Conv) and i != head]
    targets = [(n, m) for n, m in native.named_modules() if isinstance(m, ConvBNAct)]
    sd: dict[str, torch.Tensor] = {}
    k = 0
    cross = tb = -1
    for name, mod in targets:
        take = 2 if name.endswith("conv_exp") else 1
        if k + take > len(convs):
            raise NotNative(f"the cfg has {len(convs)} body convolutions, too few for {name}")
        group = convs[k : k + take]
        k += take
        if any(not isinstance(m.bn, nn.BatchNorm2d) for _, m in group):
            raise NotNative(f"layer {group[0][0]} has no batch_normalize, {name} has BN")
        if any(_act_key(m.act) != _act_key(mod.act) for _, m in group):
            raise NotNative(f"layer {group[0][0]} activation {group[0][1].act} differs from {name}'s {mod.act}")
        entry = _cat_bn([m for _, m in group])
        if name.endswith("conv_exp"):
            cross = group[0][0]
        elif name.endswith("conv_transition_b"):
            tb = group[0][0]
        elif name.endswith("conv_transition"):
            idx = group[0][0]
            route = dk.layers[idx - 1]
            if not isinstance(route, Route) or route.groups != 1 or set(route.sources) != {cross, tb}:
                raise NotNative(f"layer {idx} does not read a [route] of the stage's cross part and blocks")
            w = entry["conv.weight"]
            bounds, start = {}, 0
            for s in route.sources:  # darknet's concat order -> native [cross, blocks]
                bounds[s] = (start, start + dk.shapes[s][0])
                start = bounds[s][1]
            entry["conv.weight"] = torch.cat([w[:, slice(*bounds[cross])], w[:, slice(*bounds[tb])]], 1)
        if entry["conv.weight"].shape != mod.conv.weight.shape or mod.conv.stride != group[0][1].conv.stride:
            raise NotNative(
                f"layer {group[0][0]} ({tuple(entry['conv.weight'].shape)}, stride {group[0][1].conv.stride}) does "
                f"not fit {name} ({tuple(mod.conv.weight.shape)}, stride {mod.conv.stride})"
            )
        sd.update({f"{name}.{key}": v for key, v in entry.items()})
    if k != len(convs):
        raise NotNative(f"the cfg has {len(convs) - k} convolutions more than the native model")
    fc = dk.layers[head].conv
    sd["head.fc.weight"] = fc.weight.flatten(1)
    sd["head.fc.bias"] = fc.bias
    return sd


@torch.no_grad()
def check_equal(dk: DarknetModel, native: CspNet, img: int = 64, tol: float = 1e-4) -> float:
    """Max difference of the logits of both models on a random batch, relative to their scale; raises if > tol."""
    x = torch.randn(2, dk.in_chans, img, img, generator=torch.Generator().manual_seed(0))
    was = dk.training, native.training
    dk.eval(), native.eval()
    ref = dk.forward_layers(x, keep_all=True)[_head_conv(dk)].flatten(1)
    out = native(x)
    dk.train(was[0]), native.train(was[1])
    err = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
    if not err <= tol:
        raise NotNative(f"outputs differ by {err:.2e} (relative) on a {img}x{img} input")
    return err


def to_native(dk: DarknetModel, name: str, verify: bool = True, **overrides) -> CspNet:
    """The native model `name` carrying the cfg model's weights; NotNative when it is not the same network."""
    acts = {_act_key(m.act) for i, m in enumerate(dk.layers) if isinstance(m, Conv) and i != _head_conv(dk)}
    acts.discard(("Identity",))
    if acts == {("leaky", 0.1)}:
        kw = dict(act="leaky", leaky_slope=0.1)
    elif acts == {("Mish",)}:
        kw = dict(act="mish")
    else:
        raise NotNative(f"activations {sorted(acts)} have no native equivalent")
    head = dk.layers[_head_conv(dk)].conv
    native = create_model(name, num_classes=head.out_channels, in_chans=dk.in_chans, **kw, **overrides)
    native.load_state_dict(native_state_dict(dk, native))
    if verify:
        check_equal(dk, native)
    return native.train(dk.training)


def from_darknet(
    cfg: str | Path, weights: str | Path | None = None, native: bool = True, verify: bool = True
) -> nn.Module:
    """Build a darknet cfg (and load its `.weights`): the native cspnet model where the cfg is one, else the cfg model.

    The native model returns logits (as `create_model`); the cfg model returns what darknet outputs (a
    classifier's softmax, a detector's decoded yolo boxes). native=False always returns the cfg model.
    verify: check on a random batch that the native model computes what the cfg model does.
    """
    dk = DarknetModel(parse_cfg(cfg))
    if weights is not None:
        read_weights(dk, weights)
    dk.eval()
    name = native_name(cfg)
    if not native or name is None:
        return dk
    try:
        return to_native(dk, name, verify, **NATIVE_ARGS.get(Path(cfg).stem, {})).eval()
    except NotNative as e:
        warnings.warn(f"{cfg} is not exactly {name} ({e}); returning the cfg model", stacklevel=2)
        return dk
