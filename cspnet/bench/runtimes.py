"""`cspnet bench --runtimes`: models on every CPU runtime, interleaved in one process, medians, the fastest named.

A runtime path is RUNTIME[:PRECISION], e.g. `openvino:int8`:
  eager, fused, compile (torch.compile of the fused model; of timm's own): fp32, bf16;
  torchscript: fp32, fp16, bf16; onnxruntime: fp32, fp16, int8; openvino: fp32, fp16, bf16, int8;
  opencv: cv2.dnn on our ONNX file, or on the darknet cfg for a zoo detector whose cfg is in --darknet DIR.
A model is a zoo name (random weights, BN calibrated so activations have a trained net's scale), `timm:NAME`, or a
training checkpoint. Each exported file is checked against PyTorch on export (cspnet.deploy.export); int8 files
are calibrated on random images here, which is enough for their latency but says nothing of their accuracy.
"""

from __future__ import annotations

import copy
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cspnet.bench.harness import compile_inference, machine_info, time_until_steady
from cspnet.bench.measure import MAX_SPREAD, busy_threads, ratio_noise, summarize
from cspnet.errors import ConfigError, CspnetError

RUNTIMES = {
    "eager": ("fp32", "bf16"),
    "fused": ("fp32", "bf16"),
    "compile": ("fp32", "bf16"),
    "torchscript": ("fp32", "fp16", "bf16"),
    "onnxruntime": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "fp16", "bf16", "int8"),
    "opencv": ("fp32",),
}
FORMAT = {"torchscript": "torchscript", "onnxruntime": "onnx", "openvino": "openvino"}
FLAG = {"fp32": "", "fp16": " --half", "bf16": " --bf16", "int8": " --int8 --data YOUR_IMAGES"}


@dataclass(frozen=True)
class RuntimePath:
    runtime: str
    precision: str = "fp32"

    @property
    def label(self) -> str:
        return self.runtime if self.precision == "fp32" else f"{self.runtime}:{self.precision}"


def parse_runtimes(text: str) -> list[RuntimePath]:
    """'eager,fused,openvino:int8' -> RuntimePaths, each checked against what its runtime can run."""
    out: list[RuntimePath] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        runtime, _, precision = item.partition(":")
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
        precision = precision or "fp32"
        if precision not in RUNTIMES[runtime]:
            raise ConfigError(f"{runtime} runs {', '.join(RUNTIMES[runtime])} here, not {precision!r}")
        if RuntimePath(runtime, precision) not in out:
            out.append(RuntimePath(runtime, precision))
    if not out:
        raise ConfigError("--runtimes is empty; e.g. --runtimes eager,fused,onnxruntime,openvino")
    return out


@dataclass
class Subject:
    """One model to measure, with what the export command needs to name it."""

    label: str
    model: nn.Module
    img: int
    source: str = "cspnet"  # "cspnet" | "timm"
    hint: str = ""  # `cspnet export` arguments naming the model
    darknet: tuple[Path, Path] | None = None  # (cfg, weights) for OpenCV's darknet importer
    task: str = "classify"


def load_subject(spec: str, img: int | None, darknet_dir: str | Path | None, workdir: Path) -> Subject:
    """A zoo name, `timm:NAME` or a training checkpoint, ready to measure (its input size checked first)."""
    from cspnet.deploy.export import task_of
    from cspnet.models.img_size import check_img_size, model_stride, stride_of
    from cspnet.nn.bn import calibrate_bn

    if Path(spec).is_file():
        from cspnet.engine.checkpoint import load_model

        model, meta, _ = load_model(spec)
        check_img_size(img or meta.get("img", 224), model_stride(model))
        return Subject(
            Path(spec).name, model, img or meta.get("img", 224), hint=f"--weights {spec}", task=task_of(model)
        )
    if spec.startswith("timm:"):
        try:
            import timm
        except ImportError:
            raise ConfigError("timm models need timm: pip install 'cspnet[timm]'") from None
        from cspnet.models import model_info

        name = spec.removeprefix("timm:")
        try:
            name = model_info(name).timm_name or name
        except ConfigError:
            pass
        model = timm.create_model(name)
        calibrate_bn(model, torch.rand(2, 3, img or 224, img or 224))  # as ours: no drift into denormals
        return Subject(spec, model.eval(), img or 224, source="timm")
    from cspnet.models import create_model, model_info

    info = model_info(spec)
    img = check_img_size(img or info.img_size, stride_of(spec))
    cfg = Path(darknet_dir) / f"{spec}.cfg" if darknet_dir else None
    if cfg is not None and cfg.is_file() and info.task == "detect":
        from cspnet.interop.darknet import from_darknet, random_weights

        weights = random_weights(cfg, workdir / f"{spec}.weights", img)[1]
        model = from_darknet(cfg, weights, verify=False)
        return Subject(spec, model.eval(), img, hint=f"--model {spec}", darknet=(cfg, weights), task="detect")
    torch.manual_seed(0)
    model = create_model(spec)
    calibrate_bn(model, torch.rand(4, getattr(model, "in_chans", 3), img, img))
    return Subject(spec, model.eval(), img, hint=f"--model {spec}", task=task_of(model))


Maker = Callable[[torch.Tensor], Callable[[], object]]  # input batch -> the step that gets timed


def prepare_path(s: Subject, p: RuntimePath, workdir: Path, threads: int) -> Maker:
    """Build (export, validate, load) one runtime path of one model; returns how to make its timed step."""
    dtype = torch.bfloat16 if p.precision == "bf16" else torch.float32
    if p.runtime in ("eager", "fused", "compile"):
        if s.source == "timm" and p.runtime == "fused":
            raise ConfigError("timm models have no fuse(); their paths are eager, compile, onnxruntime, openvino")
        model = copy.deepcopy(s.model).eval()
        if p.runtime != "eager" and s.source == "cspnet":
            model.fuse()
        model = model.to(dtype)
        fn = compile_inference(model) if p.runtime == "compile" else model

        def make_torch(x: torch.Tensor) -> Callable[[], object]:
            xx = x.to(dtype)

            def step():
                with torch.inference_mode():
                    return fn(xx)

            return step

        return make_torch
    if p.runtime == "opencv":
        return _opencv(s, workdir, threads)
    from cspnet.deploy.export import SUFFIX, export
    from cspnet.deploy.runtime import load_exported

    fmt = FORMAT[p.runtime]
    path = workdir / f"{_slug(s.label)}-{p.precision}{SUFFIX[fmt]}"
    calib = torch.rand(8, 3, s.img, s.img) if s.task == "detect" else torch.randn(8, 3, s.img, s.img)
    export(copy.deepcopy(s.model), path, fmt, s.img, p.precision, calib if p.precision == "int8" else None)
    exported = load_exported(path, threads)
    return lambda x: lambda: exported(x)


def _opencv(s: Subject, workdir: Path, threads: int) -> Maker:
    try:
        import cv2
    except ImportError:
        raise ConfigError("the opencv runtime needs OpenCV: pip install 'cspnet[video]'") from None
    cv2.setNumThreads(threads)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # its failures are caught and reported
    if s.darknet is not None:
        net = cv2.dnn.readNetFromDarknet(*(str(f) for f in s.darknet))
    else:
        from cspnet.deploy.export import export

        path = workdir / f"{_slug(s.label)}-opencv.onnx"
        export(copy.deepcopy(s.model), path, "onnx", s.img)
        net = cv2.dnn.readNetFromONNX(str(path))
    names = net.getUnconnectedOutLayersNames()

    def make(x: torch.Tensor) -> Callable[[], object]:
        xn = x.numpy()

        def step():
            net.setInput(xn)
            return net.forward(names)

        return step

    return make


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def export_command(s: Subject, p: RuntimePath) -> str:
    """How a user gets this path for their own model."""
    if s.source == "timm":
        return f"(timm's model: {p.label})"
    if p.runtime == "eager":
        return "none: the PyTorch model as it is"
    if p.runtime == "fused":
        return "none: `model.fuse()` in PyTorch" + (", `.bfloat16()`" if p.precision == "bf16" else "")
    if p.runtime == "compile":
        return "none: `torch.compile(model.fuse())` in PyTorch"
    if p.runtime == "opencv":
        return f"cspnet export {s.hint} --img {s.img} --format onnx, then cv2.dnn.readNetFromONNX"
    return f"cspnet export {s.hint} --img {s.img} --format {FORMAT[p.runtime]}{FLAG[p.precision]}"


def cpu_isa() -> list[str]:
    """The CPU's vector and matrix extensions (lscpu flags: avx2, fma, avx512*, amx*, avx_vnni)."""
    text = ""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = set()
    for line in text.splitlines():
        if line.lower().startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    keep = ("avx2", "fma", "avx_vnni")
    return sorted(f for f in flags if f in keep or f.startswith(("avx512", "amx")))


def run_runtimes(
    specs: list[str],
    paths: list[RuntimePath],
    batches: tuple[int, ...] = (1,),
    img: int | None = None,
    threads: int | None = None,
    runs: int = 20,
    warmup: int = 3,
    darknet_dir: str | Path | None = None,
    max_spread: float = MAX_SPREAD,
) -> dict:
    """Every (model, runtime path) at each batch size, timed round-robin in one process; JSON-ready."""
    if runs < 1 or any(b < 1 for b in batches):
        raise ConfigError("runs and batch sizes must be >= 1")
    if threads:
        torch.set_num_threads(threads)
    threads, warnings = busy_threads(torch.get_num_threads(), explicit=bool(threads))
    torch.set_num_threads(threads)
    groups = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        subjects = [load_subject(s, img, darknet_dir, workdir) for s in specs]
        makers: dict[tuple[int, RuntimePath], Maker] = {}
        errors: dict[str, str] = {}
        for i, s in enumerate(subjects):
            for p in paths:
                try:
                    makers[i, p] = prepare_path(s, p, workdir, threads)
                except (CspnetError, RuntimeError) as e:  # one path that cannot run does not stop the others
                    errors[f"{s.label} {p.label}"] = str(e).strip().splitlines()[0]
        for b in batches:
            groups.append(_group(subjects, makers, b, runs, warmup, max_spread, errors))
    machine = machine_info(threads)
    machine["isa"] = cpu_isa() or machine["isa"]
    for mod in ("openvino", "cv2"):
        try:
            machine[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return {
        "machine": machine,
        "config": {"models": specs, "runtimes": [p.label for p in paths], "batches": list(batches), "runs": runs},
        "img": {s.label: s.img for s in subjects},
        "groups": groups,
        "errors": errors,
        "warnings": warnings + [w for g in groups for w in g["noise"]["warnings"]],
    }


def _group(
    subjects: list[Subject], makers: dict, batch: int, runs: int, warmup: int, max_spread: float, errors: dict
) -> dict:
    fns, meta = {}, {}
    for (i, p), make in makers.items():
        s = subjects[i]
        gen = torch.Generator().manual_seed(batch)
        x = torch.rand(batch, 3, s.img, s.img, generator=gen)
        label = f"{s.label} {p.label}"
        step = make(x)
        try:
            step()  # first call (compile, primitive creation) outside the warm-up budget
        except Exception as e:  # each runtime raises its own types (cv2.error, ...); the others still run
            errors[f"{label} batch {batch}"] = str(e).strip().splitlines()[-1][:300]
            continue
        fns[label], meta[label] = step, (s, p)
    times, noise = time_until_steady(fns, runs, warmup, max_spread)
    rows = {}
    for label, (s, p) in meta.items():
        rows[label] = {"model": s.label, "source": s.source, "runtime": p.runtime, "precision": p.precision}
        rows[label].update(summarize(times[label]))
        rows[label]["images_per_s"] = batch / (rows[label]["median_ms"] / 1e3)
        rows[label]["export"] = export_command(s, p)
    _ratios(rows, max_spread)
    ours = [k for k, r in rows.items() if r["source"] == "cspnet"]
    fastest = min(rows, key=lambda k: rows[k]["median_ms"]) if rows else None
    best_ours = min(ours, key=lambda k: rows[k]["median_ms"]) if ours else None
    return {"batch": batch, "rows": rows, "noise": noise, "fastest": fastest, "fastest_cspnet": best_ours}


def _ratios(rows: dict[str, dict], max_spread: float) -> None:
    """Each row's median over the fastest row's, over OpenCV's (same model) and over timm's best fp32 path."""
    if not rows:
        return
    fastest = min(rows.values(), key=lambda r: r["median_ms"])
    timm = [r for r in rows.values() if r["source"] == "timm" and r["precision"] == "fp32"]
    timm_best = min(timm, key=lambda r: r["median_ms"]) if timm else None
    for r in rows.values():
        r["vs_fastest"] = r["median_ms"] / fastest["median_ms"]
        refs = {
            "opencv": next((o for o in rows.values() if o["model"] == r["model"] and o["runtime"] == "opencv"), None)
        }
        refs["timm_best"] = timm_best if r["source"] == "cspnet" else None
        for key, ref in refs.items():
            if ref is not None and ref is not r:
                r[f"vs_{key}"] = r["median_ms"] / ref["median_ms"]
                r[f"vs_{key}_noise"] = ratio_noise(r, ref, max_spread)
                r[f"{key}_ref"] = f"{ref['model']} {ref['runtime']}"
