"""Pretrained weights from local files: safetensors and torch checkpoints, with clear errors."""

from __future__ import annotations

import pytest
import torch

import cspnet
from cspnet.models.weights import read_state_dict, save_state_dict


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
    with pytest.warns(UserWarning, match="5-class classifier, the model 10"):
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


def test_pickle_named_safetensors_is_one_line(tmp_path, trained, capsys):
    path = tmp_path / "w.safetensors"
    torch.save(trained.state_dict(), path)  # a torch zip under the wrong name
    with pytest.raises(cspnet.InputError, match=r"cannot read .* as \.safetensors \(it is a zip: a torch file"):
        cspnet.create_model("cspresnet10", num_classes=5, pretrained=str(path))
    from cspnet.cli import main

    assert main(["export", "--model", "cspresnet10", "--weights", str(path), "--out", str(tmp_path / "m.onnx")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("cspnet: error: cannot read") and not (tmp_path / "m.onnx").exists()


def test_pretrained_true_means_timm_weights(monkeypatch):
    timm = pytest.importorskip("timm")
    calls = []

    def offline(name, pretrained=False, **kw):
        calls.append((name, pretrained))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(timm, "create_model", offline)
    monkeypatch.setattr("cspnet.models.weights.hub_reachable", lambda: True)  # no network use in tests
    with pytest.raises(cspnet.InputError, match=r"could not fetch timm weights for cspresnet50 \(OSError\); offline\?"):
        cspnet.create_model("cspresnet50", pretrained=True)
    assert calls == [("cspresnet50", True)]
    with pytest.raises(cspnet.ConfigError, match="pretrained=True: there are no published weights for cspresnet10"):
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
    from cspnet.models.weights import load_into

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
    from cspnet.models import weights

    seen = []

    def create(name, pretrained=False, **kw):
        seen.append(constants.HF_HUB_OFFLINE)
        raise OSError("not in cache")

    monkeypatch.setattr(timm, "create_model", create)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights, "hub_reachable", lambda: False)
    with pytest.raises(cspnet.InputError, match="could not fetch timm weights"):
        cspnet.create_model("cspresnet50", pretrained=True)
    assert seen == [True] and constants.HF_HUB_OFFLINE is False  # restored
