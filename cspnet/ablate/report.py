"""A study's table (CSV + markdown) and plots (accuracy vs MACs, accuracy vs CPU latency), from what is done so far."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

LAT_KEYS = ("b1_unfused", "b1_fused", "b8_unfused", "b8_fused")
PLOT_LATENCY = "b1_fused"  # the deployment path, one image


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(ratio: float | None) -> float | None:
    return None if ratio is None else 100 * (ratio - 1)


def collect(study_dir: str | Path) -> tuple[dict, list[dict]]:
    """study.json and one row per variant (plain first) with whatever parts are done."""
    d = Path(study_dir)
    info = _read(d / "study.json")
    if info is None:
        from cspnet.errors import InputError

        raise InputError(f"{d} is not an ablation study (no study.json); run `cspnet ablate` first")
    rows = []
    for slug, v in info["variants"].items():
        m = _read(d / slug / "measure.json") or {}
        if m.get("machine") and "machine" not in info:
            info["machine"] = m["machine"]  # the CPU the latency columns come from (one per study, in practice)
        runs = [
            r
            for r in (_read(p) for p in sorted((d / slug).glob("seed*/train.json")))
            if r and r.get("top1") is not None
        ]
        top1 = [r["top1"] for r in runs]
        row = {
            "variant": v["label"],
            "slug": slug,
            "model": v["model"],
            "overrides": ",".join(f"{k}={x}" for k, x in v["overrides"].items()),
            "params": m.get("params"),
            "macs": m.get("macs"),
            "seeds": len(runs),
            "top1_mean": statistics.fmean(top1) if top1 else None,
            "top1_std": statistics.stdev(top1) if len(top1) > 1 else None,
            "top1_runs": " ".join(f"{t:.2f}" for t in top1),
            "top5_mean": statistics.fmean(r["top5"] for r in runs) if runs else None,
            "epochs": max((r["epochs"] for r in runs), default=None),
            "run_img_s": statistics.fmean(r["img_s"] for r in runs if r.get("img_s"))
            if any(r.get("img_s") for r in runs)
            else None,
            "run_device": ",".join(sorted({r["device"] for r in runs})),
            "peak_cuda_mib": max((r["peak_cuda_mib"] for r in runs if r.get("peak_cuda_mib")), default=None),
        }
        for k in LAT_KEYS:
            row[f"{k}_ms"] = m.get("latency", {}).get(k, {}).get("median_ms")
            row[f"{k}_vs_plain_pct"] = _pct(m.get("ratios", {}).get(k))
        ts = m.get("train_step", {})
        row["train_step_img_s"] = ts.get("images_per_s")
        step_ratio = m.get("ratios", {}).get("train_step")
        row["train_step_vs_plain_pct"] = _pct(1 / step_ratio) if step_ratio else None  # in images per second
        row["activations_mib"] = m.get("activations_mib")
        rows.append(row)
    _fill_macs(info, rows)
    plain = rows[0]
    for r in rows:
        r["macs_vs_plain_pct"] = _pct(r["macs"] / plain["macs"]) if r["macs"] and plain["macs"] else None
        r["params_vs_plain_pct"] = _pct(r["params"] / plain["params"]) if r["params"] and plain["params"] else None
        both = r["top1_mean"] is not None and plain["top1_mean"] is not None
        r["top1_vs_plain"] = r["top1_mean"] - plain["top1_mean"] if both else None
    return info, rows


def _fill_macs(info: dict, rows: list[dict]) -> None:
    """Params and MACs do not need the timing run: count them here where measure.json is missing."""
    missing = [r for r in rows if r["macs"] is None]
    if not missing or not info.get("classes"):
        return
    from cspnet.bench.measure import count_macs, count_params
    from cspnet.models import create_model

    small = {"small_input": True} if info["recipe"].get("small_input") else {}
    for r in missing:
        v = info["variants"][r["slug"]]
        net = create_model(v["model"], num_classes=len(info["classes"]), **{**v["overrides"], **small})
        r["params"], r["macs"] = count_params(net), count_macs(net, info["recipe"]["img"])


def _f(x: float | None, fmt: str, dash: str = "–") -> str:
    return dash if x is None else format(x, fmt)


def _delta(x: float | None, unit: str = "%") -> str:
    return "" if x is None else f" ({x:+.1f}{unit})"


def write_report(study_dir: str | Path) -> list[Path]:
    """results.csv, results.md, acc_vs_macs.png, acc_vs_latency.png in the study folder."""
    d = Path(study_dir)
    info, rows = collect(d)
    from cspnet.io import atomic_write

    def write_csv(f) -> None:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    out = [atomic_write(d / "results.csv", write_csv, mode="w")]
    out.append(atomic_write(d / "results.md", lambda f: f.write(markdown(info, rows)), mode="w"))
    out += plot(d, rows)
    return out


def markdown(info: dict, rows: list[dict]) -> str:
    rec = info["recipe"]
    machine = info.get("machine")
    lines = [
        f"# Ablation of {info['base']} ({info['budget']} budget)",
        "",
        f"Data: `{info.get('data', '?')}` ({len(info.get('classes', []))} classes). Recipe, the same for every variant: "
        f"{rec['epochs']} epoch(s) on {rec['subset'] or 'all'} training images, validated on "
        f"{rec['val_subset'] or 'all'} images, {rec['img']}x{rec['img']} input"
        f"{' (small-input stem)' if rec.get('small_input') else ''}, batch {rec['batch']}, SGD nesterov lr {rec['lr']} "
        f"(warm-up {rec['warmup_epochs']} epoch, cosine), weight decay {rec['weight_decay']}, random resized crop "
        f"(scale {rec['scale']}-1) + flip, {'EMA weights evaluated' if rec.get('ema') else 'no EMA'}. "
        "Top-1 is the last epoch's test top-1, mean ± sample std over seeds.",
        "",
    ]
    if machine:
        lines += [
            f"CPU measurements ({machine.get('cpu')}, {machine.get('threads')} torch threads, ISA "
            f"{' '.join(machine.get('isa', []))}, torch {machine.get('torch')}, OMP_WAIT_POLICY "
            f"{machine.get('omp_wait_policy')}, load average before/after {machine.get('load_before')} / "
            f"{machine.get('load_after')}): latency is the median of interleaved runs of every variant, fused "
            "(`model.fuse()`, the deployment path) and unfused, at batch 1 and 8, random weights with calibrated BN; "
            "Δ is against the plain base timed in the same run. Train step: forward + backward + SGD step on a "
            "synthetic batch, interleaved (Δ in images per second). Activations: bytes one training step saves for "
            "backward (autograd saved-tensor hooks; weights, gradients and momentum add 12 bytes per parameter).",
            "",
        ]
    else:
        lines += ["CPU latency not measured yet: run the study again with `--parts measure` on the CPU to report.", ""]
    lines += [
        "| variant | model | params (M) | MMACs (Δ) | b1 fused ms (Δ) | b8 fused ms (Δ) | b1 unfused ms | b8 unfused ms "
        "| train step img/s (Δ) | activations MiB | seeds | top-1 % | Δ top-1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        top1 = _f(r["top1_mean"], ".2f") + (f" ± {r['top1_std']:.2f}" if r["top1_std"] is not None else "")
        lines.append(
            f"| {r['variant']} | {r['model']}{'[' + r['overrides'] + ']' if r['overrides'] else ''} "
            f"| {_f(r['params'] and r['params'] / 1e6, '.3f')} "
            f"| {_f(r['macs'] and r['macs'] / 1e6, '.1f')}{_delta(r['macs_vs_plain_pct'])} "
            f"| {_f(r['b1_fused_ms'], '.2f')}{_delta(r['b1_fused_vs_plain_pct'])} "
            f"| {_f(r['b8_fused_ms'], '.2f')}{_delta(r['b8_fused_vs_plain_pct'])} "
            f"| {_f(r['b1_unfused_ms'], '.2f')} | {_f(r['b8_unfused_ms'], '.2f')} "
            f"| {_f(r['train_step_img_s'], '.0f')}{_delta(r['train_step_vs_plain_pct'])} "
            f"| {_f(r['activations_mib'], '.1f')} | {r['seeds']} | {top1} "
            f"| {_f(r['top1_vs_plain'], '+.2f') if r is not rows[0] else ''} |"
        )
    devices = sorted({r["run_device"] for r in rows if r["run_device"]})
    run_speed = "; ".join(f"{r['variant']}: {r['run_img_s']:.0f}" for r in rows if r["run_img_s"])
    cuda = "; ".join(f"{r['variant']}: {r['peak_cuda_mib']:.0f}" for r in rows if r["peak_cuda_mib"])
    lines += [
        "",
        f"Trained on: {', '.join(devices) or 'nothing yet'}. Per-run top-1: "
        + "; ".join(f"{r['variant']}: {r['top1_runs'] or '–'}" for r in rows)
        + ".",
        "",
        f"Training runs' img/s (data loading included; depends on what else ran beside them): {run_speed or '–'}."
        + (f" Peak CUDA memory of the runs (MiB, batch {rec['batch']}): {cuda}." if cuda else ""),
        "",
        "![accuracy vs MACs](acc_vs_macs.png) ![accuracy vs latency](acc_vs_latency.png)",
        "",
        "Commands:",
        "",
        "```",
        *info.get("commands", []),
        "```",
        "",
    ]
    return "\n".join(lines)


def plot(d: Path, rows: list[dict]) -> list[Path]:
    from cspnet.engine.plots import plt, save_figure

    paths = []
    for name, key, xlabel in (
        ("acc_vs_macs", "macs", "MMACs (forward, batch 1)"),
        ("acc_vs_latency", f"{PLOT_LATENCY}_ms", "CPU latency, batch 1, fused (ms)"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4.2), dpi=100)
        pts = [r for r in rows if r[key] is not None and r["top1_mean"] is not None]
        for i, r in enumerate(pts):
            x = r[key] / 1e6 if key == "macs" else r[key]
            ax.errorbar(
                x,
                r["top1_mean"],
                yerr=r["top1_std"] if r["top1_std"] is not None else None,
                fmt="s" if r is rows[0] else "o",
                capsize=3,
                color="k" if r is rows[0] else None,
            )
            dy = (4, -11, 12)[i % 3]  # neighbours at similar MACs and accuracy: labels at three heights
            ax.annotate(r["variant"], (x, r["top1_mean"]), textcoords="offset points", xytext=(4, dy), fontsize=8)
        if not pts:
            what = "CPU latency (--parts measure)" if key != "macs" else "accuracy (--parts train)"
            ax.text(0.5, 0.5, f"nothing to plot yet: no {what}", ha="center", va="center", transform=ax.transAxes)
        seeds = max((r["seeds"] for r in rows), default=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test top-1 (%)" + (f", mean ± std over {seeds} seeds" if seeds > 1 else ""))
        ax.grid(alpha=0.3)
        paths.append(save_figure(fig, d / f"{name}.png"))
    return paths
