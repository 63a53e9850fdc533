"""Native YOLO detectors: the darknet cfgs' networks (params, FLOPs, outputs), OpenCV parity, the model interface."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cspnet import create_model, from_darknet, list_models, model_info
from cspnet.bench.measure import count_macs, count_params
from cspnet.data.boxes import kmeans_anchors
from cspnet.errors import ConfigError, InputError
from cspnet.interop.darknet.model import DarknetModel
from cspnet.interop.darknet.native import darknet_boxes
from cspnet.interop.darknet.weights import random_weights
from cspnet.models.yolo import YoloDetector
from cspnet.nn.bn import calibrate_bn
from cspnet.nn.layers import ConvBNAct

# cfg stem -> (native name, the cfg's own input size, darknet's params (M) and BFLOPs there; SOURCES.md)
CFGS = {
    "yolov4-tiny": ("yolov4-tiny", 416, 6.06, 6.910),
    "yolov4": ("yolov4", 608, 64.36, 128.459),
    "yolov4-csp": ("yolov4-csp", 512, 52.92, 77.003),
    "csresnext50-panet-spp": ("cspresnext50-panet-spp", 416, None, 47.098),
}
BIG = ["yolov4", "yolov4-csp", "csresnext50-panet-spp"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def opencv_rows(cfg, weights, x: torch.Tensor) -> torch.Tensor:
    """OpenCV's darknet importer on the same cfg, weights and input: rows of all [yolo] layers, strides ascending."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip("this OpenCV has no darknet importer (opencv-python-headless<5 has it)")
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(x.numpy())
    outs = net.forward(net.getUnconnectedOutLayersNames())
    return torch.from_numpy(np.concatenate(sorted(outs, key=lambda o: -o.shape[0]), 0))


def as_opencv(out: torch.Tensor, img: int) -> torch.Tensor:
    """Our (N, 5 + C) rows in OpenCV's units: boxes normalised to the input, class scores times objectness."""
    y = out.clone()
    y[:, :4] /= img
    y[:, 5:] *= y[:, 4:5]
    return y


def assert_opencv_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """Within 1e-5 (rtol and atol). OpenCV zeroes class scores <= its threshold 0.2: those must be <= 0.2 here."""
    torch.testing.assert_close(ours[:, :5], ref[:, :5], rtol=1e-5, atol=1e-5)
    kept = ref[:, 5:] > 0
    torch.testing.assert_close(ours[:, 5:][kept], ref[:, 5:][kept], rtol=1e-5, atol=1e-5)
    assert (ours[:, 5:][~kept] <= 0.2 + 1e-5).all()
    assert kept.float().mean() > 0.05 and ref[:, 4].std() > 0.01  # the comparison covers varied, kept values


@pytest.fixture(scope="module")
def tiny(darknet_dir, tmp_path_factory):
    cfg = darknet_dir / "yolov4-tiny.cfg"
    dk, weights = random_weights(cfg, tmp_path_factory.mktemp("tiny") / "yolov4-tiny.weights")
    return cfg, dk, weights


@pytest.mark.parametrize("stem", [s if s == "yolov4-tiny" else pytest.param(s, marks=pytest.mark.slow) for s in CFGS])
def test_params_and_flops_equal_the_cfg(darknet_dir, stem):
    name, img, params_m, bflops = CFGS[stem]
    native = create_model(name).to("meta")  # built on the CPU: weight init on meta tensors is slower
    with torch.device("meta"):
        dk = DarknetModel.from_cfg(darknet_dir / f"{stem}.cfg")
    assert count_params(native) == count_params(dk)
    macs = count_macs(native, 128)  # at multiples of 32 every map is img / stride: MACs scale with img^2
    assert macs == count_macs(dk, 128)
    assert 2 * macs * (img / 128) ** 2 / 1e9 == pytest.approx(bflops, rel=0.005)
    if params_m:
        assert count_params(native) / 1e6 == pytest.approx(params_m, rel=0.001)
    assert model_info(name).task == "detect"


def test_tiny_from_darknet_is_native_and_equals_cfg_model(tiny):
    cfg, dk, weights = tiny
    native = from_darknet(cfg, weights)
    assert isinstance(native, YoloDetector) and native.name == "yolov4-tiny" and not native.training
    assert native.head.strides == (16, 32) and native.head.scale_x_y == (1.05, 1.05)
    assert native.head.anchors.tolist() == [[[23, 27], [37, 58], [81, 82]], [[81, 82], [135, 169], [344, 319]]]
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ref, out = darknet_boxes(dk, x), native(x)
    assert out.shape == (2, 3 * (6 * 8 + 3 * 4), 85)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)
    # float64: the mapping is exact, not merely close
    with torch.no_grad():
        torch.testing.assert_close(
            native.double()(x.double()), darknet_boxes(dk.double(), x.double()), rtol=1e-12, atol=1e-9
        )
    dk.float()
    assert (out[0] - out[1]).abs().max() > 0.01  # the output depends on the input


def test_tiny_agrees_with_opencv(tiny):
    cfg, _, weights = tiny
    native = from_darknet(cfg, weights)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = as_opencv(native(x)[0], 128)
    assert_opencv_close(ours, opencv_rows(cfg, weights, x))


@pytest.mark.slow
@pytest.mark.parametrize("stem", BIG)
def test_big_native_equals_cfg_model_and_opencv(darknet_dir, tmp_path, stem):
    cfg = darknet_dir / f"{stem}.cfg"
    dk, weights = random_weights(cfg, tmp_path / f"{stem}.weights")
    native = from_darknet(cfg, weights)
    assert isinstance(native, YoloDetector) and native.name == CFGS[stem][0]
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = native(x)
        torch.testing.assert_close(out, darknet_boxes(dk, x), rtol=1e-5, atol=1e-4)
    assert_opencv_close(as_opencv(out[0], 64), opencv_rows(cfg, weights, x))


def test_registry_tasks_and_num_classes():
    detectors = list_models(task="detect")
    assert {"yolov4", "yolov4-tiny", "yolov4-csp", "cspresnext50-panet-spp", "yolov4-darknet53"} <= set(detectors)
    assert not set(detectors) & set(list_models())  # the default lists classifiers, as before
    assert set(list_models(task=None)) == set(detectors) | set(list_models())
    m = create_model("yolov4-tiny", num_classes=3)
    assert m.head.num_classes == 3 and all(p.out_channels == 3 * 8 for p in m.head.preds)
    assert create_model("yolov4-tiny").num_classes == 80
    with pytest.raises(ConfigError, match="unknown override"):
        create_model("yolov4-tiny", partial_ratio=0.5)
    with pytest.raises(ConfigError, match="features_only"):
        create_model("yolov4-tiny", features_only=True)
    with pytest.raises(ConfigError, match="is a detect model"):
        create_model("yolov4", backbone="yolov4-tiny-s")
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("yolov4", backbone="cspdarknet99")


def test_interface_train_raw_eval_decoded():
    m = create_model("yolov4-tiny-s", num_classes=2)
    x = torch.randn(2, 3, 64, 96)
    raws = m.train()(x)
    assert [tuple(r.shape) for r in raws] == [(2, 3, 4, 6, 7), (2, 3, 2, 3, 7)]
    assert [tuple(r.shape) for r in m.forward_raw(x)] == [tuple(r.shape) for r in raws]
    m.eval()
    with torch.no_grad():
        out = m(x)
        raws = m.forward_raw(x)
    assert out.shape == (2, 3 * (24 + 6), 7)
    # (cell, anchor)-major rows: row (y * W + x) * A + a of level 0 is raws[0][:, a, y, x]
    box = m.head.decode_boxes(raws[0], 0)
    y, xx, a = 2, 5, 1
    torch.testing.assert_close(out[:, (y * 6 + xx) * 3 + a, :4], box[:, a, y, xx])
    torch.testing.assert_close(out[:, (y * 6 + xx) * 3 + a, 4:], raws[0][:, a, y, xx, 4:].sigmoid())
    # darknet's decode by hand: xy = (sig * s - (s - 1) / 2 + cell) * stride, wh = exp(t) * anchor
    t = raws[0][0, a, y, xx]
    s = m.head.scale_x_y[0]
    cx = ((t[0].sigmoid() * s - (s - 1) / 2) + xx) * 16
    assert box[0, a, y, xx, 0].item() == pytest.approx(cx.item(), rel=1e-6)
    assert box[0, a, y, xx, 3].item() == pytest.approx((t[3].exp() * m.head.anchors[0, a, 1]).item(), rel=1e-6)
    with pytest.raises(InputError, match="multiple of the stride 32"):
        m(torch.randn(1, 3, 50, 64))


def test_new_coords_decode():
    m = create_model("yolov4-csp", width=0.125, depth=0.33, num_classes=1).eval()
    assert m.head.new_coords and m.head.scale_x_y == (2.0, 2.0, 2.0)
    raw = torch.randn(1, 3, 2, 2, 6)
    box = m.head.decode_boxes(raw, 1)
    sig = raw.sigmoid()
    torch.testing.assert_close(box[..., 0], (sig[..., 0] * 2 - 0.5 + torch.arange(2.0)) * 16)
    torch.testing.assert_close(box[..., 2:], 4 * sig[..., 2:4] ** 2 * m.head.anchors[1].view(1, 3, 1, 1, 2))


def test_backbone_swap_and_twins():
    """Any zoo backbone under the same neck and head by one argument; a CSP detector and its twin differ by it."""
    with torch.device("meta"):
        a = create_model("yolov4", backbone="cspresnext50", backbone_args=(("layout", "darknet"),))
        b = create_model(
            "cspresnext50-panet-spp", anchors=create_model("yolov4").cfg.anchors, scale_x_y=(1.2, 1.1, 1.05)
        )
        assert count_params(a) == count_params(b)
        plain = create_model("yolov4", backbone="darknet53")
        assert plain.cfg.backbone_args == ()  # a swapped backbone starts from its zoo defaults
        twin = model_info("yolov4").twin
        assert create_model(twin).cfg.backbone == "darknet53" and model_info(twin).twin == "yolov4"
        assert model_info("yolov4").is_csp and not model_info(twin).is_csp
        small = create_model("yolov4-s")
        assert count_params(small) < 0.05 * count_params(create_model("yolov4"))


def test_kmeans_anchors_recovers_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[10.0, 20.0], [60.0, 40.0], [200.0, 180.0]])
    wh = torch.cat([c * (1 + 0.05 * torch.randn(200, 2, generator=g)) for c in centers])
    anchors = kmeans_anchors(wh, 3, img_size=416)
    torch.testing.assert_close(anchors, centers, rtol=0.03, atol=0)
    torch.testing.assert_close(kmeans_anchors(wh / 416, 3, img_size=416), anchors)  # normalised boxes
    with pytest.raises(InputError, match="at least 9 boxes"):
        kmeans_anchors(wh[:5], 9)


def condition(model: torch.nn.Module, x: torch.Tensor) -> None:
    """The well-conditioned random regime of `random_weights` for a native model (BN beta in [1, 2], calibrated)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(1.0, 2.0, generator=g)
        for p in model.head.preds:
            p.weight.mul_(0.3)
    calibrate_bn(model.train(), x)
    model.eval()


@pytest.mark.parametrize(
    "name, kw", [("yolov4-tiny", {}), ("yolov4-s", {}), ("yolov4-csp", dict(width=0.125, depth=0.33))]
)
def test_fused_equals_unfused(name, kw):
    """fuse() swaps every ConvBNAct (mish ones included: conv fused, mish after) and keeps the outputs."""
    m = create_model(name, num_classes=4, **kw)
    x = torch.randn(2, 3, 64, 64)
    condition(m, x)
    fused = copy.deepcopy(m).fuse()
    assert fused is not None and not fused.training
    assert not any(isinstance(mod, ConvBNAct) for mod in fused.modules())
    if name != "yolov4-tiny":
        assert any(isinstance(mod, torch.nn.Mish) for mod in fused.modules())
    with torch.no_grad():
        ref, out = m(x), fused(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert (ref[0] - ref[1]).abs().max() > 1e-3


@pytest.mark.slow
def test_cli_export_detector_onnx(tmp_path, capsys):
    """`cspnet export --model yolov4-tiny`: ONNX with the decode inside, checked against PyTorch in onnxruntime."""
    pytest.importorskip("onnxruntime")
    from cspnet.cli import main
    from cspnet.deploy.export import load_runner

    out = tmp_path / "tiny.onnx"
    torch.manual_seed(0)
    assert main(["export", "--model", "yolov4-tiny-s", "--img", "128", "--runs", "0", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()
    torch.manual_seed(0)
    model = create_model("yolov4-tiny-s").fuse()  # the same random weights as the CLI's
    x = torch.randn(2, 3, 128, 128)
    got = torch.from_numpy(load_runner(out, "onnx")(x))
    with torch.no_grad():
        ref = model(x)
    assert got.shape == ref.shape == (2, 3 * (8 * 8 + 4 * 4), 85)
    torch.testing.assert_close(got[..., 4:], ref[..., 4:], rtol=1e-4, atol=1e-5)  # probabilities
    torch.testing.assert_close(got[..., :4], ref[..., :4], rtol=1e-4, atol=1e-3)  # boxes in pixels
