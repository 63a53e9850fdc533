"""Parity with timm, the reference implementation: architecture (params, MACs) and converted weights."""

from __future__ import annotations

import pytest
import torch

import cspnet
from cspnet.bench.measure import count_macs, count_params

timm = pytest.importorskip("timm", reason="timm is the reference; install cspnet[timm]")

SHARED = ["resnet50", "cspresnet50", "resnext50_32x4d", "cspresnext50", "darknet53", "cspdarknet53"]
# figures from the issue (timm's published counts at 224x224): params (M), GMACs
REFERENCE = {
    "cspresnet50": (21.62, 3.46),
    "resnet50": (25.56, 4.09),
    "cspresnext50": (20.57, 3.07),
    "cspdarknet53": (27.64, 5.00),
    "darknet53": (41.61, 7.11),
}


def _meta_counts(model: torch.nn.Module) -> tuple[int, int]:
    return count_params(model), count_macs(model, 224)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED)
def test_params_and_macs_equal_timm(name):
    with torch.device("meta"):
        ours = cspnet.create_model(name)
        ref = timm.create_model(cspnet.model_info(name).timm_name)
    assert _meta_counts(ours) == _meta_counts(ref)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_published_figures(name):
    with torch.device("meta"):
        params, macs = _meta_counts(cspnet.create_model(name))
    ref_params, ref_gmacs = REFERENCE[name]
    assert round(params / 1e6, 2) == ref_params
    assert round(macs / 1e9, 2) == pytest.approx(ref_gmacs, abs=0.006)


def _calibrate_bn(model: torch.nn.Module) -> None:
    """Random BN affine, running stats from one batch: a key mix-up shows, and outputs keep a realistic scale."""
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
        m.momentum = 1.0
    model.train()(torch.randn(4, 3, 64, 64, generator=g))
    for m in bns:
        m.momentum = 0.1
    model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED)
@torch.no_grad()
def test_from_timm_outputs_match(name):
    ref = timm.create_model(cspnet.model_info(name).timm_name, num_classes=10)
    _calibrate_bn(ref)
    ours = cspnet.from_timm(ref).eval()
    assert isinstance(ours, cspnet.CspNet) and ours.num_classes == 10
    x = torch.randn(2, 3, 64, 64)
    out, expected = ours(x), ref(x)
    assert (out - expected).abs().max().item() <= 1e-4
    assert (expected[0] - expected[1]).abs().max() > 0.01  # the output depends on the input
    # features are the same too, not only logits
    assert torch.allclose(ours.forward_features(x), ref.forward_features(x), atol=1e-4)


def test_from_timm_rejects_unknown_architecture():
    ref = timm.create_model("resnet18")
    with pytest.raises(cspnet.ConfigError, match="no cspnet equivalent"):
        cspnet.from_timm(ref)


def test_pretrained_timm_offline_is_one_clear_error(monkeypatch):
    # as on a machine without network: the hub refuses at once instead of retrying
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    with pytest.raises(cspnet.CspnetError, match="pretrained=PATH"):
        cspnet.create_model("cspresnet50", pretrained="timm")


@pytest.mark.slow
def test_onnx_export_is_timms_graph(tmp_path):
    """Our cspresnet50 and timm's export to the same ONNX program, op for op with the same attributes and weight
    shapes, so a runtime row of one against the other (docs/results/deployment.md) times one program twice."""
    onnx = pytest.importorskip("onnx")
    from cspnet.deploy.export import export

    def program(model: torch.nn.Module, name: str) -> tuple[list, list]:
        path = tmp_path / f"{name}.onnx"
        export(model.eval(), path, "onnx", 64)
        g = onnx.load(str(path)).graph
        ops = [(n.op_type, [(a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute if a.name != "value"])
               for n in g.node]  # fmt: skip
        return ops, sorted(tuple(t.dims) for t in g.initializer)

    ours = program(cspnet.create_model("cspresnet50"), "ours")
    ref = program(timm.create_model(cspnet.model_info("cspresnet50").timm_name), "timm")
    assert len(ours[0]) > 100 and ours == ref
