"""CSP model vs its plain twin on CIFAR-10: identical recipe and budget, measured side by side.

Each model trains in its own `cspnet classify train` process (so peak memory is its own), then this script
writes a markdown table and a plot. Default: a CPU budget (about half an hour for both on 2 cores).

    python benchmarks/classify_cifar10.py                       # CPU budget
    python benchmarks/classify_cifar10.py --epochs 30 --subset 0 --small-input --batch 128 --workers 8   # a GPU
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "cifar10.zip"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs=2, default=["cspresnet10", "resnet10"], metavar=("CSP", "PLAIN"))
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--img", type=int, default=32)
    p.add_argument("--small-input", action="store_true", help="stem without early downsampling (costs ~14x MACs)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--subset", type=int, default=10000, help="training images (0: all 50,000)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/bench_cifar10", help="where the two training runs go")
    p.add_argument("--reuse", action="store_true", help="take finished runs from OUT.json; remeasure speed, rewrite")
    p.add_argument("--speed-runs", type=int, default=10, help="interleaved timed train steps per model")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the speed step (default: torch's)")
    p.add_argument("--out", default=str(REPO / "docs" / "results" / "classify_cifar10"), help="writes OUT.md, OUT.png")
    return p.parse_args()


def train_cmd(a: argparse.Namespace, model: str) -> list[str]:
    cmd = [sys.executable, "-m", "cspnet.cli", "classify", "train", "--model", model, "--data", a.data]
    cmd += ["--img", str(a.img), "--epochs", str(a.epochs), "--batch", str(a.batch), "--lr", str(a.lr)]
    cmd += ["--weight-decay", str(a.weight_decay), "--warmup-epochs", str(a.warmup_epochs), "--scale", "0.35"]
    cmd += ["--workers", str(a.workers), "--device", a.device, "--seed", str(a.seed)]
    cmd += ["--project", a.runs, "--name", model, "--exist-ok"]
    if a.subset:
        cmd += ["--subset", str(a.subset)]
    if a.small_input:
        cmd.append("--small-input")
    return cmd


def run_one(a: argparse.Namespace, model: str) -> dict:
    """Train one model in a child process; its peak RSS comes from os.wait4 on that child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(train_cmd(a, model), cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"training {model} failed with exit code {proc.returncode}")
    rows = list(csv.DictReader((Path(a.runs) / model / "results.csv").open()))
    return {
        "model": model,
        "top1": float(rows[-1]["val/top1"]),
        "top5": float(rows[-1]["val/top5"]),
        "img_s": sum(float(r["img_s"]) for r in rows) / len(rows),
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
        "wall_min": (time.perf_counter() - t0) / 60,
        "curve": [float(r["val/top1"]) for r in rows],
    }


def train_speed(a: argparse.Namespace, models: list[str]) -> dict[str, float]:
    """Train-step img/s on a synthetic batch, the models timed in turn (A B A B ...) so machine noise hits both."""
    import statistics

    import torch
    import torch.nn.functional as F

    from cspnet.bench.measure import time_interleaved
    from cspnet.models import create_model

    device = torch.device("cuda" if a.device != "cpu" and torch.cuda.is_available() else "cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    a.threads = torch.get_num_threads()
    x = torch.randn(a.batch, 3, a.img, a.img, device=device)
    y = torch.randint(0, 10, (a.batch,), device=device)
    steps = {}
    for name in models:
        net = create_model(name, num_classes=10, **({"small_input": True} if a.small_input else {})).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def step(net=net, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()

        steps[name] = step
    times = time_interleaved(steps, runs=a.speed_runs, warmup=2)
    return {name: a.batch / statistics.median(t) for name, t in times.items()}


def machine(device: str) -> str:
    import torch

    if torch.cuda.is_available() and device != "cpu":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"


def write(a: argparse.Namespace, results: list[dict], commands: list[str]) -> None:
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    images = (a.subset or 50000) * a.epochs
    lines = [
        "# CIFAR-10: CSP model vs plain twin, same recipe and budget",
        "",
        f"Machine: {machine(a.device)}. Recipe: {a.epochs} epochs on {a.subset or 50000:,} training images "
        f"({images:,} seen), batch {a.batch}, SGD nesterov lr {a.lr} (warm-up {a.warmup_epochs} epoch, cosine), "
        f"weight decay {a.weight_decay}, random resized crop (scale 0.35-1) + flip, EMA weights evaluated, "
        f"{a.img}x{a.img} input{', small-input stem' if a.small_input else ' (standard stem, stride 4)'}, seed {a.seed}, "
        f"{a.workers} data-loader worker(s), torch's default threads.",
        "Top-1/top-5 on all 10,000 test images after the last epoch. MACs: torch.utils.flop_counter at "
        f"{a.img}x{a.img}, batch 1, 10 classes. Train img/s (step): forward+backward+SGD step on a synthetic batch "
        f"of {a.batch}, median of {a.speed_runs} steps on {a.threads} torch thread(s), the two models timed in turn "
        "(A B A B) so machine load hits both alike. Train img/s (run): mean over epochs of the real training phase, data loading included; it "
        "depends on what else the machine ran at the time. Peak memory: max RSS of the training process "
        "(os.wait4 ru_maxrss; data-loader workers are separate processes).",
        "",
        "| model | params (M) | MMACs | test top-1 (%) | test top-5 (%) | train img/s (step) | train img/s (run) "
        "| peak RSS (MiB) | wall (min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['params_m']:.3f} | {r['mmacs']:.1f} | {r['top1']:.2f} | {r['top5']:.2f} | "
            f"{r['step_img_s']:.0f} | {r['img_s']:.0f} | {r['peak_rss_mib']:.0f} | {r['wall_min']:.1f} |"
        )
    c, p = results
    lines += [
        "",
        f"{c['model']} vs {p['model']}: {100 * (1 - c['mmacs'] / p['mmacs']):.0f}% fewer MACs, "
        f"{100 * (1 - c['params_m'] / p['params_m']):.0f}% fewer params, top-1 {c['top1'] - p['top1']:+.2f} points. "
        "One seed per model; run-to-run spread was not measured.",
        "",
        "Command (from the repository root"
        + ("; the --reuse line remeasured speed on the finished runs):" if len(commands) > 1 else "):"),
        "",
        "```",
        *commands,
        "```",
        "",
        f"![test top-1 per epoch]({out.name}.png)",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"commands": commands, "results": results}, indent=2))

    from cspnet.engine.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for r in results:
        ax.plot(range(1, len(r["curve"]) + 1), r["curve"], marker="o", label=f"{r['model']} ({r['mmacs']:.1f} MMACs)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("CIFAR-10, same recipe and budget")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


def main() -> None:
    from cspnet.bench.measure import count_macs, count_params
    from cspnet.models import create_model

    a = parse()
    if not Path(a.data).is_file():
        sys.exit(f"{a.data} not found; pass --data PATH/TO/cifar10.zip")
    command = ("python benchmarks/classify_cifar10.py " + shlex.join(sys.argv[1:])).strip()
    if a.reuse:
        saved = json.loads(Path(a.out).with_suffix(".json").read_text())
        results = [next(r for r in saved["results"] if r["model"] == m) for m in a.models]
        commands = [*saved["commands"], command]
    else:
        results, commands = [run_one(a, m) for m in a.models], [command]
    speed = train_speed(a, a.models)
    for r in results:
        net = create_model(r["model"], num_classes=10, **({"small_input": True} if a.small_input else {}))
        r.update(params_m=count_params(net) / 1e6, mmacs=count_macs(net, a.img) / 1e6, step_img_s=speed[r["model"]])
    write(a, results, commands)


if __name__ == "__main__":
    main()
