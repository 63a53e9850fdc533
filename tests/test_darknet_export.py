"""Native -> darknet: `to_darknet` and `cspnet darknet export` write a .cfg + .weights pair that OpenCV's darknet
importer runs with our outputs, and that maps back onto the same native model."""

from __future__ import annotations

import copy

import pytest
import torch
from test_yolo import as_opencv, assert_opencv_close, opencv_rows

from cspnet import create_model, from_darknet, to_darknet
from cspnet.cli import main
from cspnet.errors import ConfigError
from cspnet.interop.darknet import cfg_text, load_darknet_weights
from cspnet.interop.darknet.weights import random_weights
from cspnet.models.weights import save_state_dict
from cspnet.models.yolo import YoloDetector

ANCHORS = (((8, 9), (20, 30), (40, 42)), ((90, 80), (150, 160), (300, 280)))


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def conditioned(model: torch.nn.Module, tmp_path, img: int = 64) -> torch.nn.Module:
    """`model` with random_weights' well-conditioned random weights, via its own darknet layout."""
    cfg = tmp_path / "layout.cfg"
    cfg.write_text(cfg_text(model, img))
    _, weights = random_weights(cfg, tmp_path / "layout.weights")
    load_darknet_weights(model, weights, verbose=False)
    return model.eval()


def test_custom_tiny_to_darknet_equals_opencv_and_maps_back(tmp_path):
    """A 3-class yolov4-tiny with its own anchors -> .cfg + .weights: OpenCV's outputs are ours; read back, the
    native model is the same one, tensor for tensor."""
    model = conditioned(create_model("yolov4-tiny", num_classes=3, anchors=ANCHORS), tmp_path)
    cfg, weights = to_darknet(model, tmp_path / "out.cfg", tmp_path / "out.weights", img=320)
    assert "width=320" in cfg.read_text() and "classes=3" in cfg.read_text()
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)[0]
    assert_opencv_close(as_opencv(ours, 128), opencv_rows(cfg, weights, x))

    back = from_darknet(cfg, weights)
    assert isinstance(back, YoloDetector) and back.name == "yolov4-tiny" and back.num_classes == 3
    sa, sb = model.state_dict(), back.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.endswith("num_batches_tracked"))
    # the weights written are the ones loaded: the same bytes after the header
    assert weights.read_bytes()[20:] == (tmp_path / "layout.weights").read_bytes()[20:]


@pytest.mark.parametrize("name", ["yolov4-s", pytest.param("yolov4-csp", marks=pytest.mark.slow)])
def test_pan_detectors_to_darknet_equal_opencv(tmp_path, name):
    """The PANet (yolov4-s: CSPDarknet53-mish, SPP) and CSP-PAN (yolov4-csp: new_coords, logistic) layouts."""
    model = conditioned(create_model(name, num_classes=2), tmp_path)
    cfg, weights = to_darknet(model, tmp_path / "p.cfg", tmp_path / "p.weights")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)[0]
    assert_opencv_close(as_opencv(ours, 64), opencv_rows(cfg, weights, x))
    assert from_darknet(cfg, weights).name == name


@pytest.mark.slow
def test_classifier_to_darknet_equals_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    model = conditioned(create_model("cspdarknet53", num_classes=10, act="mish"), tmp_path)
    cfg, weights = to_darknet(model, tmp_path / "c.cfg", tmp_path / "c.weights", img=64)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(x.numpy())
    with torch.no_grad():
        probs = model(x).softmax(1)
    torch.testing.assert_close(torch.from_numpy(net.forward()).reshape(1, -1), probs, rtol=1e-4, atol=1e-6)
    assert from_darknet(cfg, weights).name == "cspdarknet53"


def test_what_darknet_cannot_express_is_refused(tmp_path):
    model = create_model("yolov4-tiny-s")
    with pytest.raises(ConfigError, match="fused .*before .fuse"):
        to_darknet(copy.deepcopy(model).fuse(), tmp_path / "f.cfg", tmp_path / "f.weights")
    with pytest.raises(ConfigError, match="darknet's leaky is fixed at 0.1"):
        to_darknet(create_model("yolov4-tiny-s", leaky_slope=0.2), tmp_path / "l.cfg", tmp_path / "l.weights")
    with pytest.raises(ConfigError, match="not a multiple of the model's stride 32"):
        to_darknet(model, tmp_path / "s.cfg", tmp_path / "s.weights", img=100)
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_export(tmp_path, capsys):
    model = conditioned(create_model("yolov4-tiny-s", num_classes=2), tmp_path)
    ckpt = save_state_dict(model.state_dict(), tmp_path / "best.safetensors")
    cfg, weights = tmp_path / "out.cfg", tmp_path / "out.weights"
    args = ["darknet", "export", str(ckpt), str(cfg), str(weights)]
    assert main([*args, "--model", "yolov4-tiny-s", "--img", "256"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {cfg} and {weights}: yolov4-tiny-s, 2 classes"
    back = from_darknet(cfg, weights)
    assert back.name == "yolov4-tiny-s" and "width=256" in cfg.read_text()
    sb = back.state_dict()
    assert all(torch.equal(v, sb[k]) for k, v in model.state_dict().items() if "num_batches" not in k)
    assert main([*args, "--model", "yolov4-tiny-s"]) == 2  # the outputs exist
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 2
    assert "pass --model NAME" in capsys.readouterr().err
    assert main(["darknet", "export", str(ckpt), str(cfg), str(ckpt), "--force"]) == 2  # never over its input
    assert "is also the input weights" in capsys.readouterr().err
