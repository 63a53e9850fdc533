"""fuse() and the eval fast path (cspnet/deploy/fast.py) give the same outputs as conv -> BN -> act, on every zoo model."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

import cspnet.deploy.fast as fast
from cspnet.bench.measure import count_macs
from cspnet.models import create_model, list_models
from cspnet.nn.bn import calibrate_bn
from cspnet.nn.layers import ConvBNAct

IMG = 32


def assert_same(out: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal within 1e-4 of the output's scale: folding BN changes float rounding, not the function."""
    assert out.shape == ref.shape
    err = float((out - ref).abs().max())
    assert err <= 1e-4 * float(ref.abs().max()), f"max |diff| {err:.2e} vs output scale {float(ref.abs().max()):.2e}"


def family(name: str) -> str:
    """'cspresnext50' -> 'resnext': CSP and plain twins share a family."""
    return re.match(r"[a-z]+", name.removeprefix("csp")).group(0)


def smallest_per_family(csp: bool = True) -> list[str]:
    from cspnet.models import model_info

    best: dict[str, str] = {}
    for n in list_models():
        info = model_info(n)
        if info.is_csp != csp:
            continue
        f = family(n)
        if f not in best or (info.gmacs or 0) < (model_info(best[f]).gmacs or 0):
            best[f] = n
    return sorted(best.values())


@torch.no_grad()
def randomized(name: str, seed: int = 0) -> nn.Module:
    """A model whose BN statistics and affine terms are not the identity, so folding them is really tested."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.2)
    calibrate_bn(model, torch.randn(4, 3, IMG, IMG))  # real statistics keep eval activations O(1)
    return model.eval()


def plain(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference: conv -> BN -> act exactly as written, fast path off."""
    fast.ENABLED = False
    try:
        with torch.no_grad():
            return model(x)
    finally:
        fast.ENABLED = True


def test_families_cover_the_zoo():
    fams = {family(n) for n in list_models()}
    assert {"resnet", "resnext", "darknet"} <= fams
    assert {family(n) for n in smallest_per_family()} == {family(n) for n in list_models() if n.startswith("csp")}


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_fuse_and_fast_path_match_plain(name):
    model = randomized(name)
    x = torch.randn(2, 3, IMG, IMG)
    ref = plain(model, x)
    assert ref.abs().max() > 0.1  # outputs of a useful scale: the 1e-4 check means something
    with torch.inference_mode():
        assert torch.equal(model(x), ref)  # unfused models keep timm's exact arithmetic
        fast.FOLD_UNFUSED = True
        try:
            fast_out = model(x)
        finally:
            fast.FOLD_UNFUSED = False
    fused = copy.deepcopy(model).fuse()
    assert not any(isinstance(m.bn, nn.BatchNorm2d) for m in fused.modules() if isinstance(m, ConvBNAct))
    with torch.inference_mode():
        fused_out = fused(x)
        fused_cl = fused.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert_same(fast_out, ref)
    assert_same(fused_out, ref)
    assert_same(fused_cl, ref)
    assert_same(plain(fused, x), ref)


@pytest.fixture
def fold_unfused(monkeypatch):
    monkeypatch.setattr(fast, "FOLD_UNFUSED", True)


def test_fast_path_cache_follows_weight_changes(fold_unfused):
    model = randomized("cspresnet10")
    x = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():
        before = model(x)
        other = randomized("cspresnet10", seed=1)
        model.load_state_dict(other.state_dict())  # in-place copies bump versions: cache must refresh
        after = model(x)
    assert_same(after, plain(other, x))
    assert not torch.allclose(before, after)
    with torch.no_grad():
        model.stages[0].conv_exp.bn.running_var.mul_(4.0)
        assert_same(model(x), plain(model, x))


def test_fast_path_only_without_autograd(fold_unfused):
    model = randomized("cspresnet10")
    x = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():
        model(x)  # fills the caches
    unit = model.stages[0].conv_exp
    assert fast.cache_of(unit)
    assert not fast.active(unit)  # grad mode on: conv -> BN -> act, gradients reach every weight
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.train()
    with torch.no_grad():
        assert not fast.active(unit)
    # FlopCounterMode must see the real convs, not the fused oneDNN call
    model.eval()
    with torch.no_grad():
        macs = count_macs(model, IMG)
        fast.ENABLED = False
        try:
            assert count_macs(model, IMG) == macs > 0
        finally:
            fast.ENABLED = True
    # caches hold oneDNN tensors: copies and pickles start empty
    clone = copy.deepcopy(model)
    assert not fast.cache_of(clone.stages[0].conv_exp)


def test_fused_model_exports_to_torchscript_graph_without_bn(tmp_path):
    model = randomized("cspresnet10").fuse()
    traced = torch.jit.trace(model, torch.randn(1, 3, IMG, IMG), check_trace=False)
    assert "batch_norm" not in str(traced.inlined_graph)


@pytest.mark.parametrize("split_exp,split_transition", [(False, False), (True, True)])
def test_cross_stage_variants_match(monkeypatch, split_exp, split_transition):
    monkeypatch.setattr(fast, "SPLIT_EXP", split_exp)
    monkeypatch.setattr(fast, "SPLIT_TRANSITION", split_transition)
    model = randomized("cspresnext50")
    x = torch.randn(2, 3, IMG, IMG)
    ref = plain(model, x)
    with torch.inference_mode():
        assert_same(model.fuse()(x), ref)


def test_packed_weights_follow_input_shape():
    model = randomized("cspresnet10").fuse()
    unit = model.stem.conv1
    for batch in range(1, 7):
        x = torch.randn(batch, 3, IMG, IMG)
        with torch.inference_mode():
            assert_same(model(x), plain(model, x))
    if fast.PACK and fast._MKLDNN:
        shapes = [k for k in fast.cache_of(unit) if isinstance(k, tuple)]
        assert len(shapes) == fast.MAX_SHAPES and shapes[-1] == ("w", (6, 3, IMG, IMG))


@pytest.mark.parametrize("name", ["cspdarknet53", "cspresnet50"])
def test_training_backward_runs(name):
    """In-place residual adds must not overwrite what an in-place activation saved for backward."""
    model = create_model(name, num_classes=10).train()
    model(torch.randn(2, 3, IMG, IMG)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
