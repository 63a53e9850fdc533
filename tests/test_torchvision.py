"""CSP backbones inside torchvision's detectors and segmenters: they build, train a step and evaluate."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import cspnet
from cspnet.interop.torchvision import dilate, torchvision_backbone, torchvision_segmentation

TINY = dict(min_size=64, max_size=96, rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20)
TINY_EVAL = dict(rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_batch_size_per_image=16)


def _targets(n: int) -> list[dict]:
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 30.0]])
    return [dict(boxes=boxes, labels=torch.tensor([1, 2])) for _ in range(n)]


def _train_step(model: torch.nn.Module, images, targets) -> float:
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    losses = model(images, targets)
    loss = sum(losses.values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    return loss.item()


def test_faster_rcnn_trains_and_evaluates():
    backbone = cspnet.torchvision_backbone("cspresnet10")  # the top-level name works too
    assert isinstance(backbone, BackboneWithFPN) and backbone.out_channels == 256
    assert [f["reduction"] for f in backbone.feature_info] == [4, 8, 16, 32]
    model = FasterRCNN(backbone, num_classes=3, **TINY, **TINY_EVAL)
    images = [torch.rand(3, 64, 64), torch.rand(3, 80, 64)]
    stem_before = backbone.body.stem.conv1.conv.weight.clone()
    _train_step(model, images, _targets(2))
    assert not torch.equal(stem_before, backbone.body.stem.conv1.conv.weight), "the backbone did not train"
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}
    assert out[1]["boxes"].shape[1] == 4


@pytest.mark.parametrize("detector", [RetinaNet, FCOS])
def test_one_stage_detectors_accept_it(detector):
    # torchvision's RetinaNet/FCOS recipe: the last three levels, P6/P7 from P5
    backbone = torchvision_backbone("cspresnet10", out_indices=(2, 3, 4), extra_blocks=LastLevelP6P7(256, 256))
    model = detector(backbone, num_classes=3, min_size=64, max_size=64).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])
    assert set(out[0]) == {"boxes", "scores", "labels"}


def test_deeplabv3_trains_and_evaluates():
    model = torchvision_segmentation("cspresnet10", num_classes=3, aux=True)
    assert isinstance(model, torchvision.models.segmentation.DeepLabV3)
    assert [f["reduction"] for f in model.backbone.feature_info] == [8, 8]  # dilated, torchvision's output stride
    x, y = torch.rand(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    out = model(x)
    loss = torch.nn.functional.cross_entropy(out["out"], y) + 0.5 * torch.nn.functional.cross_entropy(out["aux"], y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out["out"].shape == (2, 3, 64, 64)


def test_fcn_head_and_output_stride_32():
    model = torchvision_segmentation("cspdarknet53", num_classes=2, head="fcn", output_stride=32).eval()
    assert isinstance(model, torchvision.models.segmentation.FCN)
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 64, 64))["out"]
    assert feats.shape == (1, 1024, 2, 2)


def test_dilation_matches_torchvision_resnet50():
    """Our stride->dilation surgery equals torchvision's replace_stride_with_dilation on the same weights."""
    from cspnet.interop.timm import convert_timm_state_dict
    from cspnet.models.weights import load_into

    tv = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    ours = cspnet.create_model("resnet50")
    load_into(ours, convert_timm_state_dict(tv.state_dict()))
    dilate(ours.eval(), 8)
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        got = ours.forward_features(x)
    assert got.shape == ref.shape == (1, 2048, 6, 6)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_timm_conventions_and_options():
    backbone = torchvision_backbone("cspdarknet53", out_indices=(-3, -2, -1), trainable_layers=2)
    assert [f["reduction"] for f in backbone.feature_info] == [8, 16, 32]
    net = cspnet.create_model("cspdarknet53", features_only=True, out_indices=(-3, -2, -1))
    assert [f["num_chs"] for f in backbone.feature_info] == net.channels
    frozen = [n for n, p in backbone.body.named_parameters() if not p.requires_grad]
    assert frozen and all(not n.startswith(("stage4", "stage5")) for n in frozen)
    single = torchvision_backbone("cspresnet10", fpn=False, out_indices=(4,))
    assert single.out_channels == 512 and single(torch.rand(1, 3, 64, 64)).shape == (1, 512, 2, 2)
    frozen_bn = torchvision_backbone("cspresnet10", frozen_bn=True).train()
    assert not any(m.training for m in frozen_bn.body.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(out_indices=(7,)), "out_indices"),
        (dict(trainable_layers=9), "trainable_layers"),
        (dict(fpn=False, out_indices=(3, 4)), "one map"),
        (dict(model="yolov4-tiny"), "classification backbone"),
        (dict(model="cspresnet5"), "did you mean"),
    ],
)
def test_bad_arguments_are_one_line_errors(kw, match):
    with pytest.raises(cspnet.ConfigError, match=match):
        torchvision_backbone(**{"model": "cspresnet10", **kw})
