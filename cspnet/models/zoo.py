"""The zoo: each CSP model next to its plain twin, as data. Figures are checked by tests/test_zoo.py."""

from __future__ import annotations

from cspnet.errors import ConfigError
from cspnet.models.net import ModelCfg, StemCfg
from cspnet.models.registry import register_model
from cspnet.nn.stages import StageCfg

RESNET_STEM = StemCfg(out_chs=64, kernel_size=7, stride=2, pool=True)
DARKNET_STEM = StemCfg(out_chs=32, kernel_size=3, stride=1, pool=False)
LAYOUTS = ("timm", "darknet")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def _csp_resnet(widths, layout: str, **kw) -> ModelCfg:
    """CSPResNe(X)t-50. layout="timm": timm's cspnet.py (the default; timm weights).

    layout="darknet": the authors' csresnet50.cfg / csresnext50.cfg exactly: 2x2 stem pool, a first stage whose
    block part is 64 channels wide (the first bottleneck widens it, adding its input onto its first channels),
    linear split convs in stages 2-3 only, leaky slope 0.1.
    """
    _check_layout(layout)
    darknet = layout == "darknet"
    stages = _stages(
        (3, 3, 5, 2),
        widths,
        (1, 2, 2, 2),
        cross_linear=(False, True, True, False) if darknet else True,
        block_in_chs=(64, 0, 0, 0) if darknet else 0,
        **kw,
    )
    stem = StemCfg(out_chs=64, kernel_size=7, stride=2, pool=True, pool_size=2 if darknet else 3)
    return ModelCfg(stem, stages, act="leaky", leaky_slope=0.1 if darknet else 0.01)


def _stages(depths, widths, strides, **kw) -> tuple[StageCfg, ...]:
    """Zip per-stage lists into StageCfgs; a kw given as a tuple is per stage, otherwise shared."""
    out = []
    for i, (d, w, s) in enumerate(zip(depths, widths, strides)):
        out.append(StageCfg(d, w, s, **{k: (v[i] if isinstance(v, tuple) else v) for k, v in kw.items()}))
    return tuple(out)


# ResNet / CSPResNet (timm resnet50, timm cspresnet50 = darknet csresnet50.cfg)
@register_model(
    twin="cspresnet50",
    params_m=25.557,
    gmacs=4.089,
    timm_name="resnet50",
    paper="He et al. 2016 (torchvision/timm ResNet-50); authors' README baseline: darknet ResNet-50, 75.8 top-1",
)
def resnet50() -> ModelCfg:
    stages = _stages(
        (3, 4, 6, 3), (256, 512, 1024, 2048), (1, 2, 2, 2), bottle_ratio=0.25, partial_ratio=1.0, down="block"
    )
    return ModelCfg(RESNET_STEM, stages, act="relu")


@register_model(
    twin="resnet50",
    params_m=21.616,
    gmacs=3.459,
    timm_name="cspresnet50",
    paper="authors' README (ImageNet): CSPResNet-50, 21.57M, 8.97 BFLOPs at 256, 76.6 top-1",
)
def cspresnet50(layout: str = "timm") -> ModelCfg:
    # timm's depths 3,3,5,2: the darknet cfg's first 1x1 of each stage is the split conv, not a block
    return _csp_resnet((128, 256, 512, 1024), layout, expand_ratio=2.0, bottle_ratio=0.5)


# ResNeXt / CSPResNeXt
@register_model(
    twin="cspresnext50",
    params_m=25.029,
    gmacs=4.230,
    timm_name="resnext50_32x4d",
    paper="Xie et al. 2017 (ResNeXt-50 32x4d); authors' README baseline: 77.8 top-1",
)
def resnext50_32x4d() -> ModelCfg:
    stages = _stages(
        (3, 4, 6, 3),
        (256, 512, 1024, 2048),
        (1, 2, 2, 2),
        bottle_ratio=0.5,
        groups=32,
        partial_ratio=1.0,
        down="block",
    )
    return ModelCfg(RESNET_STEM, stages, act="relu")


@register_model(
    twin="resnext50_32x4d",
    params_m=20.570,
    gmacs=3.074,
    timm_name="cspresnext50",
    paper="authors' README (ImageNet): CSPResNeXt-50, 20.50M, 7.93 BFLOPs at 256, 77.9 top-1",
)
def cspresnext50(layout: str = "timm") -> ModelCfg:
    return _csp_resnet((256, 512, 1024, 2048), layout, bottle_ratio=1.0, groups=32)


# Darknet / CSPDarknet
@register_model(
    twin="cspdarknet53",
    params_m=41.610,
    gmacs=7.109,
    timm_name="darknet53",
    paper="Redmon & Farhadi 2018 (YOLOv3 backbone); authors' README: 41.57M, 18.57 BFLOPs at 256, 77.2 top-1",
)
def darknet53() -> ModelCfg:
    stages = _stages(
        (1, 2, 8, 8, 4),
        (64, 128, 256, 512, 1024),
        (2,) * 5,
        block="dark",
        bottle_ratio=0.5,
        partial_ratio=1.0,
    )
    return ModelCfg(DARKNET_STEM, stages, act="leaky")


@register_model(
    twin="darknet53",
    params_m=27.642,
    gmacs=5.003,
    timm_name="cspdarknet53",
    paper="authors' README (ImageNet): CSPDarkNet-53, 27.61M, 13.07 BFLOPs at 256, 77.2 top-1; YOLOv4 backbone (mish)",
)
def cspdarknet53() -> ModelCfg:
    stages = _stages(
        (1, 2, 8, 8, 4),
        (64, 128, 256, 512, 1024),
        (2,) * 5,
        block="dark",
        expand_ratio=(2.0, 1.0, 1.0, 1.0, 1.0),
        bottle_ratio=(0.5, 1.0, 1.0, 1.0, 1.0),
        down_growth=True,
    )
    return ModelCfg(DARKNET_STEM, stages, act="leaky")


# Small members for CPU work: ResNet-10 (basic blocks, as darknet's resnet10.cfg) and its CSP twin
@register_model(twin="cspresnet10", params_m=5.419, gmacs=0.889, paper="ResNet-10 (basic blocks), darknet resnet10.cfg")
def resnet10() -> ModelCfg:
    stages = _stages((1, 1, 1, 1), (64, 128, 256, 512), (1, 2, 2, 2), block="basic", partial_ratio=1.0, down="block")
    return ModelCfg(RESNET_STEM, stages, act="relu")


@register_model(twin="resnet10", params_m=3.482, gmacs=0.533, paper="CSPResNet-10: resnet10 with partial_ratio=0.5")
def cspresnet10() -> ModelCfg:
    stages = _stages((1, 1, 1, 1), (64, 128, 256, 512), (1, 2, 2, 2), block="basic", partial_ratio=0.5)
    return ModelCfg(RESNET_STEM, stages, act="relu")
