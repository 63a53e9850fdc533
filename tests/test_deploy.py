"""Every export format, precision and --nms on tiny models, run through the runtime wrapper against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import randomized
from PIL import Image

from cspnet.cli import main
from cspnet.deploy.export import export
from cspnet.deploy.nms import DetectWithNMS, to_detections
from cspnet.deploy.runtime import exported_format, load_exported
from cspnet.errors import ConfigError, InputError
from cspnet.models import create_model
from cspnet.nn.bn import calibrate_bn

pytestmark = pytest.mark.slow  # exports and runtimes
pytest.importorskip("onnxruntime")

IMG, DET_IMG = 32, 64
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".torchscript"}
COMBOS = [
    ("onnx", "fp32"),
    ("onnx", "fp16"),
    ("onnx", "int8"),
    ("openvino", "fp32"),
    ("openvino", "fp16"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
    ("torchscript", "fp32"),
    ("torchscript", "fp16"),
    ("torchscript", "bf16"),
]


def needs(fmt: str, precision: str) -> None:
    if fmt == "openvino":
        pytest.importorskip("openvino")
        from cspnet.deploy.openvino_export import cpu_capabilities

        if precision == "int8":
            pytest.importorskip("nncf")
        if precision == "bf16" and "BF16" not in cpu_capabilities():
            pytest.skip("this CPU has no bf16 arithmetic")


@torch.no_grad()
def tiny_detector(seed: int = 0, num_classes: int = 3) -> torch.nn.Module:
    """yolov4-tiny-s with random BN and small box-size weights: boxes of a trained net's size, scores 0.15-0.45."""
    torch.manual_seed(seed)
    m = create_model("yolov4-tiny-s", num_classes=num_classes)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.uniform_(0.5, 1.5)
            mod.bias.normal_(0.0, 0.2)
    calibrate_bn(m, torch.rand(4, 3, DET_IMG, DET_IMG))
    for p in m.head.preds:
        p.weight.view(m.head.num_anchors, -1, *p.weight.shape[1:])[:, 2:4] *= 0.1  # tw, th
        p.bias.view(m.head.num_anchors, -1)[:, 4] = 1.0  # objectness
    return m.eval()


def close(out, ref, precision: str, boxes: bool = False) -> None:
    """Within the precision's error (relative to the image size for box coordinates)."""
    tol = {"fp32": 1e-4, "fp16": 5e-2, "bf16": 0.25}[precision]
    scale = DET_IMG if boxes else max(1.0, float(ref.abs().max()))
    assert float((out - ref).abs().max()) <= tol * scale


@pytest.mark.parametrize("fmt,precision", COMBOS)
def test_classifier_every_format_and_precision(fmt, precision, tmp_path):
    needs(fmt, precision)
    model = randomized("cspresnet10")
    calib = torch.randn(16, 3, IMG, IMG)
    path = tmp_path / f"c{SUFFIX[fmt]}"
    meta = {"model": "cspresnet10", "classes": [f"c{i}" for i in range(10)]}
    kw = {"calib": calib} if precision == "int8" else {}
    report = export(randomized("cspresnet10"), path, fmt, IMG, precision, meta=meta, **kw)
    assert report["checked"] == (precision != "int8") and report["outputs"] == ["logits"]
    m = load_exported(path)
    assert (m.format, m.task, m.precision, m.img_size, m.num_classes) == (fmt, "classify", precision, IMG, 10)
    assert m.classes == meta["classes"] and m.meta["model"] == "cspresnet10" and m.outputs == ("logits",)
    x = calib[:5] if precision == "int8" else torch.randn(5, 3, IMG, IMG)  # batch 5: the export saw 2 and 3
    with torch.no_grad():
        ref = model(x)
    out = m(x)
    assert out.shape == ref.shape == (5, 10) and out.dtype == torch.float32
    if precision == "int8":
        assert report["top1_agreement_calib"] >= 0.5  # random weights, tiny margins; trained: test_int8_*
        assert (path.stat().st_size if fmt == "onnx" else path.with_suffix(".bin").stat().st_size) < 4e6
    else:
        close(out, ref, precision)


DET_COMBOS = [
    ("onnx", "fp32", False),
    ("onnx", "fp32", True),
    ("onnx", "fp16", True),
    ("onnx", "int8", True),
    ("openvino", "fp32", True),
    ("openvino", "bf16", False),
    ("openvino", "int8", False),
    ("torchscript", "fp32", True),
    ("torchscript", "fp16", False),
]


@pytest.mark.parametrize("fmt,precision,nms", DET_COMBOS)
def test_detector_every_format_and_nms(fmt, precision, nms, tmp_path):
    needs(fmt, precision)
    cfg = {"conf": 0.25, "iou": 0.45, "max_det": 30} if nms else None
    calib = torch.rand(8, 3, DET_IMG, DET_IMG)
    path = tmp_path / f"d{SUFFIX[fmt]}"
    kw = {"calib": calib} if precision == "int8" else {}
    report = export(tiny_detector(), path, fmt, DET_IMG, precision, nms=cfg, meta={"classes": list("abc")}, **kw)
    names = ["boxes", "scores", "classes"] if nms else ["predictions"]
    assert report["outputs"] == names  # never "logits" for a detector
    m = load_exported(path)
    assert (m.task, m.stride, m.nms, m.classes, m.outputs) == ("detect", 32, cfg, list("abc"), tuple(names))
    x = calib[:3]
    ref_model = tiny_detector().fuse()
    with torch.no_grad():
        ref = DetectWithNMS(ref_model, **cfg)(x) if nms else ref_model(x)
    out = m(x)
    if not nms:
        assert out.shape == ref.shape == (3, 3 * (2 * 2 + 4 * 4), 8)
        if precision == "int8":  # the decode stays float: boxes move by a few percent of their size at most
            assert float(((out[..., :4] - ref[..., :4]).abs() / ref[..., :4].abs().clamp(min=DET_IMG)).max()) < 0.1
            assert float((out[..., 4:] - ref[..., 4:]).abs().max()) < 0.2
        else:
            close(out[..., :4], ref[..., :4], precision, boxes=True)
            close(out[..., 4:], ref[..., 4:], precision)
        return
    boxes, scores, classes = out
    assert boxes.shape == (3, 30, 4) and scores.shape == classes.shape == (3, 30) and classes.dtype == torch.int64
    assert (classes >= 0).sum() > 0  # the check below compares real detections
    if precision == "fp32":
        assert torch.equal(classes, ref[2])
        close(boxes, ref[0], "fp32", boxes=True)
        close(scores, ref[1], "fp32")
    else:  # reduced precision may move a score across the threshold: clear detections must all be found
        assert share_found(ref, out, cfg["conf"] + 0.05) >= 0.9


def share_found(ref, out, min_score: float) -> float:
    """Share of the reference detections scoring above min_score that `out` has too (same class, IoU > 0.5)."""
    from torchvision.ops import box_iou

    found = total = 0
    for r, o in zip(to_detections(*ref), to_detections(*out)):
        r = r[r[:, 4] > min_score]
        total += len(r)
        if len(r) and len(o):
            iou = box_iou(r[:, :4], o[:, :4]) * (r[:, None, 5] == o[None, :, 5])
            found += int((iou.max(1).values > 0.5).sum())
    assert total > 0
    return found / total


def test_nms_graph_is_postprocess(tmp_path):
    """The exported NMS gives what cspnet.data.boxes.postprocess gives on the PyTorch model's rows."""
    from cspnet.data.boxes import postprocess

    model = tiny_detector().fuse()
    x = torch.rand(4, 3, DET_IMG, DET_IMG)
    with torch.no_grad():
        pred = model(x)
    path = tmp_path / "n.onnx"
    export(tiny_detector(), path, "onnx", DET_IMG, nms={"conf": 0.2, "iou": 0.3, "max_det": 300})
    import onnx

    assert "NonMaxSuppression" in {n.op_type for n in onnx.load(str(path)).graph.node}  # one graph, NMS inside
    got = to_detections(*load_exported(path)(x))
    want = postprocess(pred, conf=0.2, iou=0.3, max_det=300)
    assert sum(len(d) for d in want) > 10
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-3)


def test_mish_is_one_onnx_op(tmp_path):
    import onnx

    from cspnet.deploy.onnx_export import export_onnx

    model = create_model("cspresnet10", num_classes=4, act="mish").eval()
    x = torch.randn(2, 3, IMG, IMG)
    ops18 = [n.op_type for n in onnx.load(str(export_onnx(model, tmp_path / "a.onnx", x))).graph.node]
    ops17 = [n.op_type for n in onnx.load(str(export_onnx(model, tmp_path / "b.onnx", x, opset=17))).graph.node]
    assert ops18.count("Mish") == ops17.count("Softplus") > 5 and "Softplus" not in ops18 and "Tanh" not in ops18
    report = export(model, tmp_path / "m.onnx", "onnx", IMG)  # onnxruntime runs it and matches PyTorch
    assert report["errors"]["logits"] <= 1e-4


def test_refusals(tmp_path):
    model = randomized("cspresnet10")
    cases = [
        (dict(fmt="onnx", precision="bf16"), "onnxruntime has no bfloat16"),
        (dict(fmt="torchscript", precision="int8"), "--int8 needs --format onnx"),
        (dict(fmt="onnx", precision="int8"), "needs calibration images"),
        (dict(fmt="onnx", nms={"conf": 0.2, "iou": 0.5, "max_det": 10}), "--nms is for detectors"),
        (dict(fmt="onnx", precision="int4"), "unknown precision"),
    ]
    for kw, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            export(model, tmp_path / f"m{SUFFIX[kw['fmt']]}", img_size=IMG, **kw)
    with pytest.raises(ConfigError, match=r"named \*\.xml"):
        export(model, tmp_path / "m.onnx", "openvino", IMG)
    assert list(tmp_path.iterdir()) == []


def test_runtime_wrapper_rejects_what_it_cannot_run(tmp_path):
    from cspnet.engine.checkpoint import save_checkpoint

    ckpt = tmp_path / "last.pt"
    save_checkpoint({"model": {}, "meta": {}, "task": "classify"}, ckpt)
    assert exported_format(ckpt) is None  # a training checkpoint is not a TorchScript file
    with pytest.raises(InputError, match="not an exported model"):
        load_exported(ckpt)
    from cspnet.deploy.onnx_export import export_onnx

    bare = export_onnx(randomized("cspresnet10"), tmp_path / "bare.onnx", torch.randn(2, 3, IMG, IMG))
    with pytest.raises(InputError, match="no cspnet metadata"):
        load_exported(bare)
    path = tmp_path / "m.torchscript"
    export(randomized("cspresnet10"), path, "torchscript", IMG)
    assert exported_format(path) == "torchscript"
    m = load_exported(path)
    assert m.to("cpu").eval() is m
    with pytest.raises(InputError, match="runs on the CPU"):
        m.to("cuda")
    with pytest.raises(InputError, match="exported for \\(N, 3, 32, 32\\).*--img 64"):
        load_exported(path)(torch.randn(1, 3, 64, 64))


# ------------------------------------------------------------------------- int8 on a trained classifier, via the CLI


def colour_images(root, n: int = 12) -> list[int]:
    """n images per class in root/: class 0 reddish, 1 greenish, 2 bluish, with noise; returns the labels."""
    rng = np.random.default_rng(0)
    labels = []
    for c in range(3):
        for i in range(n):
            a = rng.integers(0, 120, (IMG, IMG, 3))
            a[..., c] += 120
            Image.fromarray(a.astype(np.uint8)).save(root / f"{c}_{i:02d}.png")
            labels.append(c)
    return labels


def test_int8_trained_classifier_keeps_its_top1(tmp_path, capsys):
    from cspnet.deploy.cli import load_calibration
    from cspnet.models.weights import save_state_dict

    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    data = tmp_path / "images"
    data.mkdir()
    labels = torch.tensor(colour_images(data))  # sorted file names: class by class
    x = load_calibration(data, "classify", IMG, 1000)  # preprocessed as val does
    assert x.shape == (36, 3, IMG, IMG)
    torch.manual_seed(0)
    model = create_model("cspresnet10", num_classes=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        fp32 = model(x).argmax(1)
    assert (fp32 == labels).float().mean() > 0.9  # it learned the colours
    w = save_state_dict(model.state_dict(), tmp_path / "w.safetensors")
    for fmt, suffix in (("onnx", ".onnx"), ("openvino", ".xml")):
        out = tmp_path / f"m{suffix}"
        argv = ["export", "--model", "cspresnet10", "--weights", str(w), "--img", str(IMG), "--format", fmt]
        assert main(argv + ["--int8", "--data", str(data), "--calib", "24", "--runs", "2", "--out", str(out)]) == 0
        line = capsys.readouterr().out
        assert f"{fmt} int8" in line and "top-1 agrees with fp32" in line and "batch 1 latency" in line
        m = load_exported(out)
        assert m.precision == "int8"
        agree = (m(x).argmax(1) == fp32).float().mean()
        assert agree >= 0.95, (fmt, agree)


def test_export_cli_formats_and_flags(tmp_path, capsys):
    out = tmp_path / "d.xml"
    pytest.importorskip("openvino")
    argv = ["export", "--model", "yolov4-tiny-s", "--img", str(DET_IMG), "--format", "openvino", "--nms"]
    assert main(argv + ["--max-det", "7", "--runs", "0", "--json", "--out", str(out)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (
        r["outputs"] == ["boxes", "scores", "classes"]
        and r["nms"]["max_det"] == 7
        and out.with_suffix(".bin").is_file()
    )
    assert load_exported(out)(torch.rand(2, 3, DET_IMG, DET_IMG))[0].shape == (2, 7, 4)
    for bad, msg in [
        (["--model", "cspresnet10", "--nms"], "--nms is for detectors"),
        (["--model", "cspresnet10", "--half", "--bf16"], "choose one of --half, --bf16, --int8"),
        (["--model", "cspresnet10", "--int8"], "--int8 needs --data"),
        (["--model", "cspresnet10", "--data", str(tmp_path)], "--data gives the calibration images of --int8"),
        (["--model", "cspresnet10", "--bf16", "--format", "onnx"], "onnxruntime has no bfloat16"),
    ]:
        assert main(["export", *bad, "--img", str(IMG), "--runs", "0", "--out", str(tmp_path / "x.onnx")]) == 2
        assert msg in capsys.readouterr().err


def test_check_compares_boxes_and_scores_each_in_its_unit():
    """A box 1e4 px wide does not loosen the check of the probabilities beside it (old rule: atol x max |output|)."""
    from cspnet.deploy.export import compare

    ref = torch.zeros(1, 4, 8)
    ref[..., 2:4] = 1e4  # huge widths and heights
    ref[..., 4:] = 0.5
    out = ref.clone()
    out[0, 0, 5] += 0.01  # one class probability off by 0.01
    out[0, 1, 2] *= 1 + 1e-6  # fp32 rounding on a huge width
    err = compare((out,), (ref,), ["predictions"], 416)
    assert err["scores"] == pytest.approx(0.01, rel=1e-3) and err["boxes"] == pytest.approx(1e-6, rel=0.1)
    logits = torch.tensor([[100.0, 0.0, -3.0]])
    assert compare((logits + 1e-3,), (logits,), ["logits"], 32)["logits"] == pytest.approx(1e-5, rel=1e-2)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_int8_detector_keeps_its_stem_conv_float(fmt, tmp_path):
    """int8 leaves a detector's stem (first) conv in float, as float_nodes says, and quantizes the convs after it."""
    needs(fmt, "int8")
    path = tmp_path / f"d{SUFFIX[fmt]}"
    export(tiny_detector(), path, fmt, DET_IMG, "int8", calib=torch.rand(8, 3, DET_IMG, DET_IMG))
    if fmt == "onnx":
        import onnx

        g = onnx.load(str(path)).graph
        producer = {o: n.op_type for n in g.node for o in n.output}
        convs = [n for n in g.node if n.op_type == "Conv"]
        quantized = [producer.get(c.input[0]) == "DequantizeLinear" for c in convs]
    else:
        import openvino as ov

        convs = [op for op in ov.Core().read_model(str(path)).get_ordered_ops() if op.get_type_name() == "Convolution"]
        quantized = [c.input_value(0).get_node().get_type_name() == "FakeQuantize" for c in convs]
    assert not quantized[0] and sum(quantized[1:]) >= len(convs) // 2, quantized
