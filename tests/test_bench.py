"""The benchmark harness's logic on tiny models (structure and arithmetic, never absolute times)."""

from __future__ import annotations

import json

import pytest

from cspnet.bench.harness import BenchConfig, Variant, expand_variants, parse_variant, run_bench
from cspnet.bench.measure import count_macs, count_params
from cspnet.bench.report import markdown, write_all
from cspnet.cli import main
from cspnet.errors import ConfigError
from cspnet.models import create_model


def test_parse_variant():
    assert parse_variant("cspresnet50") == Variant("cspresnet50")
    v = parse_variant("timm:cspresnet50@cl")
    assert (v.name, v.source, v.opts, v.label) == ("cspresnet50", "timm", ("cl",), "timm:cspresnet50@cl")
    assert parse_variant("resnet10@compile+fuse").opts == ("fuse", "compile")  # canonical order
    for bad, msg in [("resnet10@fast", "unknown option"), ("tf:resnet10", "unknown source"), ("nosuch", "unknown")]:
        with pytest.raises(ConfigError, match=msg):
            parse_variant(bad)


def test_expand_variants_adds_twins_and_timm():
    labels = [v.label for v in expand_variants(["cspresnet50"], twins=True, compare_timm=True, opts=("cl",))]
    assert labels == ["cspresnet50@cl", "resnet50@cl", "timm:cspresnet50@cl", "timm:resnet50@cl"]
    assert [v.label for v in expand_variants(["resnet10", "resnet10"], twins=True)] == ["resnet10", "cspresnet10"]


@pytest.fixture(scope="module")
def result():
    variants = [parse_variant(s) for s in ("cspresnet10", "resnet10", "cspresnet10@fuse+cl", "cspresnet10@ort")]
    cfg = BenchConfig(variants=variants, img_size=64, batches=(1, 2), runs=2, warmup=0, train=True, matmul_size=64)
    cfg.max_spread = float("inf")  # structure only: no extra rounds on a busy machine
    return run_bench(cfg)


@pytest.mark.slow
def test_bench_structure_and_arithmetic(result):
    groups = [(g["mode"], g["batch"]) for g in result["groups"]]
    assert groups == [("infer", 1), ("infer", 2), ("train", 1), ("train", 2)]
    macs = count_macs(create_model("cspresnet10"), 64)
    params = count_params(create_model("cspresnet10"))
    for g in result["groups"]:
        rows = g["rows"]
        expected = ["cspresnet10", "resnet10"] + (
            ["cspresnet10@fuse+cl", "cspresnet10@ort"] if g["mode"] == "infer" else []
        )
        assert list(rows) == expected  # fuse/ort variants cannot train
        assert g["matmul"]["gflops"] == pytest.approx(2 * 64**3 / (g["matmul"]["median_ms"] / 1e3) / 1e9)
        for r in rows.values():
            sec = r["median_ms"] / 1e3
            assert r["images_per_s"] == pytest.approx(g["batch"] / sec)
            assert r["peak_share"] == pytest.approx(r["gflops"] / g["matmul"]["gflops"])
            assert r["p25_ms"] <= r["median_ms"] <= r["p75_ms"]
        csp = rows["cspresnet10"]
        assert (csp["macs"], csp["params"]) == (macs, params)
        flops = (6 if g["mode"] == "train" else 2) * macs * g["batch"]
        assert csp["gflops"] == pytest.approx(flops / (csp["median_ms"] / 1e3) / 1e9)
        assert csp["ratio_vs_twin"] == pytest.approx(csp["median_ms"] / rows["resnet10"]["median_ms"])
        assert csp["macs_ratio_vs_twin"] == pytest.approx(macs / rows["resnet10"]["macs"])
        assert "ratio_vs_twin" not in rows["resnet10"]  # ratios are CSP over plain
        assert csp["peak_mem_mb"] > 0
        if g["mode"] == "infer":
            assert rows["cspresnet10@ort"]["peak_mem_mb"] is None  # not measurable inside onnxruntime
        else:  # training keeps activations for backward: more memory than inference
            infer = result["groups"][groups.index(("infer", g["batch"]))]["rows"]["cspresnet10"]
            assert csp["peak_mem_mb"] > infer["peak_mem_mb"]
    assert result["machine"]["threads"] >= 1 and "torch" in result["machine"]


@pytest.mark.slow
def test_report_files(result, tmp_path):
    md = markdown(result)
    for label in ("cspresnet10", "resnet10", "cspresnet10@fuse+cl", "cspresnet10@ort"):
        assert sum(line.startswith(f"| {label} |") for line in md.splitlines()) == (4 if "@" not in label else 2)
    paths = write_all(result, tmp_path)
    assert json.loads(paths["json"].read_text())["groups"][0]["batch"] == 1
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_bad_config():
    with pytest.raises(ConfigError, match="dtype"):
        run_bench(BenchConfig(variants=[Variant("resnet10")], dtype="int4"))
    with pytest.raises(ConfigError, match="no models"):
        run_bench(BenchConfig(variants=[]))


@pytest.mark.slow
def test_bench_cli(tmp_path, capsys):
    args = ["bench", "cspresnet10", "--twins", "--img", "32", "--runs", "1", "--warmup", "0", "--no-memory"]
    assert main(args + ["--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| cspresnet10 |" in out and "| resnet10 |" in out
    assert (tmp_path / "out" / "bench.png").is_file()
    assert main(["bench", "cspresnet10@warp"]) == 2
    assert "unknown option" in capsys.readouterr().err


def test_time_interleaved_rotates_order():
    from cspnet.bench.measure import time_interleaved

    order: list[str] = []
    fns = {k: (lambda k=k: order.append(k)) for k in "abc"}
    times = time_interleaved(fns, runs=3, warmup=0, rotate=True)
    assert order == list("abcbcacab") and all(len(v) == 3 for v in times.values())


# ---------------------------------------------------------------- issue #9: measurements under load


def fake_clock(durations):
    """A clock whose every timed call lasts the next of `durations` seconds (cycled)."""
    import itertools

    it, t, calls = itertools.cycle(durations), [0.0], [0]

    def clock() -> float:
        calls[0] += 1
        if calls[0] % 2 == 0:  # the second reading of a sample: advance by the injected duration
            t[0] += next(it)
        return t[0]

    return clock


@pytest.fixture
def quiet_machine(monkeypatch):
    from cspnet.bench import measure

    monkeypatch.setattr(measure, "load_average", lambda: 0.0)
    return measure


def test_noisy_timings_are_marked_not_reported(quiet_machine, monkeypatch, capsys):
    monkeypatch.setattr(quiet_machine, "clock", fake_clock([0.001, 0.004, 0.001, 0.001, 0.004, 0.004, 0.001]))
    argv = ["compare", "resnet10", "cspresnet10", "--img", "32", "--runs", "4", "--warmup", "0"]
    assert main(argv + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["noise"]["noisy"] and r["noise"]["rounds"] == 3 and r["noise"]["runs"] == 12  # more rounds first
    assert r["models"]["cspresnet10"]["ratio_vs_first_noise"] > 1.5
    assert any("timings are noisy" in w for w in r["warnings"])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "median latency x~" in out and "(noisy: p75/p25 " in out and "12 interleaved runs" in out


def test_steady_timings_give_plain_ratios(quiet_machine, monkeypatch, capsys):
    monkeypatch.setattr(quiet_machine, "clock", fake_clock([0.002]))
    assert main(["compare", "resnet10", "cspresnet10", "--img", "32", "--runs", "3", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "median latency x1.00" in out and "~" not in out and "warning" not in out


def test_bench_report_marks_noisy_twin_ratios(quiet_machine, monkeypatch):
    monkeypatch.setattr(quiet_machine, "clock", fake_clock([0.001, 0.005, 0.001, 0.005, 0.005]))
    cfg = BenchConfig([Variant("cspresnet10"), Variant("resnet10")], img_size=32, runs=3, warmup=0, memory=False)
    cfg.matmul_size = 32
    result = run_bench(cfg)
    assert result["noisy"] and result["groups"][0]["noise"]["max_spread"] > 1.5
    md = markdown(result)
    assert "**Warning:** timings are noisy" in md and "| ~" in md and "(noisy: p75/p25" in md


def test_busy_machine_warns_and_uses_the_free_cores(monkeypatch):
    from cspnet.bench import measure

    monkeypatch.setattr(measure, "load_average", lambda: 14.0)
    monkeypatch.setattr(measure.os, "cpu_count", lambda: 16)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads, notes = measure.busy_threads(8)
    assert threads == 2 and "1-min load average 14.0 is above the 8 thread(s)" in notes[0]
    assert "using 2 thread(s) instead of 8" in notes[1] and "OMP_WAIT_POLICY=PASSIVE" in notes[2]
    assert measure.busy_threads(8, explicit=True)[0] == 8  # the user's --threads is kept, with the warning
    monkeypatch.setattr(measure, "load_average", lambda: 3.0)
    assert measure.busy_threads(8) == (8, [])


def test_memory_profiling_prints_no_profiler_logs(capfd):
    """`bench --fuse` printed kineto's USDT profiler_start/stop and 'ERROR: gpuGetDeviceCount' lines on CPU."""
    import torch

    from cspnet.bench.measure import profile_peak_memory

    a = torch.randn(64, 64)
    for _ in range(2):
        assert profile_peak_memory(lambda: a @ a) >= 64 * 64 * 4
    err = capfd.readouterr().err
    assert "USDT" not in err and "profiler_st" not in err and "gpuGetDeviceCount" not in err, err


# ---------------------------------------------------------------- issue #20: bench --runtimes


def test_parse_runtimes():
    from cspnet.bench.runtimes import RuntimePath, parse_runtimes

    paths = parse_runtimes("eager, fused,openvino:int8,eager,onnxruntime:fp16")
    assert paths == [
        RuntimePath("eager"),
        RuntimePath("fused"),
        RuntimePath("openvino", "int8"),
        RuntimePath("onnxruntime", "fp16"),
    ]
    assert [p.label for p in paths] == ["eager", "fused", "openvino:int8", "onnxruntime:fp16"]
    for bad, msg in [
        ("tensorrt", "unknown runtime"),
        ("onnxruntime:bf16", "onnxruntime runs fp32, fp16, int8"),
        (",", "empty"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            parse_runtimes(bad)


@pytest.mark.slow
def test_bench_runtimes_names_the_fastest_and_its_export(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    runtimes = "eager,fused,torchscript,onnxruntime,openvino,opencv"
    argv = ["bench", "cspresnet10", "--img", "32", "--runtimes", runtimes, "--runs", "2", "--warmup", "0"]
    assert main(argv + ["--batch", "1", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [g["batch"] for g in r["groups"]] == [1, 2] and r["errors"] == {}
    assert isinstance(r["machine"]["isa"], list)
    for g in r["groups"]:
        labels = [f"cspresnet10 {p}" for p in runtimes.split(",")]
        assert list(g["rows"]) == labels  # every path measured in the same interleaved group
        assert g["fastest"] in labels and g["fastest_cspnet"] == g["fastest"]  # one of the measured paths
        fastest = g["rows"][g["fastest"]]
        assert fastest["vs_fastest"] == 1.0 and all(row["vs_fastest"] >= 1.0 for row in g["rows"].values())
        cv = g["rows"]["cspresnet10 opencv"]["median_ms"]
        assert g["rows"]["cspresnet10 eager"]["vs_opencv"] == pytest.approx(
            g["rows"]["cspresnet10 eager"]["median_ms"] / cv
        )
        assert (
            g["rows"]["cspresnet10 openvino"]["export"]
            == "cspnet export --model cspresnet10 --img 32 --format openvino"
        )
    assert main(argv[:-4] + ["--runs", "1", "--warmup", "0", "--out", str(tmp_path / "o")]) == 0
    md = capsys.readouterr().out
    assert "ISA:" in md and "To deploy it: `" in md and "| cspresnet10 | openvino | fp32 |" in md
    assert (tmp_path / "o" / "runtimes.md").read_text() in md  # the same table, after the "wrote" line
    assert main(["bench", "cspresnet10", "--runtimes", "eager", "--twins"]) == 2
    assert "with --runtimes name the paths instead" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_runtimes_opencv_runs_the_darknet_cfg(darknet_dir, capsys):
    """A zoo detector with its darknet cfg: built from the cfg, OpenCV through its darknet importer, int8 listed."""
    pytest.importorskip("cv2")
    pytest.importorskip("onnxruntime")
    from cspnet.bench.runtimes import parse_runtimes, run_runtimes

    r = run_runtimes(
        ["yolov4-tiny"],
        parse_runtimes("fused,onnxruntime:int8,opencv"),
        img=64,
        runs=2,
        warmup=0,
        darknet_dir=darknet_dir,
    )
    rows = r["groups"][0]["rows"]
    assert list(rows) == ["yolov4-tiny fused", "yolov4-tiny onnxruntime:int8", "yolov4-tiny opencv"], r["errors"]
    assert rows["yolov4-tiny fused"]["vs_opencv"] > 0
    assert rows["yolov4-tiny onnxruntime:int8"]["export"].endswith("--format onnx --int8 --data YOUR_IMAGES")


def test_bench_runtimes_bad_input_is_one_line(capsys):
    assert main(["bench", "yolov4-tiny-s", "--img", "100", "--runtimes", "eager"]) == 2
    assert "--img 100 is not a multiple of the model's stride 32; use 96 or 128" in capsys.readouterr().err
    assert main(["bench", "cspresnet10", "--runtimes", "tensorrt"]) == 2
    assert "unknown runtime 'tensorrt'" in capsys.readouterr().err
