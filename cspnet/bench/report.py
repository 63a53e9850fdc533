"""Bench results as JSON, a markdown table and a PNG chart (latency against MACs, CSP/plain pairs joined)."""

from __future__ import annotations

import json
from pathlib import Path

from cspnet.bench.measure import format_ratio


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown(result: dict) -> str:
    """One table per (mode, batch) group, one row per variant, plus the machine."""
    m, c = result["machine"], result["config"]
    lines = [
        f"Machine: {m['cpu']}, {m['threads']} threads, ISA {'/'.join(m['isa']) or '?'}, "
        f"OMP_WAIT_POLICY {m.get('omp_wait_policy', '?')}; torch {m['torch']}"
        + (f", timm {m['timm']}" if "timm" in m else "")
        + (f", onnxruntime {m['onnxruntime']}" if "onnxruntime" in m else "")
        + ".",
        f"Input {c['img_size']}x{c['img_size']}, {c['dtype']}, {c['runs']} interleaved runs per variant "
        f"(after {c['warmup']} warm-up), median latency; spread = p25-p75.",
    ]
    lines += [f"**Warning:** {w}" for w in result.get("warnings", [])]
    for g in result["groups"]:
        mm = g["matmul"]
        lines += [
            "",
            f"**{g['mode']}, batch {g['batch']}** (matmul peak in the same run: {mm['gflops']:.0f} GFLOP/s, "
            f"fp32 {mm['n']}x{mm['n']} torch.mm)",
            "",
            "| variant | params (M) | GMACs | median ms | p25-p75 ms | img/s | GFLOP/s | % of peak | peak mem (MiB) "
            "| vs twin (MACs) | vs timm | vs timm's best |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, r in g["rows"].items():
            twin = "-"
            if "ratio_vs_twin" in r:
                twin = (
                    f"{format_ratio(r['ratio_vs_twin'], r.get('ratio_vs_twin_noise'))} ({r['macs_ratio_vs_twin']:.2f})"
                )
            key = "ratio_vs_timm_same_opts" if "ratio_vs_timm_same_opts" in r else "ratio_vs_timm_eager"
            timm = format_ratio(r[key], r.get(f"{key}_noise")) if key in r else "-"
            best = "-"
            if "ratio_vs_timm_best" in r:
                best = f"{format_ratio(r['ratio_vs_timm_best'], r.get('ratio_vs_timm_best_noise'))} ({r['timm_best']})"
            lines.append(
                f"| {label} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e9:.2f} | {r['median_ms']:.1f} | "
                f"{r['p25_ms']:.1f}-{r['p75_ms']:.1f} | {r['images_per_s']:.1f} | {r['gflops']:.0f} | "
                f"{100 * r['peak_share']:.0f} | {_fmt(r['peak_mem_mb'], '.0f')} | {twin} | {timm} | {best} |"
            )
    return "\n".join(lines) + "\n"


def chart(result: dict, path: str | Path) -> Path:
    """Latency against GMACs, one panel per group, one point per variant, a line per CSP/plain pair."""
    from cspnet.engine.plots import plt, save_figure

    groups = result["groups"]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.5), squeeze=False)
    for ax, g in zip(axes[0], groups):
        rows = g["rows"]
        colors: dict[str, str] = {}
        label_points = len(rows) <= 12  # more points: a legend by kind instead of one label each
        for label, r in rows.items():
            kind = ("timm" if r["source"] == "timm" else "cspnet") + ("@" + "+".join(r["opts"]) if r["opts"] else "")
            new = kind not in colors
            color = colors.setdefault(kind, f"C{len(colors)}")
            marker = "s" if r["source"] == "timm" else "o"
            ax.scatter(
                r["macs"] / 1e9, r["median_ms"], color=color, marker=marker, zorder=3, label=kind if new else None
            )
            if label_points:
                ax.annotate(
                    label, (r["macs"] / 1e9, r["median_ms"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        if not label_points:
            ax.legend(fontsize=7, title="kind (lines join CSP/plain twins)", title_fontsize=7)
        by_key = {(r["name"], r["source"], tuple(r["opts"])): r for r in rows.values()}
        for r in rows.values():
            if "twin" not in r:
                continue
            for src in ("cspnet", "timm"):
                a = by_key.get((r["name"], src, tuple(r["opts"])))
                b = by_key.get((r["twin"], src, tuple(r["opts"])))
                if a and b:
                    ax.plot(
                        [b["macs"] / 1e9, a["macs"] / 1e9],
                        [b["median_ms"], a["median_ms"]],
                        color="gray",
                        ls="-" if src == "cspnet" else "--",
                        lw=1,
                    )
        ax.set_xlabel("GMACs per image")
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"{g['mode']}, batch {g['batch']}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result['machine']['cpu']}, {result['machine']['threads']} threads, {result['config']['dtype']}")
    return save_figure(fig, path, dpi=110)


def write_all(result: dict, out_dir: str | Path, stem: str = "bench") -> dict[str, Path]:
    """bench.json, bench.md and bench.png in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result, indent=2))
    paths["md"].write_text(markdown(result))
    chart(result, paths["png"])
    return paths


def runtimes_markdown(result: dict) -> str:
    """`bench --runtimes`: the machine and its ISA, one table per batch size, the fastest path and its export."""
    m = result["machine"]
    isa = set(m.get("isa", []))
    bf16 = "yes" if isa & {"avx512_bf16", "amx_bf16"} else "no (no AVX-512 BF16 or AMX: bf16 is emulated or refused)"
    vnni = "yes" if isa & {"avx512_vnni", "avx_vnni", "amx_int8"} else "no (int8 runs without VNNI)"
    versions = ", ".join(f"{k} {m[k]}" for k in ("torch", "onnxruntime", "openvino", "cv2") if k in m)
    sizes = ", ".join(f"{k} {v}" for k, v in result["img"].items())
    lines = [
        f"CPU: {m['cpu']}; ISA: {' '.join(sorted(isa)) or '?'}; bf16: {bf16}; int8 VNNI: {vnni}.",
        f"{m['threads']} threads for every runtime; OMP_WAIT_POLICY {m.get('omp_wait_policy', '?')}; {versions}.",
        f"Input size: {sizes}. Median of {result['config']['runs']}+ runs per path, all paths interleaved "
        "round-robin in one process; p25-p75 is the spread; x = ratio of medians (~: too noisy to be a result).",
    ]
    lines += [f"**Warning:** {w}" for w in result.get("warnings", [])]
    for g in result["groups"]:
        lines += [
            "",
            f"**batch {g['batch']}**",
            "",
            "| model | runtime | precision | median ms | p25-p75 ms | img/s | x fastest | x OpenCV | x timm's best fp32 |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in g["rows"].values():
            rel = [format_ratio(r[k], r.get(f"{k}_noise")) if k in r else "-" for k in ("vs_opencv", "vs_timm_best")]
            lines.append(
                f"| {r['model']} | {r['runtime']} | {r['precision']} | {r['median_ms']:.1f} | {r['p25_ms']:.1f}-"
                f"{r['p75_ms']:.1f} | {r['images_per_s']:.1f} | {r['vs_fastest']:.2f} | {rel[0]} | {rel[1]} |"
            )
        if g["fastest"]:
            lines += [
                "",
                f"Fastest at batch {g['batch']}: {g['fastest']} ({g['rows'][g['fastest']]['median_ms']:.1f} ms).",
            ]
        best = g.get("fastest_cspnet")
        if best and best != g["fastest"]:
            lines.append(f"Fastest cspnet path: {best} ({g['rows'][best]['median_ms']:.1f} ms).")
        if best:
            lines.append(f"To deploy it: `{g['rows'][best]['export']}`")
    for k, v in result.get("errors", {}).items():
        lines.append(f"- not measured: {k}: {v}")
    return "\n".join(lines) + "\n"


def write_runtimes(result: dict, out_dir: str | Path, stem: str = "runtimes") -> dict[str, Path]:
    """runtimes.json and runtimes.md in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md"}
    paths["json"].write_text(json.dumps(result, indent=2))
    paths["md"].write_text(runtimes_markdown(result))
    return paths
