"""Darknet <-> native by structure: the cfg a native model writes is the authors' file, a renamed custom cfg maps
onto the native detector, and darknet `.weights` (whole, partial, another class count) load into native models."""

from __future__ import annotations

import copy
import re
import struct

import pytest
import torch

from cspnet import create_model, from_darknet
from cspnet.errors import InputError
from cspnet.interop.darknet import is_darknet_weights, load_darknet_weights
from cspnet.interop.darknet.emit import cfg_text
from cspnet.interop.darknet.match import emitted, first_difference, match_native, structure
from cspnet.interop.darknet.model import DarknetModel
from cspnet.interop.darknet.native import darknet_boxes, detector_args
from cspnet.interop.darknet.weights import random_weights, write_weights
from cspnet.models.yolo import YoloDetector

# cfg stem -> (native name, architecture arguments)
TWINS = {
    "yolov4-tiny": ("yolov4-tiny", {}),
    "csdarknet53": ("cspdarknet53", {}),
    "yolov4": ("yolov4", {}),
    "yolov4-csp": ("yolov4-csp", {}),
    "csresnext50-panet-spp": ("cspresnext50-panet-spp", {}),
    "csdarknet53-omega": ("cspdarknet53", {}),
    "darknet53": ("darknet53", {}),
    "csresnet50": ("cspresnet50", {"layout": "darknet"}),
    "csresnext50": ("cspresnext50", {"layout": "darknet"}),
}
FAST = ("yolov4-tiny", "csdarknet53")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def meta_cfg(path) -> DarknetModel:
    with torch.device("meta"):
        return DarknetModel.from_cfg(path)


@pytest.mark.parametrize("stem", [s if s in FAST else pytest.param(s, marks=pytest.mark.slow) for s in TWINS])
def test_written_cfg_is_the_authors_layer_by_layer(darknet_dir, stem):
    """cfg_text(native) has the authors' layers: types, widths, kernels, strides, activations, route wiring."""
    dk = meta_cfg(darknet_dir / f"{stem}.cfg")
    assert match_native(dk) == TWINS[stem]
    name, args = TWINS[stem]
    from cspnet.interop.darknet.match import candidates

    (kw,) = [kw for n, a, kw in candidates(dk) if (n, a) == (name, args)]
    ours = emitted(name, args, kw, dk)
    assert structure(ours) == structure(dk) and len(ours.layers) == len(dk.layers)


def test_plain_cfgs_match_no_native_model(darknet_dir):
    for stem in ("resnet10", "resnet50"):  # old darknet's narrow shortcuts: no native twin
        assert match_native(meta_cfg(darknet_dir / f"{stem}.cfg")) is None


def custom_cfg(src, dst, classes=3, anchors="8,9, 20,30, 40,42, 90,80, 150,160, 300,280", size=320):
    """darknet's recipe: a copy of the cfg with classes=, the prediction convs' filters= and anchors= edited."""
    text = src.read_text()
    text = re.sub(r"(?m)^classes\s*=.*$", f"classes={classes}", text)
    text = re.sub(r"(?m)^filters\s*=\s*255\s*$", f"filters={3 * (classes + 5)}", text)
    text = re.sub(r"(?m)^anchors\s*=.*$", f"anchors = {anchors}", text)
    text = re.sub(r"(?m)^(width|height)\s*=.*$", rf"\1={size}", text)
    dst.write_text(text)
    return dst


def test_renamed_custom_cfg_maps_to_native_detector(darknet_dir, tmp_path):
    """yolo-obj.cfg (classes=3, filters=24, new anchors, 320x320) is the native yolov4-tiny with those values."""
    cfg = custom_cfg(darknet_dir / "yolov4-tiny.cfg", tmp_path / "yolo-obj.cfg")
    dk, weights = random_weights(cfg, tmp_path / "yolo-obj.weights")
    native = from_darknet(cfg, weights)
    assert isinstance(native, YoloDetector) and native.name == "yolov4-tiny" and native.num_classes == 3
    assert native.head.anchors.tolist() == [[[20, 30], [40, 42], [90, 80]], [[90, 80], [150, 160], [300, 280]]]
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ref, out = darknet_boxes(dk, x), native(x)
        fused = copy.deepcopy(native).fuse()
        out_fused = fused(x)
    assert out.shape == ref.shape == (2, 3 * (6 * 8 + 3 * 4), 8)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(out_fused, ref, rtol=1e-5, atol=1e-4)
    assert (out[0] - out[1]).abs().max() > 0.01


def test_renamed_classifier_cfg_maps_to_native(darknet_dir, tmp_path):
    cfg = tmp_path / "my-backbone.cfg"
    cfg.write_text((darknet_dir / "csdarknet53-omega.cfg").read_text())
    m = from_darknet(cfg, verify=False)
    assert m.name == "cspdarknet53" and m.cfg.act == "mish"


def test_named_cfg_that_differs_warns_where(darknet_dir, tmp_path):
    text = (darknet_dir / "yolov4-tiny.cfg").read_text().splitlines()
    convs = [i for i, line in enumerate(text) if line.strip() == "[convolutional]"]
    i = next(j for j in range(convs[16], len(text)) if text[j].startswith("filters="))  # layer 28: 512 3x3
    text[i] = "filters=256"
    cfg = tmp_path / "yolov4-tiny.cfg"
    cfg.write_text("\n".join(text))
    with pytest.warns(UserWarning, match=r"not exactly yolov4-tiny \(layer 28 is convolutional 256 3x3/1, not"):
        m = from_darknet(cfg, verify=False)
    assert isinstance(m, DarknetModel)
    assert "layer 28" in first_difference(meta_cfg(cfg), meta_cfg(darknet_dir / "yolov4-tiny.cfg"))


# ---------------------------------------------------------------- .weights into native models


@pytest.fixture(scope="module")
def tiny(darknet_dir, tmp_path_factory):
    """The authors' yolov4-tiny.cfg with random weights, and the native model from_darknet makes of them."""
    d = tmp_path_factory.mktemp("tiny")
    cfg = darknet_dir / "yolov4-tiny.cfg"
    dk, weights = random_weights(cfg, d / "yolov4-tiny.weights")
    return cfg, dk, weights, from_darknet(cfg, weights)


def same(a: torch.nn.Module, b: torch.nn.Module, prefix: str = "") -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if k.startswith(prefix) and not k.endswith("num_batches_tracked")]
    return bool(keys) and all(torch.equal(sa[k], sb[k]) for k in keys)


def test_whole_file_loads_as_from_darknet(tiny, capsys):
    _, _, weights, ref = tiny
    m = create_model("yolov4-tiny")
    info = load_darknet_weights(m, weights)
    assert capsys.readouterr().out.strip() == "yolov4-tiny.weights: loaded all 21 convolutions into yolov4-tiny"
    assert info["convs"] == 21 and info["layers"] == 38 and same(m, ref)
    assert is_darknet_weights(weights)


def test_partial_file_loads_its_layers_and_keeps_the_rest(tiny, tmp_path, capsys):
    """yolov4-tiny.conv.29 (`darknet partial ... 29`): layers 0-28 loaded, the rest fresh, into a 3-class model."""
    _, dk, _, ref = tiny
    part = write_weights(dk, tmp_path / "yolov4-tiny.conv.29", layers=29)
    assert is_darknet_weights(part)
    torch.manual_seed(1)
    m = create_model("yolov4-tiny", num_classes=3)
    fresh = copy.deepcopy(m)
    info = load_darknet_weights(m, part)
    out = capsys.readouterr().out.strip()
    assert out == (
        "yolov4-tiny.conv.29: loaded darknet layers 0-28 (17 of 21 convolutions) into yolov4-tiny; the other 4 "
        "keep their fresh weights, as in darknet's training"
    )
    assert info["layers"] == 29 and info["convs"] == 17
    for loaded in ("backbone.", "neck.top.", "head.convs.1."):  # layers 0-26, 27, 28
        assert same(m, ref, loaded), loaded
    for kept in ("neck.reduce.", "head.convs.0.", "head.preds."):
        assert same(m, fresh, kept) and not same(m, ref, kept), kept


def test_other_class_count_skips_the_yolo_output_convs(tiny, capsys):
    _, _, weights, ref = tiny
    torch.manual_seed(2)
    m = create_model("yolov4-tiny", num_classes=3)
    fresh = copy.deepcopy(m)
    info = load_darknet_weights(m, weights)
    assert capsys.readouterr().out.strip() == (
        "yolov4-tiny.weights: loaded 19 of 21 convolutions into yolov4-tiny; the file is trained for 80 classes, "
        "the model has 3: its 2 YOLO output convolutions keep their fresh weights"
    )
    assert info["file_classes"] == 80
    assert same(m, ref, "backbone.") and same(m, ref, "neck.") and same(m, ref, "head.convs.")
    assert same(m, fresh, "head.preds.")


def test_file_of_another_architecture_is_refused(tiny, tmp_path):
    _, _, weights, _ = tiny
    m = create_model("yolov4-tiny-s")
    before = copy.deepcopy(m)
    with pytest.raises(InputError, match=r"needs \d+ .*the file is for another architecture"):
        load_darknet_weights(m, weights)
    assert same(m, before)
    with pytest.raises(InputError, match="not found"):
        load_darknet_weights(m, tmp_path / "nope.weights")


def test_is_darknet_weights_reads_the_content(tmp_path, tiny):
    from cspnet.models.weights import save_state_dict

    _, _, weights, ref = tiny
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(weights.read_bytes())
    assert is_darknet_weights(renamed)
    assert not is_darknet_weights(save_state_dict({"a": torch.ones(3)}, tmp_path / "a.safetensors"))
    assert not is_darknet_weights(save_state_dict({"a": torch.ones(3)}, tmp_path / "a.pt"))
    (tmp_path / "t.txt").write_text("[net]\nwidth=416\n")
    (tmp_path / "h.weights").write_bytes(struct.pack("<3iQ", 0, 2, 5, 0))  # a header and no values
    (tmp_path / "odd.weights").write_bytes(struct.pack("<3iQ", 0, 2, 5, 0) + b"\0" * 6)
    assert not any(is_darknet_weights(tmp_path / f) for f in ("t.txt", "h.weights", "odd.weights", "none"))
    old = tmp_path / "old.weights"  # darknet 0.1: a 32-bit `seen`
    old.write_bytes(struct.pack("<3iI", 0, 1, 0, 7) + struct.pack("<2f", 1, 2))
    assert is_darknet_weights(old)


@pytest.mark.slow
def test_csdarknet53_omega_partial_into_yolov4(darknet_dir, tmp_path, capsys):
    """csdarknet53-omega.conv.105: the ImageNet classifier's first 105 layers are yolov4's backbone."""
    cfg = darknet_dir / "csdarknet53-omega.cfg"
    dk, _ = random_weights(cfg, tmp_path / "omega.weights")
    part = write_weights(dk, tmp_path / "csdarknet53-omega.conv.105", layers=105)
    m = create_model("yolov4", num_classes=3)
    load_darknet_weights(m, part)
    assert "loaded darknet layers 0-104 (72 of 110 convolutions) into yolov4" in capsys.readouterr().out
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = dk.eval().forward_layers(x, keep_all=True)
        feats = m.eval().backbone(x)
    for f, layer in zip(feats, (54, 85, 104)):  # yolov4.cfg reads its backbone at these layers
        torch.testing.assert_close(f, outs[layer], rtol=1e-5, atol=1e-4)


def test_cfg_text_of_a_custom_detector(tmp_path):
    """3 classes, own anchors: filters=24, the anchors in level order, masks per level; it parses and builds."""
    anchors = (((5, 6), (7, 8), (9, 10)), ((11, 12), (13, 14), (15, 16)))
    m = create_model("yolov4-tiny-s", num_classes=3, anchors=anchors)
    text = cfg_text(m, 320)
    assert "width=320" in text and "max_batches=6000" in text and "steps=4800,5400" in text
    assert text.count("filters=24") == 2 and text.count("anchors=5, 6, 7, 8, 9, 10, 11, 12") == 2
    assert "mask=3,4,5" in text and "mask=0,1,2" in text
    (tmp_path / "c.cfg").write_text(text)
    dk = meta_cfg(tmp_path / "c.cfg")
    assert detector_args(dk)["anchors"] == anchors and dk.img_size == (320, 320)
    assert match_native(dk) == ("yolov4-tiny-s", {})


@pytest.mark.slow
def test_yolov4_conv_137_into_a_3_class_yolov4(darknet_dir, tmp_path, capsys):
    """yolov4.conv.137: backbone and top-down neck loaded; the bottom-up path and the heads stay fresh."""
    cfg = darknet_dir / "yolov4.cfg"
    dk, weights = random_weights(cfg, tmp_path / "yolov4.weights")
    ref = from_darknet(cfg, weights, verify=False)
    part = write_weights(dk, tmp_path / "yolov4.conv.137", layers=137)
    torch.manual_seed(3)
    m = create_model("yolov4", num_classes=3)
    fresh = copy.deepcopy(m)
    load_darknet_weights(m, part)
    assert "loaded darknet layers 0-136 (" in capsys.readouterr().out
    for loaded in ("backbone.", "neck.top.", "neck.reduce.", "neck.lateral.", "neck.up_blocks."):
        assert same(m, ref, loaded), loaded
    for kept in ("neck.down.", "neck.down_blocks.", "head."):
        assert same(m, fresh, kept), kept
