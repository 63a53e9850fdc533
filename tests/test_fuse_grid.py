"""The fused model equals the unfused one over a generated grid: every block type x fusion x gamma, darknet layout.

Eager (the oneDNN path, and the plain-op path it falls back to), after torch.compile and after ONNX export.
Each cell is shallow (stem + one stage), so fp32 rounding stays ~1e-6 and rel <= 1e-5 means something.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cspnet.deploy.fuse import FusedConvAct, FusedCrossStage, fuse_model
from cspnet.nn.bn import calibrate_bn
from cspnet.nn.layers import ConvBNAct
from cspnet.nn.stages import CrossStage, StageCfg

W, IMG = 16, 32
FUSIONS = ("both", "first", "last")
GAMMAS = (0.25, 0.5, 0.75, 1.0)
DENSE = dict(down="avgpool", split_conv=False, transition_ratio=0.5, plain_transition=True)
BLOCKS = {  # grid row -> (StageCfg fields, activation): activations cover oneDNN post-ops (relu, leaky, silu) and not (mish)
    "bottleneck": (dict(block="bottleneck", bottle_ratio=0.5), "relu"),
    "resnext": (dict(block="bottleneck", bottle_ratio=1.0, groups=4), "leaky"),
    "basic": (dict(block="basic"), "silu"),
    "dark": (dict(block="dark", bottle_ratio=0.5, down_growth=True), "leaky"),
    "dense": (dict(block="dense", growth_rate=4, bottle_ratio=2.0, transition="preact", **DENSE), "relu"),
    "dense2": (dict(block="dense2", growth_rate=8, bottle_ratio=2.0, **DENSE), "mish"),
    # cspresnet50(layout="darknet"): an uneven first split (block part narrower), widened by a pad shortcut
    "darknet-layout": (
        dict(block="bottleneck", bottle_ratio=0.5, expand_ratio=2.0, block_in_chs=W // 2, cross_linear=True),
        "leaky",
    ),
}


def cell(block: str, fusion: str, gamma: float) -> nn.Sequential:
    """Stem conv + one stride-2 stage of the grid cell (gamma 1.0: the plain stage)."""
    fields, act = BLOCKS[block]
    if gamma == 1.0:
        fields = {k: v for k, v in fields.items() if k != "block_in_chs"}
    width = W + 8 if "growth_rate" in fields else W
    cfg = StageCfg(2, width, 2, partial_ratio=gamma, fusion=fusion, **fields)
    return nn.Sequential(ConvBNAct(3, W, 3, 1, act="relu"), CrossStage(W, cfg, act=act, leaky_slope=0.1))


def calibrated(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # affine terms that are not the identity, so folding is tested
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
    calibrate_bn(model, torch.randn(4, 3, IMG, IMG))  # activations O(1): a relative error means something
    return model.eval()


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("block", list(BLOCKS))
def test_fused_equals_unfused_eager(block):
    x = torch.randn(2, 3, IMG, IMG)
    for fusion in FUSIONS:
        for gamma in GAMMAS:
            model = calibrated(cell(block, fusion, gamma))
            with torch.no_grad():
                ref = model(x)
            fused = fuse_model(copy.deepcopy(model))
            assert not any(isinstance(m, (ConvBNAct, CrossStage)) for m in fused.modules())
            assert isinstance(fused[1], FusedCrossStage)
            plain = fuse_model(copy.deepcopy(model), onednn=False)  # BN folded, plain torch ops
            with torch.inference_mode():
                out, out_plain = fused(x), plain(x)
            at = f"{block}, fusion={fusion}, gamma={gamma}"
            assert rel(out, ref) <= 1e-5, at
            assert rel(out_plain, ref) <= 1e-5, at
            units = [m for m in fused.modules() if isinstance(m, FusedConvAct)]
            assert all(m._packed for m in units), f"{at}: a fused conv did not take the oneDNN path"


def wide_model() -> tuple[nn.Module, list[int]]:
    """Grid cells side by side on one input (no deep stack: errors do not compound), flat outputs concatenated.

    Every block type with every fusion, gamma rotating so that every (fusion, gamma) pair occurs too: 21 cells,
    not 84 (the eager test covers all of them; compile and export cost grows with the graph).
    """

    class Cells(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cells = nn.ModuleList(
                cell(b, f, GAMMAS[(i + j) % len(GAMMAS)]) for i, b in enumerate(BLOCKS) for j, f in enumerate(FUSIONS)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([c(x).flatten(1) for c in self.cells], 1)

    model = calibrated(Cells())
    sizes = [c(torch.zeros(1, 3, IMG, IMG)).numel() for c in model.cells]
    return model, sizes


def assert_cells_equal(out: torch.Tensor, ref: torch.Tensor, sizes: list[int], what: str) -> None:
    for i, (o, r) in enumerate(zip(out.split(sizes, 1), ref.split(sizes, 1))):
        assert rel(o, r) <= 1e-5, f"{what}: cell {i}"


@pytest.mark.slow
def test_fused_equals_unfused_compiled_and_onnx(tmp_path):
    from cspnet.deploy.export import export_onnx, ort_session

    model, sizes = wide_model()
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        ref = model(x)
    fused = fuse_model(copy.deepcopy(model))
    torch._dynamo.reset()
    compiled = torch.compile(fused, backend="eager", fullgraph=True)  # dynamo: the plain-op branch, one graph
    with torch.no_grad():
        assert_cells_equal(compiled(x), ref, sizes, "torch.compile")
    path = export_onnx(fused, tmp_path / "grid.onnx", x)
    out = ort_session(path, 1).run(None, {"images": x.numpy()})[0]
    assert_cells_equal(torch.from_numpy(np.asarray(out)), ref, sizes, "onnxruntime")


@pytest.mark.slow
def test_fused_equals_unfused_inductor():
    """The deploy compile (inductor, freezing) on one small cell: residual and split-conv modules."""
    model = calibrated(cell("resnext", "both", 0.5))
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        ref = model(x)
        torch._dynamo.reset()
        out = torch.compile(fuse_model(copy.deepcopy(model)), options={"freezing": True})(x)
    assert rel(out, ref) <= 1e-5
