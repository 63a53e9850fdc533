"""Dense members of the zoo: DenseNet-201 / PeleeNet and their CSP twins, dense blocks inside CrossStage."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cspnet
from cspnet.bench.measure import count_macs, count_params
from cspnet.errors import ConfigError
from cspnet.nn.layers import BNActConv, ConvBNAct
from cspnet.nn.stages import CrossStage, StageCfg

DENSE = ["densenet201", "cspdensenet201", "peleenet", "csppeleenet"]


def _meta_counts(build) -> tuple[int, int]:
    with torch.device("meta"):
        model = build()
    return count_params(model), count_macs(model, 224)


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    # fresh BN is the identity in eval mode; random statistics make folding and key mix-ups visible
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", DENSE)
def test_registry_figures_are_measured(name):
    info = cspnet.model_info(name)
    params, macs = _meta_counts(lambda: cspnet.create_model(name))
    assert round(params / 1e6, 3) == info.params_m
    assert round(macs / 1e9, 3) == info.gmacs
    assert cspnet.model_info(info.twin).twin == name


@pytest.mark.slow
def test_densenet201_equals_torchvision_in_params_and_macs():
    ours = _meta_counts(lambda: cspnet.create_model("densenet201"))
    ref = _meta_counts(torchvision.models.densenet201)
    assert ours == ref == (20_013_928, ours[1])


@pytest.mark.slow
@torch.no_grad()
def test_densenet201_takes_torchvision_weights_and_matches_its_output():
    ref = torchvision.models.densenet201(num_classes=10).eval()
    _randomize_bn(ref)
    ours = cspnet.create_model("densenet201", num_classes=10).eval()
    # same layers in the same order: transfer by position, checking every shape
    pairs = list(zip(ours.state_dict().items(), ref.state_dict().items(), strict=True))
    assert all(a.shape == b.shape for (_, a), (_, b) in pairs)
    ours.load_state_dict({k: v for (k, _), (_, v) in pairs})
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_peleenet_matches_the_pelee_paper():
    # Pelee paper: 2.8M params, 508M MACs at 224; CSPNet README: 2.79M, 1.017 BFLOPs
    params, macs = _meta_counts(lambda: cspnet.create_model("peleenet"))
    assert params == pytest.approx(2.8e6, rel=0.01)
    assert 2 * macs / 1e9 == pytest.approx(1.017, rel=0.005)


@pytest.mark.slow
@pytest.mark.parametrize("csp,plain", [("cspdensenet201", "densenet201"), ("csppeleenet", "peleenet")])
def test_twins_share_width_and_fusion_first_cuts_macs(csp, plain):
    a, b = cspnet.build_cfg(csp), cspnet.build_cfg(plain)
    assert [s.out_chs for s in a.stages] == [s.out_chs for s in b.stages]
    assert all(s.is_csp for s in a.stages) and not any(s.is_csp for s in b.stages)
    # the partial dense block alone (fusion first keeps the plain transition's width) saves computation
    _, csp_macs = _meta_counts(lambda: cspnet.create_model(csp, fusion="first"))
    _, plain_macs = _meta_counts(lambda: cspnet.create_model(plain))
    assert csp_macs < plain_macs


@pytest.mark.parametrize("name", DENSE)
def test_twins_run_on_a_tiny_input(name):
    model = cspnet.create_model(name, num_classes=7)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()


@pytest.mark.parametrize("block,transition", [("dense", "preact"), ("dense2", "conv")])
@pytest.mark.parametrize("fusion", ["both", "first", "last"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("split_conv", [False, True])
def test_every_fusion_and_ratio_runs_with_dense_blocks(block, transition, fusion, ratio, split_conv):
    cfg = StageCfg(
        2,
        48,
        2,
        block=block,
        growth_rate=8,
        bottle_ratio=2.0,
        down="avgpool",
        partial_ratio=ratio,
        fusion=fusion,
        split_conv=split_conv,
        transition=transition,
        transition_ratio=0.5,
        plain_transition=True,
    )
    stage = CrossStage(32, cfg)
    y = stage(torch.randn(1, 32, 16, 16))
    assert y.shape == (1, 48, 8, 8) == (1, stage.out_chs, 8, 8)


@pytest.mark.parametrize("name", ["cspdensenet201", "csppeleenet"])
@torch.no_grad()
def test_fuse_keeps_eval_output(name):
    model = cspnet.create_model(name, num_classes=10).eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 64, 64)
    ref = model(x)
    model.fuse()
    torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)
    # conv-BN-act units are folded; pre-activation BN-act-conv units keep their BN (an act sits between)
    assert not any(isinstance(m, ConvBNAct) for m in model.modules())
    kept = [m for m in model.modules() if isinstance(m, BNActConv)]
    assert all(isinstance(m.bn, nn.BatchNorm2d) for m in kept) and bool(kept) == (name == "cspdensenet201")


def test_dense_layer_errors_are_one_line():
    with pytest.raises(ConfigError, match="downsample with the stage's down='avgpool'"):
        CrossStage(32, StageCfg(2, 48, 2, block="dense", growth_rate=8, partial_ratio=1.0, down="block"))
    with pytest.raises(ConfigError, match="must exceed in_chs"):
        cspnet.create_model("peleenet", growth_rate=0)
    with pytest.raises(ConfigError, match="unknown transition"):
        StageCfg(1, 8, transition="post")
    with pytest.raises(ConfigError, match="unknown stem kind"):
        cspnet.StemCfg(kind="pelee2")


def test_two_way_dense_layer_with_a_tiny_growth_has_no_zero_width_conv():
    from cspnet.nn.blocks import TwoWayDenseLayer

    layer = TwoWayDenseLayer(16, 20)  # growth 4: half 2, Pelee's rounding would give a 0-channel bottleneck
    assert layer.branch1a.conv.out_channels == layer.branch2a.conv.out_channels == 4
    assert layer(torch.randn(1, 16, 8, 8)).shape == (1, 20, 8, 8)
    assert TwoWayDenseLayer(64, 96, bottle_ratio=2.0).branch1a.conv.out_channels == 32  # Pelee's own sizes unchanged
