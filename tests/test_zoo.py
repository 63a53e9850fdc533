"""The zoo: registry metadata is what the models measure, CSP models beat their twins, the API behaves like timm's."""

from __future__ import annotations

import pytest
import torch

import cspnet
from cspnet.bench.measure import count_macs, count_params

MODELS = cspnet.list_models()
PAIRS = sorted({tuple(sorted((n, cspnet.model_info(n).twin))) for n in MODELS if cspnet.model_info(n).twin})


def meta_counts(name: str, **overrides) -> tuple[int, int]:
    """Params and MACs at the model's own size, counted on the meta device (no real compute)."""
    with torch.device("meta"):
        model = cspnet.create_model(name, **overrides)
    return count_params(model), count_macs(model, cspnet.model_info(name).img_size)


def test_zoo_has_every_pair_from_the_paper():
    for csp, plain in [
        ("cspresnet50", "resnet50"),
        ("cspresnext50", "resnext50_32x4d"),
        ("cspdarknet53", "darknet53"),
        ("cspresnet10", "resnet10"),
    ]:
        assert cspnet.model_info(csp).twin == plain and cspnet.model_info(plain).twin == csp
        assert cspnet.model_info(csp).is_csp and not cspnet.model_info(plain).is_csp


def test_iter_models_is_the_public_view_of_the_registry():
    from cspnet.models import iter_models

    infos = list(iter_models())
    names = [i.name for i in infos]
    assert names == sorted(names) and "cspresnet50" in names and "yolov4-tiny" in names  # every task by default
    assert all(i == cspnet.model_info(i.name) for i in infos)
    assert [i.name for i in iter_models("csp*", task="classify")] == cspnet.list_models("csp*")
    assert {i.task for i in iter_models(task="detect")} == {"detect"}
    assert list(iter_models("no_such_*")) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_metadata_matches_measurement(name):
    info = cspnet.model_info(name)
    params, macs = meta_counts(name)
    assert info.params_m == pytest.approx(params / 1e6, abs=6e-4), "update params_m in the zoo"
    assert info.gmacs == pytest.approx(macs / 1e9, abs=6e-4), "update gmacs in the zoo"


@pytest.mark.slow
@pytest.mark.parametrize("pair", PAIRS, ids="/".join)
def test_csp_model_is_cheaper_than_its_twin(pair):
    csp, plain = sorted(pair, key=lambda n: not cspnet.model_info(n).is_csp)
    csp_params, csp_macs = meta_counts(csp)
    plain_params, plain_macs = meta_counts(plain)
    assert csp_macs < plain_macs
    assert csp_params < plain_params or csp.startswith(("cspdense", "csppelee"))  # paper: dense twins grow slightly


@pytest.mark.slow
@pytest.mark.parametrize("base", ["cspresnet50", "cspresnext50", "cspdarknet53"])
def test_fusion_last_and_both_cost_less_than_the_plain_twin(base):
    _, plain = meta_counts(cspnet.model_info(base).twin)
    for fusion in ("both", "last", "first"):
        _, macs = meta_counts(base, fusion=fusion)
        assert macs < plain, fusion
    # the paper's Fig. 3: fusion last drops the transition after the concat, so it is cheapest
    assert meta_counts(base, fusion="last")[1] < meta_counts(base, fusion="both")[1]


@pytest.mark.slow
@pytest.mark.parametrize("base", ["cspresnet50", "cspdarknet53", "cspresnet10"])
def test_flops_grow_with_partial_ratio(base):
    macs = [meta_counts(base, partial_ratio=g)[1] for g in (0.25, 0.5, 0.75)]
    assert macs == sorted(macs) and len(set(macs)) == 3


def test_partial_ratio_one_is_the_plain_stage():
    model = cspnet.create_model("cspresnet10", partial_ratio=1.0)
    twin = cspnet.create_model("resnet10", down="conv")
    assert all(s.split is None for s in model.stages)
    assert count_params(model) == count_params(twin)


@pytest.mark.parametrize("name", ["cspresnet10", "resnet10"])
def test_timm_style_api(name):
    model = cspnet.create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features == model.feature_info[-1]["num_chs"]
        assert model.forward_head(feats).shape == (2, 7)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
        assert torch.equal(model(x), model.forward_head(feats))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


def test_features_only_gives_the_maps_a_neck_needs():
    model = cspnet.create_model("cspdarknet53", features_only=True, out_indices=(3, 4, 5), act="mish")
    assert model.channels == [256, 512, 1024] and model.reduction == [8, 16, 32]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [256, 512, 1024]
    assert [m.shape[-1] for m in maps] == [8, 4, 2]
    full = cspnet.create_model("cspresnet10", features_only=True)
    assert [f["reduction"] for f in full.feature_info] == [4, 4, 8, 16, 32]


def test_overrides_reach_the_architecture():
    model = cspnet.create_model("cspresnet10", act="mish", fusion="first", partial_ratio=0.25)
    assert isinstance(model.stages[0].blocks[0].conv1.act, torch.nn.Mish)
    assert model.stages[0].conv_transition_b is None
    assert model.stages[1].split == (96, 32)
    slope = cspnet.create_model("cspdarknet53", leaky_slope=0.1).stem.conv1.act.negative_slope
    assert slope == pytest.approx(0.1)
    small = cspnet.create_model("resnet10", small_input=True)
    assert small.feature_info[0]["reduction"] == 1 and small(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_in_chans():
    model = cspnet.create_model("resnet10", in_chans=1, num_classes=2).eval()
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(name="cspresnet5"), "did you mean cspresnet50"),
        (dict(name="cspresnet10", partial_ratio=0.0), r"partial_ratio must be in \(0, 1\]"),
        (dict(name="cspresnet10", partial_ratio=1.5), r"partial_ratio must be in \(0, 1\]"),
        (dict(name="cspresnet10", fusion="middle"), "unknown fusion 'middle'; choose one of both, first, last"),
        (dict(name="cspresnet10", act="gelu"), "unknown activation 'gelu'"),
        (dict(name="cspresnet10", width=2), "unknown override"),
        (dict(name="cspresnet10", features_only=True, out_indices=(9,)), "out_indices"),
    ],
)
def test_bad_config_is_one_clear_error(kwargs, match):
    with pytest.raises(cspnet.ConfigError, match=match) as err:
        cspnet.create_model(**kwargs)
    assert "\n" not in str(err.value)


def test_wrong_input_channels_is_one_clear_error():
    model = cspnet.create_model("resnet10")
    with pytest.raises(cspnet.InputError, match=r"expected a batch shaped \(N, 3, H, W\), got \(1, 1, 32, 32\)"):
        model(torch.randn(1, 1, 32, 32))
