"""`cspnet compare A B`: params, MACs and interleaved latency of two models side by side."""

from __future__ import annotations

import torch

from cspnet.bench.harness import BenchConfig, parse_variant, run_group
from cspnet.bench.measure import busy_threads, format_ratio, ratio_noise


def compare(
    names: list[str],
    img: int = 224,
    batch: int = 1,
    runs: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    fuse: bool = False,
) -> dict:
    """Two (or more) models measured by the bench harness in one interleaved run; ratios against the first.

    fuse: time the deployment path (`model.fuse()`: BN folded, oneDNN fused convs) instead of the training graph.
    """
    if threads:
        torch.set_num_threads(threads)
    n_threads, warnings = busy_threads(torch.get_num_threads(), explicit=bool(threads))
    torch.set_num_threads(n_threads)
    variants = [parse_variant(f"{n}@fuse" if fuse else n) for n in names]
    cfg = BenchConfig(variants, img_size=img, batches=(batch,), runs=runs, warmup=warmup, memory=False)
    group = run_group(cfg, batch, train=False)
    measured = group["rows"]
    busy = any(w.startswith("machine busy") for w in warnings)
    warnings += [w for w in group["noise"]["warnings"] if not (busy and w.startswith("1-min load"))]
    rows = {n: measured[v.label] for n, v in zip(names, variants)}
    base = rows[names[0]]
    for r in rows.values():
        r["ratio_vs_first"] = r["median_ms"] / base["median_ms"]
        r["ratio_vs_first_noise"] = ratio_noise(r, base, cfg.max_spread) if r is not base else None
        r["macs_ratio_vs_first"] = r["macs"] / base["macs"]
        r["params_ratio_vs_first"] = r["params"] / base["params"]
    return {
        "img": img,
        "batch": batch,
        "runs": runs,
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "fused": fuse,
        "torch": torch.__version__,
        "warnings": warnings,
        "noise": group["noise"],
        "models": rows,
    }


def format_table(result: dict) -> str:
    names = list(result["models"])
    head = f"{'model':<18} {'params (M)':>10} {'GMACs':>7} {'median ms':>10} {'p25-p75 ms':>14} {'vs ' + names[0]:>18}"
    lines = [
        f"img {result['img']}, batch {result['batch']}, {result.get('noise', {}).get('runs', result['runs'])} "
        "interleaved runs, "
        f"{result['threads']} threads, {'fused' if result.get('fused') else 'unfused'}, torch {result['torch']}",
        head,
        "-" * len(head),
    ]
    for n, r in result["models"].items():
        lines.append(
            f"{n:<18} {r['params'] / 1e6:>10.2f} {r['macs'] / 1e9:>7.2f} {r['median_ms']:>10.1f} "
            f"{r['p25_ms']:>6.1f}-{r['p75_ms']:<7.1f} "
            f"{'latency x' + format_ratio(r['ratio_vs_first'], r.get('ratio_vs_first_noise')):>18}"
        )
    if len(names) == 2:
        a, b = (result["models"][n] for n in names)
        lines.append(
            f"{names[1]} / {names[0]}: params x{b['params_ratio_vs_first']:.2f}, MACs x{b['macs_ratio_vs_first']:.2f}, "
            f"median latency x{format_ratio(b['ratio_vs_first'], b.get('ratio_vs_first_noise'))}"
        )
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)
