"""The official cfgs in shared/darknet: figures against darknet's, native twins, the CLI."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from cspnet import from_darknet
from cspnet.bench.measure import count_macs, count_params
from cspnet.cli import main
from cspnet.interop.darknet.model import Conv, DarknetModel, Yolo
from cspnet.interop.darknet.native import NATIVE
from cspnet.interop.darknet.weights import write_weights
from cspnet.models import CspNet, create_model

# shared/darknet/SOURCES.md: params (M, as PyTorch counts them) and darknet's "Total BFLOPS" at the cfg's size
FIGURES = {
    "csresnet50": (256, 21.61, 8.972),
    "csresnext50": (256, 20.56, 7.933),
    "csdarknet53": (256, 27.64, 13.071),
    "csdarknet53-omega": (256, 27.64, 13.071),
    "darknet53": (256, 41.61, 18.576),
    "resnet50": (256, 22.78, 10.00),
    "resnext50": (256, 22.25, 10.11),
    "resnet10": (256, 5.24, 2.27),
    "csresnext50-panet-spp": (416, None, 47.098),
    "yolov4": (608, 64.36, 128.459),
    "yolov4-tiny": (416, 6.06, 6.910),
    "yolov4-csp": (512, 52.92, 77.003),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: these CPU forwards are small and the suite runs two workers on two cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def meta_model(path) -> DarknetModel:
    with torch.device("meta"):
        return DarknetModel.from_cfg(path)


@pytest.mark.slow
def test_every_cfg_builds(darknet_dir):
    cfgs = sorted(darknet_dir.glob("*.cfg"))
    assert {p.stem for p in cfgs} >= set(FIGURES)
    for p in cfgs:
        assert meta_model(p).shapes, p


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_params_and_bflops_match_darknet(darknet_dir, name):
    img, params_m, bflops = FIGURES[name]
    m = meta_model(darknet_dir / f"{name}.cfg")
    assert m.img_size == (img, img)
    got = 2 * count_macs(m, img) / 1e9
    assert got == pytest.approx(bflops, rel=0.005)
    if params_m is not None:
        assert count_params(m) / 1e6 == pytest.approx(params_m, rel=0.005)


def randomize_bn(model: DarknetModel) -> None:
    """Random BN affine, then running stats from one batch, so the signal reaches the logits (and depends on x)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.momentum = 1.0
        model.train()(torch.randn(4, 3, 64, 64))
    for m in bns:
        m.momentum = 0.1
    model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["csdarknet53", "csdarknet53-omega", "darknet53", "csresnet50", "csresnext50"])
def test_native_twin_equals_cfg_model(darknet_dir, tmp_path, stem):
    cfg = darknet_dir / f"{stem}.cfg"
    src = DarknetModel.from_cfg(cfg)
    randomize_bn(src)
    weights = write_weights(src, tmp_path / f"{stem}.weights")
    native = from_darknet(cfg, weights)
    generic = from_darknet(cfg, weights, native=False)
    assert isinstance(native, CspNet) and native.name == NATIVE[stem] and not native.training
    assert isinstance(generic, DarknetModel)
    assert count_params(native) == count_params(generic)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        probs = generic(x)
        logits = native(x)
    torch.testing.assert_close(logits.softmax(1), probs, rtol=1e-4, atol=1e-6)
    assert (logits[0] - logits[1]).abs().max() > 0.1 * logits.abs().max()  # the output depends on the input


@pytest.mark.slow
@pytest.mark.parametrize("stem, native", [("csresnet50", "cspresnet50"), ("csresnext50", "cspresnext50")])
def test_authors_layout_differs_from_timms(darknet_dir, stem, native):
    """The authors' csresnet50/csresnext50 are the native model with layout="darknet", not timm's default layout."""
    with torch.device("meta"):
        cfg_params = count_params(meta_model(darknet_dir / f"{stem}.cfg"))
        assert count_params(create_model(native, layout="darknet")) == cfg_params
        assert count_params(create_model(native)) != cfg_params
    # the uneven first stage: cross part 64->128, block part 64->64, as the native split (128, 64)
    m = from_darknet(darknet_dir / f"{stem}.cfg", verify=False)
    assert m.stages[0].split == (128, 64)
    assert m.stem.pool.kernel_size == 2


def test_yolov4_detector_forward(darknet_dir):
    m = from_darknet(darknet_dir / "yolov4.cfg", native=False)  # the native twin: tests/test_yolo.py
    assert isinstance(m, DarknetModel) and m.is_detector
    yolos = [m.layers[i] for i in m.yolo_layers]
    assert [y.scale_x_y for y in yolos] == [1.2, 1.1, 1.05]
    assert yolos[0].anchors.tolist() == [[12, 16], [19, 36], [40, 28]]
    # the SPP block: three stride-1 maxpools keep the 19x19 map; darknet's default padding = size - 1
    pools = [layer for layer in m.layers if layer.kind == "maxpool"]
    assert [(p.size, p.stride, p.padding) for p in pools] == [(5, 1, 4), (9, 1, 8), (13, 1, 12)]
    with torch.no_grad():
        out = m(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 85)
    assert torch.isfinite(out).all() and ((out[..., 4:] >= 0) & (out[..., 4:] <= 1)).all()


def test_yolov4_tiny_route_groups(darknet_dir):
    m = meta_model(darknet_dir / "yolov4-tiny.cfg")
    assert (m.layers[3].groups, m.layers[3].group_id) == (2, 1) and m.shapes[3][0] == m.shapes[2][0] // 2
    assert isinstance(m.layers[-1], Yolo) and isinstance(m.layers[0], Conv)


@pytest.mark.slow
def test_cli_info(darknet_dir, capsys):
    assert main(["darknet", "info", str(darknet_dir / "csdarknet53.cfg")]) == 0
    out = capsys.readouterr().out
    assert "108 layers, 27.642M params, 13.06" in out and "route" in out
    assert main(["darknet", "info", str(darknet_dir / "yolov4.cfg"), "--img", "320"]) == 0
    assert "at 320x320" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_convert(darknet_dir, tmp_path, capsys):
    cfg = darknet_dir / "csdarknet53.cfg"
    src = DarknetModel.from_cfg(cfg)
    weights = write_weights(src, tmp_path / "w.weights")
    out = tmp_path / "w.safetensors"
    assert main(["darknet", "convert", str(cfg), str(weights), str(out)]) == 0
    assert "native cspdarknet53" in capsys.readouterr().out
    native = create_model("cspdarknet53", leaky_slope=0.1)
    assert set(load_file(str(out))) == set(native.state_dict())
    # a weights file for another cfg: refused with the counts, as a one-line CLI error
    bad = write_weights(DarknetModel.from_cfg(darknet_dir / "resnet10.cfg"), tmp_path / "r.weights")
    assert main(["darknet", "convert", str(cfg), str(bad), str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("cspnet: error: ") and "values after the header but" in err and not (tmp_path / "x.pt").exists()
    )
