"""The measurement matrix: models x batch sizes x {inference, training}, interleaved in one process.

A variant is a model name with optional deployment options: `cspresnet50`, `timm:cspresnet50`,
`cspresnet50@fuse+cl+compile`, `cspresnet50@ort`. Every variant of one (mode, batch) group is timed
round-robin together with a large fp32 matmul, so the matmul peak and all ratios see the same machine noise.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cspnet.bench import measure
from cspnet.bench.measure import (
    MAX_SPREAD,
    busy_threads,
    count_macs,
    count_params,
    profile_peak_memory,
    ratio_noise,
    summarize,
    time_interleaved,
)
from cspnet.errors import ConfigError
from cspnet.nn.bn import calibrate_bn

OPTIONS = ("fuse", "cl", "compile", "ort")  # fold BN, channels_last, torch.compile, onnxruntime
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
MATMUL = "matmul"  # the reference row: torch.mm of two n x n fp32 matrices


@dataclass(frozen=True)
class Variant:
    """One model as it will run: cspnet or timm implementation, plus deployment options."""

    name: str
    source: str = "cspnet"  # "cspnet" | "timm"
    opts: tuple[str, ...] = ()
    overrides: tuple[tuple[str, object], ...] = ()  # create_model overrides, e.g. (("fusion", "last"),)

    @property
    def label(self) -> str:
        base = f"timm:{self.name}" if self.source == "timm" else self.name
        if self.overrides:
            base += "[" + ",".join(f"{k}={v}" for k, v in self.overrides) + "]"
        return f"{base}@{'+'.join(self.opts)}" if self.opts else base


def parse_variant(spec: str) -> Variant:
    """'timm:cspresnet50@cl' -> Variant('cspresnet50', 'timm', ('cl',))."""
    base, _, opt_str = spec.partition("@")
    source, _, name = base.rpartition(":")
    source = source or "cspnet"
    if source not in ("cspnet", "timm"):
        raise ConfigError(f"unknown source {source!r} in {spec!r}; write NAME or timm:NAME")
    opts = tuple(o for o in opt_str.split("+") if o)
    bad = [o for o in opts if o not in OPTIONS]
    if bad:
        raise ConfigError(f"unknown option(s) {', '.join(bad)} in {spec!r}; choose from {', '.join(OPTIONS)}")
    if not name:
        raise ConfigError(f"empty model name in {spec!r}")
    if source == "cspnet":
        from cspnet.models import model_info

        model_info(name)  # one-line error for unknown names
    return Variant(name, source, tuple(o for o in OPTIONS if o in opts))


@dataclass
class BenchConfig:
    """What to measure. `threads=None` keeps torch's default."""

    variants: list[Variant]
    img_size: int = 224
    batches: tuple[int, ...] = (1,)
    threads: int | None = None
    dtype: str = "float32"
    runs: int = 20
    warmup: int = 3
    train: bool = False  # also time training steps (forward + backward + SGD step)
    memory: bool = True  # peak activation memory via the profiler (one extra, untimed step per variant)
    matmul_size: int = 1024
    num_classes: int = 1000
    calibrate_bn: bool = True
    seed: int = 0
    max_spread: float = MAX_SPREAD  # p75/p25 above this: more rounds, then ratios marked noisy
    extra: dict = field(default_factory=dict)


def machine_info(threads: int) -> dict:
    """Where the numbers come from."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "isa": [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }
    for mod in ("timm", "onnxruntime"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def build_model(v: Variant, num_classes: int = 1000) -> nn.Module:
    """The nn.Module behind a variant, freshly initialised (random weights)."""
    if v.source == "timm":
        try:
            import timm
        except ImportError:
            raise ConfigError("timm variants need timm: pip install 'cspnet[timm]'") from None
        from cspnet.models import model_info

        try:
            info = model_info(v.name)
            tname = info.timm_name or v.name
        except ConfigError:
            tname = v.name
        return timm.create_model(tname, num_classes=num_classes)
    from cspnet.models import create_model

    return create_model(v.name, num_classes=num_classes, **dict(v.overrides))


def compile_inference(model: nn.Module) -> Callable:
    from torch._inductor import config as inductor_config

    inductor_config.freezing = True  # inference: constant-fold weights, prepack for oneDNN
    return torch.compile(model)


class Runner:
    """A variant made ready to run: `step()` is what gets timed."""

    def __init__(self, v: Variant, cfg: BenchConfig, batch: int, train: bool) -> None:
        self.v = v
        torch.manual_seed(cfg.seed)
        self.model = build_model(v, cfg.num_classes)
        self.in_chans = getattr(self.model, "in_chans", 3)
        self.params = count_params(self.model)
        self.macs = count_macs(self.model, cfg.img_size, 1, self.in_chans)
        dtype = DTYPES[cfg.dtype]
        cl = "cl" in v.opts
        fmt = torch.channels_last if cl else torch.contiguous_format
        gen = torch.Generator().manual_seed(cfg.seed)
        x = torch.randn(batch, self.in_chans, cfg.img_size, cfg.img_size, generator=gen)
        if cfg.calibrate_bn:
            calibrate_bn(self.model, torch.randn(max(batch, 2), self.in_chans, cfg.img_size, cfg.img_size))
        self.x = x.to(dtype).contiguous(memory_format=fmt)
        self.model = self.model.to(dtype=dtype, memory_format=fmt)
        self.train = train
        self._tmp: tempfile.TemporaryDirectory | None = None
        if train:
            if {"fuse", "ort", "compile"} & set(v.opts):
                raise ConfigError(f"{v.label}: training steps run eager PyTorch; drop @fuse/@ort/@compile")
            self.model.train()
            self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
            self.y = torch.randint(0, cfg.num_classes, (batch,), generator=gen)
            self.step = self._train_step
            return
        self.model.eval()
        if "fuse" in v.opts:
            if v.source != "cspnet":
                raise ConfigError(f"{v.label}: @fuse swaps in cspnet's fused modules; use a cspnet model")
            self.model.fuse()
        if "ort" in v.opts:
            if dtype != torch.float32 or cl or "compile" in v.opts:
                raise ConfigError(f"{v.label}: @ort runs the fp32 ONNX graph; drop @cl/@compile and --dtype")
            from cspnet.deploy.export import export_onnx, ort_session

            self._tmp = tempfile.TemporaryDirectory()
            path = export_onnx(self.model, Path(self._tmp.name) / "model.onnx", self.x)
            sess = ort_session(path, torch.get_num_threads())
            xn = self.x.numpy()
            self.fn = lambda: sess.run(None, {"images": xn})[0]
        elif "compile" in v.opts:
            self.fn = compile_inference(self.model)
        else:
            self.fn = self.model
        self.step = self._infer_step

    def _infer_step(self) -> object:
        with torch.inference_mode():
            return self.fn() if "ort" in self.v.opts else self.fn(self.x)

    def _train_step(self) -> object:
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.x).float(), self.y)
        loss.backward()
        self.opt.step()
        return loss

    def peak_memory_mb(self) -> float | None:
        """Peak bytes of tensors created during one step (activations, temporaries, grads), by the profiler.

        Excludes tensors alive before the step (weights, the input, optimizer state). None for onnxruntime.
        """
        if "ort" in self.v.opts or "compile" in self.v.opts:
            return None
        return profile_peak_memory(self.step) / 2**20


def run_group(cfg: BenchConfig, batch: int, train: bool) -> dict:
    """One interleaved measurement: every variant at one batch size, inference or training."""
    runners = {v.label: Runner(v, cfg, batch, train) for v in cfg.variants}
    for r in runners.values():  # first calls (compile, oneDNN primitive creation) stay out of the warm-up budget
        r.step()
    n = cfg.matmul_size
    a, b = torch.randn(n, n), torch.randn(n, n)
    fns: dict[str, Callable[[], object]] = {MATMUL: lambda: torch.mm(a, b)}
    fns.update({k: r.step for k, r in runners.items()})
    times, noise = time_until_steady(fns, cfg.runs, cfg.warmup, cfg.max_spread)
    mm = summarize(times[MATMUL])
    peak_gflops = 2 * n**3 / (mm["median_ms"] / 1e3) / 1e9
    flops_per_mac = 6 if train else 2  # backward ~ 2x forward
    rows = {}
    for k, r in runners.items():
        s = summarize(times[k])
        sec = s["median_ms"] / 1e3
        gflops = flops_per_mac * r.macs * batch / sec / 1e9
        rows[k] = {
            "name": r.v.name,
            "source": r.v.source,
            "opts": list(r.v.opts),
            "params": r.params,
            "macs": r.macs,
            **s,
            "images_per_s": batch / sec,
            "gflops": gflops,
            "peak_share": gflops / peak_gflops,
            "peak_mem_mb": r.peak_memory_mb() if cfg.memory else None,
        }
    add_ratios(rows, cfg.max_spread)
    return {
        "mode": "train" if train else "infer",
        "batch": batch,
        "matmul": {"n": n, **mm, "gflops": peak_gflops},
        "rows": rows,
        "noise": noise,
    }


def time_until_steady(
    fns: dict[str, Callable[[], object]], runs: int, warmup: int, max_spread: float = MAX_SPREAD, max_rounds: int = 3
) -> tuple[dict[str, list[float]], dict]:
    """time_interleaved, then up to max_rounds - 1 more rounds of `runs` while some p75/p25 is above max_spread.

    Returns the samples and a noise record: load before/after, the worst spread, rounds, and warnings.
    """
    load_before = measure.load_average()
    times = time_interleaved(fns, runs=runs, warmup=warmup, rotate=True)
    rounds = 1
    worst = max(summarize(v)["spread"] for v in times.values())
    while worst > max_spread and rounds < max_rounds:
        more = time_interleaved(fns, runs=runs, warmup=0, rotate=True)
        times = {k: times[k] + more[k] for k in times}
        rounds += 1
        worst = max(summarize(v)["spread"] for v in times.values())
    load_after = measure.load_average()
    noise = {
        "load_1min_before": load_before,
        "load_1min_after": load_after,
        "threads": torch.get_num_threads(),
        "max_spread": worst,
        "spread_limit": max_spread,
        "rounds": rounds,
        "runs": rounds * runs,
        "noisy": worst > max_spread,
        "warnings": [],
    }
    if worst > max_spread:
        noise["warnings"].append(
            f"timings are noisy: p75/p25 up to {worst:.1f} (limit {max_spread:g}) after {rounds * runs} runs; "
            "ratios the noise swamps are marked ~ and are no result"
        )
    if load_after is not None and load_after > noise["threads"]:
        noise["warnings"].append(
            f"1-min load average {load_after:.1f} during the run, above the {noise['threads']} thread(s) used"
        )
    return times, noise


def add_ratios(rows: dict[str, dict], max_spread: float = MAX_SPREAD) -> None:
    """Latency relative to the plain twin (same source and options) and to timm's same model (same options).

    Each ratio whose samples are too spread to support it gets `<ratio>_noise` = the worst p75/p25 (else None).
    """
    from cspnet.models import model_info

    by_key = {(r["name"], r["source"], tuple(r["opts"])): r for r in rows.values()}
    for r in rows.values():
        if r["source"] != "cspnet":
            continue
        info = model_info(r["name"])
        twin = by_key.get((info.twin, "cspnet", tuple(r["opts"]))) if info.twin else None
        if twin is not None and info.is_csp:
            r["twin"] = info.twin
            r["ratio_vs_twin"] = r["median_ms"] / twin["median_ms"]
            r["ratio_vs_twin_noise"] = ratio_noise(r, twin, max_spread)
            r["macs_ratio_vs_twin"] = r["macs"] / twin["macs"]
        timm_rows = [t for t in rows.values() if t["source"] == "timm" and t["name"] == r["name"]]
        if timm_rows:  # the fastest path a timm user has in this run (eager, channels_last, compile, ORT)
            best = min(timm_rows, key=lambda t: t["median_ms"])
            r["timm_best"] = "timm:" + best["name"] + ("@" + "+".join(best["opts"]) if best["opts"] else "")
            r["ratio_vs_timm_best"] = r["median_ms"] / best["median_ms"]
            r["ratio_vs_timm_best_noise"] = ratio_noise(r, best, max_spread)
        ref = by_key.get((r["name"], "timm", ())) or by_key.get((r["name"], "timm", tuple(r["opts"])))
        same = by_key.get((r["name"], "timm", tuple(r["opts"])))
        if ref is not None:
            r["ratio_vs_timm_eager"] = r["median_ms"] / ref["median_ms"]
            r["ratio_vs_timm_eager_noise"] = ratio_noise(r, ref, max_spread)
        if same is not None:
            r["ratio_vs_timm_same_opts"] = r["median_ms"] / same["median_ms"]
            r["ratio_vs_timm_same_opts_noise"] = ratio_noise(r, same, max_spread)


def run_bench(cfg: BenchConfig) -> dict:
    """The whole matrix; returns a JSON-ready dict."""
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {cfg.dtype!r}; choose one of {', '.join(DTYPES)}")
    if not cfg.variants:
        raise ConfigError("no models to measure; pass at least one model name")
    if cfg.runs < 1 or any(b < 1 for b in cfg.batches):
        raise ConfigError("runs and batch sizes must be >= 1")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    threads, warnings = busy_threads(torch.get_num_threads(), explicit=bool(cfg.threads))
    torch.set_num_threads(threads)
    groups = [run_group(cfg, b, False) for b in cfg.batches]
    if cfg.train:
        train_variants = [v for v in cfg.variants if not {"fuse", "ort", "compile"} & set(v.opts)]
        tcfg = BenchConfig(**{**cfg.__dict__, "variants": train_variants})
        groups += [run_group(tcfg, b, True) for b in cfg.batches]
    busy = any(w.startswith("machine busy") for w in warnings)
    for g in groups:
        warnings += [w for w in g["noise"]["warnings"] if w not in warnings and not (busy and w.startswith("1-min"))]
    return {
        "warnings": warnings,
        "noisy": any(g["noise"]["noisy"] for g in groups),
        "machine": machine_info(torch.get_num_threads()),
        "config": {
            "img_size": cfg.img_size,
            "batches": list(cfg.batches),
            "dtype": cfg.dtype,
            "runs": cfg.runs,
            "warmup": cfg.warmup,
            "train": cfg.train,
            "calibrate_bn": cfg.calibrate_bn,
            "variants": [v.label for v in cfg.variants],
            **cfg.extra,
        },
        "groups": groups,
    }


def expand_variants(
    names: list[str],
    twins: bool = False,
    compare_timm: bool = False,
    opts: tuple[str, ...] = (),
    timm_best: bool = False,
) -> list[Variant]:
    """Variants for names (plus their plain twins, plus timm's same model), global options appended.

    timm_best: also timm's model under torch.compile and in ONNX Runtime (the best paths a timm user has).
    """
    from cspnet.models import model_info

    out: list[Variant] = []

    def add(v: Variant) -> None:
        if v not in out:
            out.append(v)

    for spec in names:
        v = parse_variant(spec)
        if opts:
            v = parse_variant(f"{spec}{'+' if '@' in spec else '@'}{'+'.join(opts)}")
        add(v)
        if v.source != "cspnet":
            continue
        info = model_info(v.name)
        if twins and info.twin:
            add(Variant(info.twin, "cspnet", v.opts))
        if compare_timm or timm_best:
            for n in [v.name] + ([info.twin] if twins and info.twin else []):
                if model_info(n).timm_name:
                    t_opts = tuple(o for o in v.opts if o == "cl")  # timm has no fuse()
                    add(Variant(n, "timm", t_opts))
                    if timm_best:
                        add(Variant(n, "timm", ("compile",)))
                        add(Variant(n, "timm", ("ort",)))
    return out
