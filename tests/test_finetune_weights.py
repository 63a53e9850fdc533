"""Starting a detector from other weights, as practitioners do: darknet's whole and partial files as --weights, the
published names through the download cache, and a backbone's classification weights under a fresh neck and head."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading

import pytest
import torch

import cspnet
from cspnet import hub
from cspnet.cli import main
from cspnet.data.sample import make_sample
from cspnet.errors import ConfigError, InputError
from cspnet.interop.darknet import from_darknet, to_darknet, write_weights
from cspnet.models.weights import save_state_dict

TINY = dict(num_classes=3, width=0.25)


@pytest.fixture(scope="module")
def darknet_files(tmp_path_factory):
    """A 3-class 1/4-width yolov4-tiny as darknet writes it: cfg, the whole .weights and a partial .conv.29."""
    d = tmp_path_factory.mktemp("dk")
    torch.manual_seed(0)
    src = cspnet.create_model("yolov4-tiny", **TINY).eval()
    cfg, weights = to_darknet(src, d / "yolo-obj.cfg", d / "yolo-obj.weights", img=64)
    write_weights(from_darknet(cfg, weights, native=False), d / "yolo-obj.conv.29", layers=29)
    return src, weights, d / "yolo-obj.conv.29"


def test_darknet_whole_and_partial_files_as_pretrained(darknet_files, capsys):
    src, whole, partial = darknet_files
    m = cspnet.create_model("yolov4-tiny", pretrained=whole, **TINY)
    ref = src.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked"))
    torch.manual_seed(1)
    p = cspnet.create_model("yolov4-tiny", pretrained=partial, **TINY)
    assert "loaded darknet layers 0-28" in capsys.readouterr().out
    assert torch.equal(p.backbone.state_dict()["stem.0.conv.weight"], ref["backbone.stem.0.conv.weight"])
    assert not torch.equal(p.head.preds[0].weight, ref["head.preds.0.weight"])  # the head stays fresh


@pytest.mark.slow
def test_detect_train_starts_from_a_darknet_partial_file(darknet_files, tmp_path, capsys):
    _, _, partial = darknet_files
    data = make_sample(tmp_path / "sample") / "detect" / "data.yaml"
    argv = ["detect", "train", "--model", "yolov4-tiny", "--width", "0.25", "--data", str(data), "--img", "64"]
    argv += ["--epochs", "1", "--batch", "4", "--subset", "4", "--val-subset", "4", "--workers", "0"]
    argv += ["--weights", str(partial), "--project", str(tmp_path / "runs"), "--name", "ft"]
    assert main(argv) == 0
    assert "yolo-obj.conv.29: loaded darknet layers 0-28" in capsys.readouterr().out
    assert (tmp_path / "runs" / "ft" / "weights" / "best.pt").is_file()


def test_published_name_downloads_through_the_cache(darknet_files, tmp_path, monkeypatch):
    from tests.test_hub import Files  # the local HTTP server with Range support

    _, whole, _ = darknet_files
    data = whole.read_bytes()
    handler = type("H", (Files,), {"files": {"/yolo-obj.weights": data}, "cut": {}, "log": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("CSPNET_HOME", str(tmp_path / "home"))
        url = f"http://127.0.0.1:{srv.server_address[1]}/yolo-obj.weights"
        entry = dataclasses.replace(
            hub.WEIGHTS["yolov4-tiny.weights"], url=url, sha256=hashlib.sha256(data).hexdigest()
        )
        monkeypatch.setitem(hub.WEIGHTS, "yolov4-tiny.weights", entry)
        # pretrained=True on yolov4-tiny: the table's file (here for 3 classes at 1/4 width, served locally)
        m = cspnet.create_model("yolov4-tiny", pretrained=True, **TINY)
        assert (tmp_path / "home" / "weights" / "yolov4-tiny.weights").read_bytes() == data
        assert m.head.one_class_logit  # darknet's whole head: scores as darknet does
        # the name as weights: served from the cache, no second request
        cspnet.create_model("yolov4-tiny", pretrained="yolov4-tiny", **TINY)
        assert len(handler.log) == 1
        # a wrong checksum in the table: refused and deleted
        (tmp_path / "home" / "weights" / "yolov4-tiny.weights").unlink()
        monkeypatch.setitem(hub.WEIGHTS, "yolov4-tiny.weights", dataclasses.replace(entry, sha256="0" * 64))
        with pytest.raises(InputError, match="sha256"):
            cspnet.create_model("yolov4-tiny", pretrained=True, **TINY)
        assert not (tmp_path / "home" / "weights" / "yolov4-tiny.weights").exists()
    finally:
        srv.shutdown()
        srv.server_close()


def test_backbone_weights_under_a_fresh_neck_and_head(tmp_path, capsys):
    backbone = cspnet.create_model("cspdarknet53")
    save_state_dict(backbone.state_dict(), tmp_path / "cd53.safetensors")
    m = cspnet.create_model("yolov4", num_classes=3, pretrained_backbone=tmp_path / "cd53.safetensors")
    own = backbone.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in m.backbone.state_dict().items())
    with pytest.raises(InputError, match="another architecture"):
        cspnet.create_model("yolov4-s", pretrained_backbone=tmp_path / "cd53.safetensors")  # another width
    with pytest.raises(ConfigError, match="not a zoo classifier"):
        cspnet.create_model("yolov4-tiny", pretrained_backbone=tmp_path / "cd53.safetensors")
    with pytest.raises(ConfigError, match="pretrained_backbone is for detectors"):
        cspnet.create_model("resnet10", pretrained_backbone=tmp_path / "cd53.safetensors")


def test_fine_tuning_a_one_class_darknet_model_scores_by_objectness(tmp_path):
    """darknet trained the class logit of a one-class model, our loss does not: once training starts the head scores
    by objectness, during validation as after its checkpoint is reloaded."""
    from cspnet.engine.tasks.detect import DetectCfg, DetectTask

    torch.manual_seed(0)
    src = cspnet.create_model("yolov4-tiny", num_classes=1, width=0.25).eval()
    src.head.one_class_logit = True  # as darknet trains it: a class logit of its own
    _, weights = to_darknet(src, tmp_path / "one.cfg", tmp_path / "one.weights", img=64)
    assert cspnet.create_model("yolov4-tiny", pretrained=weights, num_classes=1, width=0.25).head.one_class_logit
    data = make_sample(tmp_path / "sample") / "detect"
    for label in (data / "labels").rglob("*.txt"):  # every object is class 0: a one-class dataset
        label.write_text("".join("0" + line[line.index(" ") :] + "\n" for line in label.read_text().splitlines()))
    (data / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: shape\n")
    cfg = DetectCfg(model="yolov4-tiny", data=str(data / "data.yaml"), img=64, weights=str(weights), width=0.25)
    model = DetectTask(cfg).build_model()
    assert model.num_classes == 1 and not model.head.one_class_logit
    ref = src.state_dict()["head.preds.0.weight"]
    assert torch.equal(model.state_dict()["head.preds.0.weight"], ref)  # the darknet weights were loaded
    # and what fine-tuning saves goes back to darknet scoring as it does here (class probability written as 1)
    model.eval()
    cfg2, weights2 = to_darknet(model, tmp_path / "ft.cfg", tmp_path / "ft.weights", img=64)
    back = cspnet.create_model("yolov4-tiny", pretrained=weights2, num_classes=1, width=0.25).eval()
    x = torch.rand(1, 3, 64, 64)
    assert back.head.one_class_logit and torch.allclose(back(x), model(x), atol=1e-5)
    assert back(x)[..., 5].min() == 1.0
