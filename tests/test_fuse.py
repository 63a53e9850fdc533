"""model.fuse() (cspnet/deploy/fuse.py: fused modules swapped in) keeps the outputs, on every zoo model and beyond.

The generated grid over block types, fusions and gammas is tests/test_fuse_grid.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import family, randomized, smallest_per_family
from torch import nn

from cspnet.bench.measure import count_macs
from cspnet.deploy.fuse import FusedConvAct, FusedCrossStage, fuse_model
from cspnet.models import create_model, list_models
from cspnet.nn.layers import BNActConv, ConvBNAct
from cspnet.nn.stages import CrossStage

IMG = 32


def assert_same(out: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal within 1e-4 of the output's scale: folding BN changes float rounding, not the function."""
    assert out.shape == ref.shape
    err = float((out - ref).abs().max())
    assert err <= 1e-4 * float(ref.abs().max()), f"max |diff| {err:.2e} vs output scale {float(ref.abs().max()):.2e}"


def test_families_cover_the_zoo():
    fams = {family(n) for n in list_models()}
    assert {"resnet", "resnext", "darknet"} <= fams
    assert {family(n) for n in smallest_per_family()} == {family(n) for n in list_models() if n.startswith("csp")}


def fused_units(model: nn.Module) -> list[FusedConvAct]:
    return [m for m in model.modules() if isinstance(m, FusedConvAct)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_fused_model_matches_unfused(name):
    model = randomized(name)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        ref = model(x)
    assert ref.abs().max() > 0.1  # outputs of a useful scale: the 1e-4 check means something
    fused = copy.deepcopy(model).fuse()
    # every conv-BN-act unit is swapped; BN stays only in pre-activation units (an activation sits between)
    assert not any(isinstance(m, (ConvBNAct, CrossStage)) for m in fused.modules())
    assert all(isinstance(m, BNActConv) for m in fused.modules() if hasattr(m, "bn"))
    assert not any(p.requires_grad for u in fused_units(fused) for p in u.parameters())
    with torch.inference_mode():
        fused_out = fused(x)
        fused_cl = fused.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert all(u._packed for u in fused_units(fused))  # the oneDNN path ran
    assert_same(fused_out, ref)
    assert_same(fused_cl, ref)


def test_fuse_works_on_any_module_holding_the_units():
    """A detector built elsewhere: fuse_model swaps the units wherever they sit (lists, dicts, nested modules)."""
    torch.manual_seed(0)
    net = randomized("cspresnet10")

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = net.stages
            self.neck = nn.ModuleDict({"lateral": ConvBNAct(512, 64, 1, act="leaky", leaky_slope=0.1)})
            self.stem = net.stem

        def forward(self, x):
            return self.neck["lateral"](self.backbone(self.stem(x)))

    det = Detector().eval()
    x = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():
        ref = det(x)
    assert fuse_model(det) is det
    assert isinstance(det.neck["lateral"], FusedConvAct) and isinstance(det.backbone[0], FusedCrossStage)
    with torch.inference_mode():
        assert_same(det(x), ref)
    assert isinstance(fuse_model(ConvBNAct(3, 8)), FusedConvAct)  # a bare unit: use the return value


def test_packed_weights_follow_weight_changes():
    model = randomized("cspresnet10").fuse()
    x = torch.randn(1, 3, IMG, IMG)
    other = randomized("cspresnet10", seed=1)
    with torch.inference_mode():
        before = model(x)
    ref = fuse_model(copy.deepcopy(other), onednn=False)
    model.load_state_dict(ref.state_dict())  # in-place copies bump versions: the packed weights must follow
    with torch.inference_mode():
        after = model(x)
        assert_same(after, ref(x))
    assert not torch.allclose(before, after)
    unit = model.stages[0].conv_exp
    with torch.no_grad():
        unit.conv.bias.add_(1.0)
        ref.stages[0].conv_exp.conv.bias.add_(1.0)
        assert_same(model(x), ref(x))


def test_fused_path_steps_aside_for_autograd_and_flop_counting():
    model = randomized("cspresnet10")
    macs = count_macs(model, IMG)
    fused = copy.deepcopy(model).fuse()
    x = torch.randn(1, 3, IMG, IMG, requires_grad=True)
    fused(x).sum().backward()  # plain ops under autograd: gradients reach the input
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(u._packed for u in fused_units(fused))
    assert count_macs(fused, IMG) == macs > 0  # FlopCounterMode sees the real convs, not oneDNN calls
    with torch.inference_mode():
        fused(x.detach())
    assert all(u._packed for u in fused_units(fused))
    clone = copy.deepcopy(fused)  # packed oneDNN tensors are never copied or pickled
    assert not any(u._packed for u in fused_units(clone))


def test_fused_model_exports_to_torchscript_graph_without_bn():
    model = randomized("cspresnet10").fuse()
    traced = torch.jit.trace(model, torch.randn(1, 3, IMG, IMG), check_trace=False)
    graph = str(traced.inlined_graph)
    assert "batch_norm" not in graph and "mkldnn" not in graph


@pytest.mark.parametrize("opts", [dict(split=False), dict(pack=False), dict(onednn=False)])
def test_fuse_options_match(opts):
    model = randomized("cspresnext50")
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        ref = model(x)
    with torch.inference_mode():
        assert_same(fuse_model(model, **opts)(x), ref)


def test_packed_weights_follow_input_shape():
    model = fuse_model(randomized("cspresnet10"), max_shapes=3)
    ref = fuse_model(copy.deepcopy(model), onednn=False)
    unit = model.stem.conv1
    for batch in range(1, 6):
        x = torch.randn(batch, 3, IMG, IMG)
        with torch.inference_mode():
            assert_same(model(x), ref(x))
    shapes = [k for k in unit._packed if isinstance(k, tuple)]
    assert len(shapes) == 3 and shapes[-1] == ("w", (5, 3, IMG, IMG))


@pytest.mark.parametrize("name", ["cspdarknet53", "cspresnet50"])
def test_training_backward_runs(name):
    """In-place activations must not lose what autograd saved for backward (the residual adds are out of place)."""
    model = create_model(name, num_classes=10).train()
    model(torch.randn(2, 3, IMG, IMG)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
