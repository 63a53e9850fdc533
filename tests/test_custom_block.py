"""A user's own block, never seen by CrossStage: registered, CSP-ised, trained, fused; a model family in a few lines."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cspnet
from cspnet.models import CspNet, ModelCfg, StemCfg, create_model, list_models, register_model
from cspnet.models.registry import _REGISTRY
from cspnet.nn import BLOCKS, ConvBNAct, StageCfg, make_act, register_block


class DWSeparable(nn.Module):
    """Depthwise 3x3, pointwise 1x1, squeeze-excitation (plain conv + BN: not a ConvBNAct), residual add."""

    def __init__(self, in_chs, out_chs, stride=1, bottle_ratio=1.0, groups=1, act="relu", leaky_slope=0.01, **kw):
        super().__init__()
        self.out_chs = out_chs
        self.dw = ConvBNAct(in_chs, in_chs, 3, stride, groups=in_chs, act=act, leaky_slope=leaky_slope)
        self.pw = ConvBNAct(in_chs, out_chs, 1, act=None)
        mid = max(1, int(out_chs * bottle_ratio / 4))
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(out_chs, mid, 1), nn.ReLU(), nn.Conv2d(mid, out_chs, 1), nn.Sigmoid()
        )
        self.proj = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))
        self.has_proj = stride != 1 or in_chs != out_chs
        self.act = make_act(act, leaky_slope)

    def forward(self, x):
        y = self.pw(self.dw(x))
        return self.act(y * self.se(y) + (self.proj(x) if self.has_proj else x))


@pytest.fixture
def registered():
    """Register the block and a model family; undo both so other tests see the stock registries."""
    blocks, models = dict(BLOCKS), dict(_REGISTRY)
    register_block("test_dwsep")(DWSeparable)

    @register_model(twin="test_dwnet")
    def test_cspdwnet() -> ModelCfg:
        stages = tuple(StageCfg(d, w, 2, block="test_dwsep", partial_ratio=0.5) for d, w in ((1, 32), (2, 64)))
        return ModelCfg(StemCfg(out_chs=16, kernel_size=3, stride=2, pool=False), stages, act="silu")

    @register_model(twin="test_cspdwnet")
    def test_dwnet() -> ModelCfg:
        return cspnet.build_cfg("test_cspdwnet", partial_ratio=1.0, down="block")

    yield
    BLOCKS.clear(), BLOCKS.update(blocks)
    _REGISTRY.clear(), _REGISTRY.update(models)


def _train(model: nn.Module, steps: int = 8) -> list[float]:
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # Adam: first step imports for seconds
    model.train()
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_registered_block_is_csp_ised_trained_and_fused(registered):
    model = create_model("test_cspdwnet", num_classes=4)
    stage = model.stages[1]
    assert isinstance(stage.blocks[0], DWSeparable) and len(stage.blocks) == 2
    assert stage.split == (32, 32)  # gamma = 0.5 of the 64-channel split conv: half cross, half through the blocks
    losses = _train(model)
    assert losses[-1] < losses[0], losses
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        fused = model.fuse()
        got = fused(x)
    assert not any(
        isinstance(getattr(m, "bn", None), nn.BatchNorm2d) for m in fused.modules() if isinstance(m, ConvBNAct)
    )
    assert any(isinstance(m, DWSeparable) for m in fused.modules()), "the unknown block must survive fusion"
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_model_family_in_a_few_lines(registered):
    assert {"test_cspdwnet", "test_dwnet"} <= set(list_models("test_*"))
    csp, plain = create_model("test_cspdwnet"), create_model("test_dwnet")
    assert plain.stages[1].split is None and plain.stages[1].blocks[0].has_proj  # plain: stride in the first block
    assert csp.stages[1].split == (32, 32) and csp(torch.rand(1, 3, 32, 32)).shape == (1, 1000)
    feats = create_model("test_cspdwnet", features_only=True)(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [16, 32, 64]


def test_block_class_passed_directly():
    cfg = ModelCfg(StemCfg(out_chs=8, kernel_size=3, stride=1, pool=False), (StageCfg(1, 16, 2, block=DWSeparable),))
    model = CspNet(cfg, num_classes=2)
    assert isinstance(model.stages[0].blocks[0], DWSeparable)
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 2)
    # any zoo model takes it as an override: CSPResNet-10's stages with this block
    assert isinstance(create_model("cspresnet10", block=DWSeparable).stages[3].blocks[0], DWSeparable)


def test_protocol_errors_are_one_line():
    with pytest.raises(cspnet.ConfigError, match="register_block"):
        StageCfg(1, 16, block="no_such_block")

    class NoOutChs(nn.Module):
        def __init__(self, in_chs, out_chs, **kw):
            super().__init__()

    with pytest.raises(cspnet.ConfigError, match="out_chs"):
        CspNet(ModelCfg(StemCfg(out_chs=8, kernel_size=3, stride=1, pool=False), (StageCfg(1, 16, block=NoOutChs),)))
