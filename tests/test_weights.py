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
