"""Pretrained weights from local files: safetensors and torch checkpoints, with clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import cspnet
from cspnet.models.weights import load_into, read_state_dict, save_state_dict, sniff_format


@pytest.fixture
def trained():
    model = cspnet.create_model("cspresnet10", num_classes=5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_pretrained_path_round_trip(tmp_path, trained, suffix):
    path = save_state_dict(trained.state_dict(), tmp_path / f"w{suffix}")
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    loaded = cspnet.create_model("cspresnet10", num_classes=5, pretrained=str(path)).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(x), trained(x))


def test_checkpoint_dict_with_model_key(tmp_path, trained):
    torch.save({"model": trained.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    assert read_state_dict(tmp_path / "ckpt.pt").keys() == trained.state_dict().keys()


def test_other_class_count_keeps_backbone_and_warns(tmp_path, trained):
    path = save_state_dict(trained.state_dict(), tmp_path / "w.safetensors")
    with pytest.warns(UserWarning, match=r"another class count \(head.fc has 5 outputs there, 10 here\)"):
        model = cspnet.create_model("cspresnet10", num_classes=10, pretrained=str(path))
    assert torch.equal(model.stem.conv1.conv.weight, trained.stem.conv1.conv.weight)


def test_other_architecture_is_refused(tmp_path, trained):
    path = save_state_dict(trained.state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(cspnet.InputError, match="another architecture"):
        cspnet.create_model("resnet10", num_classes=5, pretrained=str(path))


def test_missing_and_unsafe_files(tmp_path):
    with pytest.raises(cspnet.InputError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(cspnet.InputError, match="cannot read"):
        read_state_dict(tmp_path / "evil.pt")


# ---------------------------------------------------------------- issue #9: bad and damaged weight files


def test_format_comes_from_the_content_not_the_name(tmp_path, trained, capsys):
    """A torch file named .safetensors and a safetensors file named .pt both load; a file of neither is one line."""
    torch.save(trained.state_dict(), tmp_path / "t.safetensors")
    save_state_dict(trained.state_dict(), tmp_path / "s.safetensors").rename(tmp_path / "s.pt")
    x = torch.randn(1, 3, 32, 32)
    for name, fmt in (("t.safetensors", "torch"), ("s.pt", "safetensors")):
        assert sniff_format(tmp_path / name) == fmt
        loaded = cspnet.create_model("cspresnet10", num_classes=5, pretrained=str(tmp_path / name)).eval()
        assert torch.equal(loaded(x), trained(x))
    (tmp_path / "junk.safetensors").write_text("not weights at all")
    with pytest.raises(cspnet.InputError, match="cannot read .*: not a weights file"):
        cspnet.create_model("cspresnet10", num_classes=5, pretrained=str(tmp_path / "junk.safetensors"))
    from cspnet.cli import main

    argv = ["export", "--model", "cspresnet10", "--weights", str(tmp_path / "junk.safetensors")]
    assert main([*argv, "--out", str(tmp_path / "m.onnx")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("cspnet: error: ") and "not a weights file" in line and not (tmp_path / "m.onnx").exists()


def test_pretrained_true_means_timm_weights(monkeypatch):
    timm = pytest.importorskip("timm")
    calls = []

    def offline(name, pretrained=False, **kw):
        calls.append((name, pretrained))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(timm, "create_model", offline)
    monkeypatch.setattr("cspnet.interop.timm.hub_reachable", lambda: True)  # no network use in tests
    with pytest.raises(cspnet.InputError, match=r"could not fetch timm weights for cspresnet50 \(OSError\); offline\?"):
        cspnet.create_model("cspresnet50", pretrained=True)
    assert calls == [("cspresnet50", True)]
    with pytest.raises(cspnet.ConfigError, match="pretrained=True: no pretrained weights registered for cspresnet10"):
        cspnet.create_model("cspresnet10", pretrained=True)
    assert isinstance(cspnet.create_model("cspresnet10", pretrained=False), torch.nn.Module)


def _damaged(data: bytes, n: int = 6) -> list[tuple[str, bytes]]:
    """Copies of `data` with one byte flipped, and truncated, at offsets spread over the file."""
    offsets = sorted({min(len(data) - 1, max(0, int(len(data) * f))) for f in (0.001, 0.01, 0.25, 0.5, 0.75, 0.999)})
    flips = [(f"flip@{o}", data[:o] + bytes([data[o] ^ 0x10]) + data[o + 1 :]) for o in offsets[:n]]
    cuts = [(f"cut@{o}", data[:o]) for o in (0, 7, *offsets[2:])]
    return flips + cuts


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "checkpoint"])
def test_damaged_weight_files_are_refused_and_load_nothing(tmp_path, trained, fmt):
    """Every damaged copy is refused in one line and leaves the model as it was, or (a flip in a byte the format
    does not use) loads bit-identical tensors. Never different weights."""
    from cspnet.engine.checkpoint import load_checkpoint, save_checkpoint

    src = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pt")
    if fmt == "checkpoint":
        save_checkpoint({"model": trained.state_dict(), "model_ema": None, "epoch": 3}, src)
    else:
        save_state_dict(trained.state_dict(), src)
    target = cspnet.create_model("cspresnet10", num_classes=5)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    refused = 0
    for what, data in _damaged(src.read_bytes()):
        bad = tmp_path / f"bad{src.suffix}"
        bad.write_bytes(data)
        try:
            sd = load_checkpoint(bad)["model"] if fmt == "checkpoint" else read_state_dict(bad)
        except cspnet.InputError as e:
            assert "\n" not in str(e), what
            refused += 1
            continue
        want = trained.state_dict()
        assert sd.keys() == want.keys() and all(torch.equal(sd[k], want[k]) for k in sd), f"{what} loaded silently"
        load_into(target, sd)
        before = {k: v.clone() for k, v in target.state_dict().items()}
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    assert refused >= 8  # every cut and every flip inside tensor data


def test_damaged_darknet_weights_are_refused_and_load_nothing(tmp_path):
    """Truncation anywhere is refused and loads nothing. The format has no checksum: a flipped byte inside the
    float payload cannot be detected (header flips only change the header's own fields)."""
    from cspnet.interop.darknet.cfg import parse_cfg_text
    from cspnet.interop.darknet.model import DarknetModel
    from cspnet.interop.darknet.weights import read_weights, write_weights

    text = "[net]\nchannels=3\nheight=8\nwidth=8\n[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\n"
    src_model = DarknetModel(parse_cfg_text(text + "activation=leaky\n"))
    for t in src_model.weight_tensors():
        t.data.uniform_(0.5, 1.5)
    src = write_weights(src_model, tmp_path / "w.weights")
    model = DarknetModel(parse_cfg_text(text + "activation=leaky\n"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for what, data in _damaged(src.read_bytes()):
        if what.startswith("flip"):
            continue
        (tmp_path / "bad.weights").write_bytes(data)
        with pytest.raises(cspnet.InputError, match="truncated|too short|cut off|damaged"):
            read_weights(model, tmp_path / "bad.weights")
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), what


def test_offline_machine_uses_the_hub_cache_only(monkeypatch):
    """Without a network, timm's download would retry for a minute: the hub is switched to its cache for the call."""
    timm = pytest.importorskip("timm")
    constants = pytest.importorskip("huggingface_hub.constants")
    from cspnet.interop import timm as timm_interop

    seen = []

    def create(name, pretrained=False, **kw):
        seen.append(constants.HF_HUB_OFFLINE)
        raise OSError("not in cache")

    monkeypatch.setattr(timm, "create_model", create)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(timm_interop, "hub_reachable", lambda: False)
    with pytest.raises(cspnet.InputError, match="could not fetch timm weights"):
        cspnet.create_model("cspresnet50", pretrained=True)
    assert seen == [True] and constants.HF_HUB_OFFLINE is False  # restored


# ---------------------------------------------------------------- issue #18: one loader for every model and head


class Tiny(torch.nn.Module):
    """A classifier whose output layer is called `head` ("fc", or "classifier" inside a Sequential)."""

    def __init__(self, num_classes: int, head: str):
        super().__init__()
        self.num_classes = num_classes
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(1))
        out = torch.nn.Linear(4, num_classes)
        setattr(self, head, torch.nn.Sequential(torch.nn.Dropout(), out) if head == "classifier" else out)


HEADS = {
    "cspnet": (lambda n: cspnet.create_model("cspresnet10", num_classes=n), ["head.fc"]),
    "detector": (lambda n: cspnet.create_model("yolov4-tiny-s", num_classes=n), ["head.preds.0", "head.preds.1"]),
    "fc": (lambda n: Tiny(n, "fc"), ["fc"]),
    "classifier": (lambda n: Tiny(n, "classifier"), ["classifier.1"]),
}


@pytest.mark.parametrize("kind", HEADS)
def test_one_loader_for_any_head(tmp_path, kind):
    """The same function loads a classifier and a detector, whatever their output layers are called; another
    class count keeps exactly the output layers fresh and says so in one warning."""
    make, heads = HEADS[kind]
    src = make(3)
    path = save_state_dict(src.state_dict(), tmp_path / "w.pt")
    same = make(3)
    load_into(same, path)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in same.state_dict().items())

    other = make(7)
    fresh = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.warns(UserWarning) as record:
        load_into(other, path)
    (warning,) = record
    assert str(warning.message).endswith(f"keeping a fresh {', '.join(heads)} (reset_classifier)")
    assert "\n" not in str(warning.message)
    for k, v in other.state_dict().items():
        want = fresh[k] if k.rpartition(".")[0] in heads else src.state_dict()[k]
        assert torch.equal(v, want), k
    assert not torch.equal(fresh[f"{heads[0]}.weight"][:3], src.state_dict()[f"{heads[0]}.weight"][:3])


def test_weights_of_another_model_are_one_line(tmp_path):
    det = save_state_dict(cspnet.create_model("yolov4-tiny-s", num_classes=3).state_dict(), tmp_path / "d.pt")
    cls = save_state_dict(cspnet.create_model("cspresnet10", num_classes=3).state_dict(), tmp_path / "c.pt")
    cases = [
        ("cspresnet10", det, "holds none of the model's tensors"),
        ("yolov4-tiny-s", cls, "holds none of the model's tensors"),
        ("yolov4-tiny", det, r"is for another architecture \(\d+ mismatched"),  # width 1 vs 0.5
    ]
    for name, path, match in cases:
        with pytest.raises(cspnet.InputError, match=match) as e:
            cspnet.create_model(name, num_classes=3, pretrained=path)
        assert "\n" not in str(e.value)


def test_pretrained_path_for_a_detector(tmp_path):
    """A training checkpoint (EMA weights when saved) under any name loads into a detector."""
    src = cspnet.create_model("yolov4-tiny-s", num_classes=3).eval()
    torch.save({"model": {}, "model_ema": src.state_dict(), "meta": {"model": "yolov4-tiny-s"}}, tmp_path / "last.ckpt")
    det = cspnet.create_model("yolov4-tiny-s", num_classes=3, pretrained=tmp_path / "last.ckpt").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(det(x), src(x))


def test_pretrained_true_on_a_detector_is_one_config_error():
    # yolov4-tiny's published darknet file: tests/test_finetune_weights.py (local server)
    with pytest.raises(
        cspnet.ConfigError, match="^pretrained=True: no pretrained weights registered for yolov4-tiny-s"
    ):
        cspnet.create_model("yolov4-tiny-s", pretrained=True)
    with pytest.raises(cspnet.ConfigError, match="pretrained must be True, 'timm' or a file path, not 3"):
        cspnet.create_model("yolov4-tiny-s", pretrained=3)


def test_detect_train_weights_use_the_one_loader(tmp_path):
    """`detect train --weights` from an 80-class file onto 3 classes: backbone and neck loaded, predictions fresh."""
    from cspnet.engine.tasks.detect import DetectCfg, DetectTask

    src = cspnet.create_model("yolov4-tiny-s")
    path = save_state_dict(src.state_dict(), tmp_path / "coco.safetensors")
    task = DetectTask(DetectCfg(model="yolov4-tiny-s", img=64, weights=str(path)))
    task.meta = lambda: {"model": "yolov4-tiny-s", "num_classes": 3, "overrides": {}}
    with pytest.warns(UserWarning, match="255 outputs there, 24 here.*fresh head.preds.0, head.preds.1"):
        model = task.build_model()
    assert torch.equal(model.head.convs[0].conv.weight, src.head.convs[0].conv.weight)


def test_darknet_weights_are_recognised_by_their_header(tmp_path, monkeypatch):
    """No magic number: versions, `seen` (64-bit from 0.2, 32-bit before) and whole float32s after it. The file goes
    to the darknet loader that interop registers, whatever its name (darknet's partial files end in .conv.N)."""
    from cspnet.interop.darknet import DarknetHeader, DarknetModel, parse_cfg_text, write_weights
    from cspnet.models import weights

    text = "[net]\nchannels=3\nheight=8\nwidth=8\n[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\n"
    dk = DarknetModel(parse_cfg_text(text + "activation=leaky\n"))
    new = write_weights(dk, tmp_path / "yolov4-tiny.conv.29")
    old = write_weights(dk, tmp_path / "old.pt", DarknetHeader(0, 1, 0, 7))
    assert sniff_format(new) == sniff_format(old) == "darknet"
    with pytest.raises(cspnet.InputError, match=r"holds \d+ values after the header; yolov4-tiny-s needs") as e:
        cspnet.create_model("yolov4-tiny-s", pretrained=new)  # the darknet loader: the file is for another network
    assert "\n" not in str(e.value)
    with pytest.raises(cspnet.InputError, match="is a darknet weights file: it has no tensor names"):
        read_state_dict(old)

    calls = []
    monkeypatch.setitem(weights.WEIGHT_FORMATS, "darknet", lambda model, path: calls.append((model.name, path)))
    cspnet.create_model("yolov4-tiny-s", pretrained=old)
    assert calls == [("yolov4-tiny-s", old)]


def test_interop_plugs_in_without_models_importing_it():
    """Importing models alone (as every layer does) registers interop's formats and sources: the package import
    brings interop in. If `import cspnet` ever stops importing interop, this fails instead of darknet files."""
    code = "import cspnet.models.weights as w; print(sorted(w.WEIGHT_FORMATS), sorted(w.PRETRAINED_SOURCES))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['darknet'] ['timm']"
