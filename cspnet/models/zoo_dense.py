"""The dense members of the zoo: DenseNet-201 and PeleeNet, each beside its CSP twin (CSPNet paper Fig. 2-3).

A plain dense stage is [2x2 avg pool] -> dense block -> 1x1 transition (paper Fig. 3a). Its CSP twin splits the
stage input's channels (no 1x1 before the split, Fig. 2b), runs one part through the dense block and fuses with a
partial transition layer: transition -> concat -> transition (Fig. 3b, fusion "both"). Figures: docs/models.md.
"""

from __future__ import annotations

from cspnet.models.net import ModelCfg, StemCfg
from cspnet.models.registry import register_model
from cspnet.nn.stages import StageCfg

DENSENET_STEM = StemCfg(out_chs=64, kernel_size=7, stride=2, pool=True)
PELEE_STEM = StemCfg(out_chs=32, kind="pelee")


def _dense_stages(depths, out_chs, bottle_ratios, last_transition: bool, **kw) -> tuple[StageCfg, ...]:
    """One StageCfg per dense block; stage i>0 opens with the 2x2 avg pool that ends the previous transition."""
    n = len(depths)
    return tuple(
        StageCfg(
            depths[i],
            out_chs[i],
            1 if i == 0 else 2,
            down="avgpool",
            growth_rate=32,
            bottle_ratio=bottle_ratios[i],
            plain_transition=last_transition or i < n - 1,
            **kw,
        )
        for i in range(n)
    )


# DenseNet-201 (Huang et al. 2017, DenseNet-BC: bn_size 4, compression 0.5), torchvision's densenet201 layer for layer
_DENSENET201 = dict(depths=(6, 12, 48, 32), out_chs=(128, 256, 896, 1920), bottle_ratios=(4.0,) * 4)


@register_model(
    twin="cspdensenet201",
    params_m=20.014,
    gmacs=4.291,
    paper="Huang et al. 2017 (torchvision densenet201); CSPNet README baseline is DenseNet-201-Elastic 19.48M/8.77 BFLOPs",
)
def densenet201() -> ModelCfg:
    stages = _dense_stages(**_DENSENET201, last_transition=False, block="dense", transition="preact", partial_ratio=1.0)
    return ModelCfg(DENSENET_STEM, stages, act="relu", head_norm=True)


@register_model(
    twin="densenet201",
    params_m=21.284,
    gmacs=4.250,
    paper="CSPNet Fig. 2b/3b (CSPDenseNet); README: CSPDenseNet-201-Elastic 20.17M/7.13 BFLOPs, 77.9 top-1",
)
def cspdensenet201() -> ModelCfg:
    # partial transition layers in DenseNet's own style (pre-activation, compression 0.5 on the dense part)
    stages = _dense_stages(
        **_DENSENET201,
        last_transition=True,
        block="dense",
        transition="preact",
        partial_ratio=0.5,
        split_conv=False,
        transition_ratio=0.5,
    )
    return ModelCfg(DENSENET_STEM, stages, act="relu", head_norm=True)


# PeleeNet (Wang, Li & Ling 2018): stem block, two-way dense layers, transitions without compression
_PELEENET = dict(depths=(3, 4, 8, 6), out_chs=(128, 256, 512, 704), bottle_ratios=(1.0, 2.0, 4.0, 4.0))


@register_model(
    twin="csppeleenet",
    params_m=2.802,
    gmacs=0.508,
    paper="Wang et al. 2018 (Pelee); CSPNet README/Table 1 baseline: 2.79M, 1.017 BFLOPs, 70.7 top-1",
)
def peleenet() -> ModelCfg:
    stages = _dense_stages(**_PELEENET, last_transition=True, block="dense2", partial_ratio=1.0)
    return ModelCfg(PELEE_STEM, stages, act="relu")


@register_model(
    twin="peleenet",
    params_m=2.366,
    gmacs=0.431,
    paper="CSPNet Table 1 ablation subject; README: CSPPeleeNet 2.83M, 0.888 BFLOPs, 70.9 top-1",
)
def csppeleenet() -> ModelCfg:
    # Pelee's own transitions keep the width; compressing the dense part's transition by half (DenseNet-BC's 0.5)
    # is what makes the twin cheaper, as in the paper: with transition_ratio=1.0 it costs 9% more (docs/models.md)
    stages = _dense_stages(
        **_PELEENET, last_transition=True, block="dense2", partial_ratio=0.5, split_conv=False, transition_ratio=0.5
    )
    return ModelCfg(PELEE_STEM, stages, act="relu")
