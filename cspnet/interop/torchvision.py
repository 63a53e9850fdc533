"""Drop-in backbones for torchvision's detection and segmentation models.

`torchvision_backbone("cspresnet50")` is a torchvision `BackboneWithFPN` that `FasterRCNN`, `MaskRCNN`,
`RetinaNet` and `FCOS` accept; `torchvision_segmentation("cspresnet50")` is torchvision's `DeepLabV3` (or `FCN`) with a
CSP backbone. Levels are chosen as in timm's `features_only`: `out_indices` index `model.feature_info`
(level 0 is the stem, level i the i-th stage), and the result carries `feature_info` for the levels it returns.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from cspnet.errors import ConfigError
from cspnet.models.net import CspNet

SEG_HEADS = ("deeplabv3", "fcn")


def _build(model: str | CspNet, **create_kw) -> CspNet:
    if isinstance(model, CspNet):
        if create_kw:
            raise ConfigError(f"{', '.join(create_kw)} apply to a model name; pass them to create_model instead")
        return model
    from cspnet.models.registry import create_model, model_info

    task = model_info(model).task
    if task != "classify":
        raise ConfigError(f"{model} is a {task} model; pass a classification backbone (`cspnet models` lists them)")
    return create_model(model, num_classes=0, **create_kw)


def feature_levels(model: CspNet) -> nn.Sequential:
    """The model as a flat Sequential of its feature levels: `stem`, `stage1`, ... (child i = feature_info[i])."""
    levels = OrderedDict(stem=model.stem)
    for i, stage in enumerate(model.stages, start=1):
        levels[f"stage{i}"] = stage
    return nn.Sequential(levels)


def _level_name(i: int) -> str:
    return "stage" + str(i) if i else "stem"


def _check_indices(model: CspNet, out_indices) -> tuple[int, ...]:
    n = len(model.feature_info)
    out_indices = tuple(range(max(0, n - 4), n)) if out_indices is None else tuple(out_indices)
    bad = [i for i in out_indices if not -n <= i < n]
    if bad or not out_indices:
        raise ConfigError(f"out_indices {list(out_indices)} out of range; this model has levels 0..{n - 1}")
    return tuple(sorted({i % n for i in out_indices}))


class FrozenBN(nn.BatchNorm2d):
    """BatchNorm with fixed statistics and affine (torchvision's FrozenBatchNorm2d semantics), still a BatchNorm2d
    so that fusion folds it like any other."""

    def train(self, mode: bool = True) -> FrozenBN:
        return super().train(False)


def _frozen(bn: nn.BatchNorm2d) -> FrozenBN:
    frozen = FrozenBN(bn.num_features, bn.eps).to(bn.weight.device)
    frozen.load_state_dict(bn.state_dict())
    return frozen.requires_grad_(False).eval()


def _freeze(levels: nn.Sequential, trainable_layers: int | None, frozen_bn: bool) -> nn.Sequential:
    """torchvision's conventions: frozen BatchNorm for fine-tuning, only the last `trainable_layers` levels train."""
    if frozen_bn:
        for name, m in list(levels.named_modules()):
            if isinstance(m, nn.BatchNorm2d):
                levels.set_submodule(name, _frozen(m))
    if trainable_layers is not None:
        n = len(levels)
        if not 0 <= trainable_layers <= n:
            raise ConfigError(f"trainable_layers must be in 0..{n} (this model has {n} levels), got {trainable_layers}")
        for child in list(levels)[: n - trainable_layers]:
            child.requires_grad_(False)
    return levels


def dilate(model: CspNet, output_stride: int) -> CspNet:
    """Trade stride for dilation in the deep stages (torchvision's replace_stride_with_dilation), in place.

    The conv that strided keeps the dilation before it, every other kxk conv of the stage takes the new one.
    """
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    reduction, dilation = model.feature_info[0]["reduction"], 1
    for i, stage in enumerate(model.stages, start=1):
        stride = model.feature_info[i]["reduction"] // reduction
        reduction *= stride
        if reduction <= output_stride or stride == 1:
            continue
        prev, dilation = dilation, dilation * stride
        for name, m in list(stage.named_modules()):
            if isinstance(m, nn.AvgPool2d) and m.stride == stride:
                stage.set_submodule(name, nn.Identity())
            elif isinstance(m, nn.Conv2d) and m.stride[0] > 1:
                d = prev if m.kernel_size[0] > 1 else 1
                m.stride, m.dilation, m.padding = (1, 1), (d, d), (d * (m.kernel_size[0] // 2),) * 2
            elif isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1:
                m.dilation, m.padding = (dilation, dilation), (dilation * (m.kernel_size[0] // 2),) * 2
        model.feature_info[i]["reduction"] = output_stride
    return model


def torchvision_backbone(
    model: str | CspNet,
    fpn: bool = True,
    out_indices: tuple[int, ...] | None = None,
    out_channels: int = 256,
    extra_blocks: ExtraFPNBlock | None = None,
    trainable_layers: int | None = None,
    frozen_bn: bool = False,
    **create_kw,
) -> nn.Module:
    """A CSP (or plain twin) backbone for torchvision's detectors.

    fpn=True: a `BackboneWithFPN` over the levels `out_indices` (default: the last four, strides 4-32), for
    FasterRCNN / MaskRCNN / KeypointRCNN (default `extra_blocks`: a max-pooled P6) and RetinaNet / FCOS (pass
    `extra_blocks=LastLevelP6P7(256, 256)` and the last three levels, as torchvision does).
    fpn=False: the model up to its last level, one map out, with `out_channels` set (a single-map FasterRCNN).
    frozen_bn / trainable_layers: torchvision's fine-tuning conventions (frozen BN statistics; train the last levels).
    create_kw go to `create_model` (pretrained, partial_ratio, act, ...).
    """
    net = _build(model, **create_kw)
    idx = _check_indices(net, out_indices)
    levels = _freeze(feature_levels(net), trainable_layers, frozen_bn)
    info = [dict(net.feature_info[i]) for i in idx]
    if fpn:
        body = BackboneWithFPN(
            levels,
            return_layers={_level_name(i): str(k) for k, i in enumerate(idx)},
            in_channels_list=[f["num_chs"] for f in info],
            out_channels=out_channels,
            extra_blocks=extra_blocks,
        )
    else:
        if len(idx) != 1:
            raise ConfigError(f"fpn=False returns one map; pass one level in out_indices, got {list(idx)}")
        body = nn.Sequential(*list(levels)[: idx[0] + 1])
        body.out_channels = info[0]["num_chs"]
    body.feature_info = info
    return body


def torchvision_segmentation(
    model: str | CspNet,
    num_classes: int = 21,
    head: str = "deeplabv3",
    aux: bool = False,
    output_stride: int = 8,
    **create_kw,
) -> nn.Module:
    """torchvision's DeepLabV3 or FCN (models.segmentation) on a CSP backbone.

    The head reads the last level; aux=True adds torchvision's FCN auxiliary head on the level before.
    output_stride 8 (torchvision's default for segmentation), 16 or 32 (no dilation).
    """
    from torchvision.models.segmentation import DeepLabV3
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    if head not in SEG_HEADS:
        raise ConfigError(f"unknown segmentation head {head!r}; choose one of {', '.join(SEG_HEADS)}")
    net = dilate(_build(model, **create_kw), output_stride)
    n = len(net.feature_info)
    return_layers = {_level_name(n - 1): "out"}
    if aux:
        return_layers[_level_name(n - 2)] = "aux"
    backbone = IntermediateLayerGetter(feature_levels(net), return_layers=return_layers)
    backbone.feature_info = [dict(net.feature_info[i]) for i in (n - 2, n - 1)][0 if aux else 1 :]
    chs = net.feature_info[-1]["num_chs"]
    aux_head = FCNHead(net.feature_info[-2]["num_chs"], num_classes) if aux else None
    if head == "deeplabv3":
        return DeepLabV3(backbone, DeepLabHead(chs, num_classes), aux_head)
    return FCN(backbone, FCNHead(chs, num_classes), aux_head)
