"""Why does yolov4-s (CSP) train slower than yolov4-darknet53-s? Measurements at initialisation, no training.

For each twin, width (the raccoon run's 0.125 and the default 0.25) and zero-gamma setting (the library's default,
the last BN of every residual block at 0, or all BN weights at 1), on one batch of real raccoon images:

- depth: conv layers on every input -> output path, walked on the model's own forward by a tensor subclass that
  counts conv2d calls along each path (add and concat merge paths). "live" drops the operands of an add that are
  exactly zero, i.e. the residual branches that zero-gamma switches off at init; the live minimum is the depth of
  the identity path;
- per backbone stage, neck and head output: activation std (train mode, batch statistics), mean cosine similarity
  between images of the centred outputs (1 = every image gives the same map), and the RMS of the loss gradient
  there;
- per parameter group (stem, stages, neck, head): gradient norm of the detection loss (the engine's DetectTask
  loss, auto-anchors as in the raccoon run), weight norm, and the cosine between the gradients of two disjoint
  half batches (how much of the gradient is signal rather than batch noise).

Three init seeds per setting (mean and std). Runs in a couple of minutes on one CPU thread:

    python benchmarks/detect_init.py --data ../shared/data/raccoon --out docs/results/evidence/detect_init.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from cspnet.data.detection import open_detection
from cspnet.data.detection_aug import DetectionDataset, detection_collate
from cspnet.engine.tasks.detect import DetectCfg, DetectTask
from cspnet.models import create_model

PAIR = ("yolov4-s", "yolov4-darknet53-s")
SPLITS = 4  # gradient coherence: mean pairwise cosine of the gradients of 4 disjoint quarter batches
TRAIN_BS = 8  # the raccoon run's batch size (BN statistics in train mode)
ADDS = {"add", "add_", "__add__", "__radd__", "__iadd__"}


class Paths(torch.Tensor):
    """A tensor that carries, per output, how many input -> here paths cross how many conv layers."""

    live_only = True  # drop exactly-zero operands of an add (residual branches switched off by zero-gamma)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
            ins = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, Paths)]
            if not ins:
                return out
            name = getattr(func, "__name__", "")
            if name in ADDS and cls.live_only:
                nonzero = [a for a in ins if bool(a.any())]
                ins = nonzero or ins
            paths: Counter = Counter()
            for a in ins:
                paths.update(a.paths)
            if name == "conv2d":
                paths = Counter({d + 1: n for d, n in paths.items()})

            def wrap(o):
                if isinstance(o, torch.Tensor):
                    o = o.as_subclass(cls)
                    o.paths = paths
                return o

            return tree_map(wrap, out)


def points(model: nn.Module) -> dict[str, nn.Module]:
    """The measured outputs: stem, each backbone stage, the neck (one per level) and the head (one per level)."""
    out = {"stem": model.backbone.stem}
    out.update({f"stage{i}": s for i, s in enumerate(model.backbone.stages)})
    out.update(neck=model.neck, head=model.head)
    return out


def groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    return {name: list(m.parameters()) for name, m in points(model).items()}


def capture(model: nn.Module) -> tuple[dict[str, list[torch.Tensor]], list]:
    """Forward hooks storing each point's output(s) as a list (neck and head: one per level)."""
    seen: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        def fn(_m, _i, o):
            seen[name] = list(o) if isinstance(o, (list, tuple)) else [o]

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in points(model).items()]
    return seen, handles


def depth(model: nn.Module, images: torch.Tensor, live: bool) -> dict[str, dict]:
    """Conv layers per path, at every point: min / max over all paths, and the number of paths."""
    Paths.live_only = live
    seen, handles = capture(model)
    x = images.clone().as_subclass(Paths)
    x.paths = Counter({0: 1})
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    res = {}
    for name, outs in seen.items():
        for lvl, o in enumerate(outs):
            key = name if len(outs) == 1 else f"{name}{lvl}"
            res[key] = {"min": min(o.paths), "max": max(o.paths), "paths": sum(o.paths.values())}
    return res


def disable_zero_gamma(model: nn.Module) -> int:
    """Undo zero-gamma: set to 1 the BN weights that a block's zero_init_last zeroed. Returns how many BNs."""
    n = 0
    for m in model.modules():
        if hasattr(m, "zero_init_last"):
            for bn in m.modules():
                if isinstance(bn, nn.BatchNorm2d) and not bn.weight.any():
                    nn.init.ones_(bn.weight)
                    n += 1
    return n


def zero_gamma_count(model: nn.Module) -> int:
    return sum(
        1
        for m in model.modules()
        if hasattr(m, "zero_init_last")
        for bn in m.modules()
        if isinstance(bn, nn.BatchNorm2d) and not bn.weight.any()
    )


def mean_cos(rows: torch.Tensor) -> float:
    """Mean pairwise cosine similarity between the rows (flattened per image or per gradient)."""
    f = rows.detach().flatten(1).double()
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-30)
    c = f @ f.T
    n = len(f)
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))


@torch.no_grad()
def bn_gap(model: nn.Module, all_images: torch.Tensor, batch: torch.Tensor, train_bs: int) -> dict[str, float]:
    """Train/eval gap of the head outputs: eval mode with running stats of all training images (cumulative)
    against train mode on batches of the training batch size; relative RMS difference per level."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i in range(0, len(all_images), 32):
        model(all_images[i : i + 32])
    train_out = [model(batch[i : i + train_bs]) for i in range(0, len(batch), train_bs)]
    train_out = [torch.cat(lv) for lv in zip(*train_out)]
    model.eval()
    eval_out = model.forward_raw(batch)
    model.train()
    for m in bns:
        m.momentum = 0.1
    return {
        f"head{i}": float((e - t).pow(2).mean().sqrt() / t.pow(2).mean().sqrt())
        for i, (e, t) in enumerate(zip(eval_out, train_out))
    }


def step(model, task, batch) -> tuple[dict, dict, dict[str, float]]:
    """One forward/backward in train mode: per point stats, per group grads, loss parts."""
    model.zero_grad(set_to_none=True)
    seen, handles = capture(model)
    preds = task.forward(model, batch, train=True)
    for outs in seen.values():
        for o in outs:
            o.retain_grad()
    loss, parts = task.loss(preds, batch)
    loss.backward()
    for h in handles:
        h.remove()
    acts = {}
    for name, outs in seen.items():
        for lvl, o in enumerate(outs):
            key = name if len(outs) == 1 else f"{name}{lvl}"
            g = o.grad
            acts[key] = {
                "act_std": float(o.detach().float().std()),
                "img_cos": mean_cos(o),  # uncentred: how alike the images' maps are
                "grad_rms": float(g.pow(2).mean().sqrt()) if g is not None else 0.0,
                "chs": int(o.shape[1]) if name != "head" else int(o.shape[-1] * o.shape[1]),
            }
    grads = {}
    for name, params in groups(model).items():
        gs = [p.grad.flatten() for p in params if p.grad is not None]
        grads[name] = torch.cat(gs) if gs else torch.zeros(1)
    return acts, grads, {k: float(v.detach()) for k, v in {"loss": loss, **parts}.items()}


def build(task: DetectTask, name: str, width: float | None, seed: int) -> nn.Module:
    """The detector as `cspnet detect train` builds it (k-means anchors when there is data), from one seed."""
    task.cfg.model, task.cfg.width = name, width
    torch.manual_seed(seed)
    if task.cfg.data:
        return task.build_model()
    return create_model(name, num_classes=1, **({"width": width} if width else {}))


def measure(
    task: DetectTask, name: str, width: float | None, zero_gamma: bool, seed: int, batch: dict, all_images
) -> dict:
    model = build(task, name, width, seed)
    n_zero = zero_gamma_count(model) if zero_gamma else -disable_zero_gamma(model)
    model.train()
    acts, grads, loss = step(model, task, batch)
    n, q = len(batch["images"]), len(batch["images"]) // SPLITS
    parts = []
    for lo in range(0, n, q):
        t = batch["targets"]
        sub = t[(t[:, 0] >= lo) & (t[:, 0] < lo + q)].clone()
        sub[:, 0] -= lo
        parts.append(step(model, task, {"images": batch["images"][lo : lo + q], "targets": sub})[1])
    per_group = {}
    for g, full in grads.items():
        params = groups(model)[g]
        w = torch.cat([p.detach().flatten() for p in params])
        convs = [p for p in params if p.ndim == 4]
        conv = torch.cat([p.detach().flatten() for p in convs])
        conv_g = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in convs])
        per_group[g] = {
            "params": int(w.numel()),
            "grad_norm": float(full.norm()),
            "weight_norm": float(w.norm()),
            "grad_per_weight": float(full.norm() / w.norm().clamp_min(1e-12)),
            "conv_weight_rms": float(conv.pow(2).mean().sqrt()),
            # first-step change of the conv weights relative to their norm, per unit lr: BN makes each conv
            # scale-invariant, so this angle is the effective step. SGD: |g| / |w|. Adam's first step is
            # lr * sign(g) per element: sqrt(#nonzero g) / |w| (zero-gamma blocks' convs get no gradient yet).
            "sgd_rel_step": float(conv_g.norm() / conv.norm()),
            "adam_rel_step": float((conv_g != 0).sum().sqrt() / conv.norm()),
            "grad_coherence": mean_cos(torch.stack([p[g] for p in parts])),
        }
    gap = bn_gap(model, all_images, batch["images"], TRAIN_BS)
    return {"zero_gamma_bns": n_zero, "points": acts, "groups": per_group, "loss": loss, "bn_train_eval_gap": gap}


def summarise(runs: list[dict]) -> dict:
    """Mean and std over seeds of every number in the runs (same nesting)."""

    def walk(items):
        first = items[0]
        if isinstance(first, dict):
            return {k: walk([it[k] for it in items]) for k in first}
        vals = [float(v) for v in items]
        if len(set(vals)) == 1:
            return vals[0]
        return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals)}

    return walk(runs)


def mean_of(v) -> float:
    return v["mean"] if isinstance(v, dict) else v


def load_batch(data: str, img: int, n: int) -> tuple[dict, torch.Tensor, str]:
    """n training images letterboxed to img (no augmentation) with their boxes, and all training images (for BN
    statistics); random normal images when there is no data."""
    if not Path(data).exists():  # the structure is the same: random images and one centred box each
        print(f"no data at {data}; using random normal images")
        images = torch.randn(n, 3, img, img)
        t = torch.tensor([[i, 0, img / 4, img / 4, 3 * img / 4, 3 * img / 4] for i in range(n)], dtype=torch.float)
        return {"images": images, "targets": t}, torch.randn(8 * n, 3, img, img), "random normal images"
    src = open_detection(data, "train")
    src.records = sorted(src.records, key=lambda r: r.path)
    ds = DetectionDataset(src, img, train=False)
    every = detection_collate([ds[i] for i in range(len(ds))])
    images = every["images"].float() / 255
    t = every["targets"]
    batch = {"images": images[:n], "targets": t[t[:, 0] < n]}
    return batch, images, f"{data}: the first {n} of {len(images)} train images (sorted by path)"


def tables(result: dict) -> str:
    """The markdown tables of detect_init.md, from the JSON."""
    csp, twin = PAIR
    lines = [
        "| output | CSP: identity path | CSP: deepest live | CSP: deepest | twin: identity path | "
        "twin: deepest live | twin: deepest |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    d = next(iter(result["depth"].values()))
    for k in d[csp]:
        c, t = d[csp][k], d[twin][k]
        lines.append(
            f"| {k} | {c['identity_min']} | {c['live_max']} | {c['all_max']} | "
            f"{t['identity_min']} | {t['live_max']} | {t['all_max']} |"
        )
    for w, per_zg in result["relative"].items():
        for zg, rel in per_zg.items():
            lines += ["", f"**width {w}, {zg}** (CSP / twin, mean of {len(result['setup']['seeds'])} seeds)", ""]
            lines += [
                "| group | grad norm | SGD step / weight | Adam step / weight | conv weight RMS | "
                "output act std | output grad RMS |",
                "|---|---:|---:|---:|---:|---:|---:|",
            ]
            for g, v in rel["groups"].items():
                pt = rel["points"].get(g) or rel["points"].get(f"{g}0")
                lines.append(
                    f"| {g} | {v['grad_norm']:.2f} | {v['sgd_rel_step']:.2f} | {v['adam_rel_step']:.2f} | "
                    f"{v['conv_weight_rms']:.2f} | {pt['act_std']:.2f} | {pt['grad_rms']:.2f} |"
                )
            gap = rel["bn_train_eval_gap"]
            lines.append("")
            lines.append(
                "BN train/eval gap of the head outputs (CSP vs twin): "
                + ", ".join(f"{k} {v['csp']:.3f} vs {v['twin']:.3f}" for k, v in gap.items())
                + f"; loss {rel['loss']['loss']['csp']:.3f} vs {rel['loss']['loss']['twin']:.3f}"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/raccoon")
    p.add_argument("--img", type=int, default=160)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--widths", default="0.125,default", help="'default' = the model's own width (0.25)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="docs/results/evidence/detect_init.json")
    p.add_argument("--tables", action="store_true", help="only print the markdown tables of an existing --out")
    args = p.parse_args()
    if args.tables:
        print(tables(json.loads(Path(args.out).read_text())))
        return
    torch.set_num_threads(args.threads)
    t0 = time.time()
    batch, all_images, source = load_batch(args.data, args.img, args.batch)
    data = args.data if not source.startswith("random") else ""
    task = DetectTask(DetectCfg(model=PAIR[0], data=data, img=args.img, auto_anchors=bool(data)))
    widths = [None if w == "default" else float(w) for w in args.widths.split(",")]

    result: dict = {"depth": {}, "init": {}, "relative": {}}
    for w in widths:
        wkey = "default" if w is None else str(w)
        for name in PAIR:
            model = build(task, name, w, 0).train()
            d_live = depth(model, batch["images"][:2], live=True)
            d_all = depth(model, batch["images"][:2], live=False)
            result["depth"].setdefault(wkey, {})[name] = {
                k: {
                    "identity_min": d_live[k]["min"],
                    "live_max": d_live[k]["max"],
                    "all_min": d_all[k]["min"],
                    "all_max": d_all[k]["max"],
                    "paths": d_all[k]["paths"],
                }
                for k in d_all
            }
            for zg in (True, False):
                runs = [measure(task, name, w, zg, s, batch, all_images) for s in range(args.seeds)]
                result["init"].setdefault(wkey, {}).setdefault(f"zero_gamma={zg}", {})[name] = summarise(runs)
            print(f"{name} width {wkey}: done ({time.time() - t0:.0f} s)", flush=True)
        for zg in ("zero_gamma=True", "zero_gamma=False"):
            csp, twin = (result["init"][wkey][zg][n] for n in PAIR)
            rel = {"points": {}, "groups": {}}
            for k in csp["points"]:
                c, t = csp["points"][k], twin["points"][k]
                rel["points"][k] = {
                    "act_std": mean_of(c["act_std"]) / mean_of(t["act_std"]),
                    "grad_rms": mean_of(c["grad_rms"]) / max(mean_of(t["grad_rms"]), 1e-30),
                    "img_cos_csp": mean_of(c["img_cos"]),
                    "img_cos_twin": mean_of(t["img_cos"]),
                }
            for g in csp["groups"]:
                c, t = csp["groups"][g], twin["groups"][g]
                rel["groups"][g] = {
                    "grad_norm": mean_of(c["grad_norm"]) / max(mean_of(t["grad_norm"]), 1e-30),
                    "grad_per_weight": mean_of(c["grad_per_weight"]) / max(mean_of(t["grad_per_weight"]), 1e-30),
                    "sgd_rel_step": mean_of(c["sgd_rel_step"]) / max(mean_of(t["sgd_rel_step"]), 1e-30),
                    "adam_rel_step": mean_of(c["adam_rel_step"]) / max(mean_of(t["adam_rel_step"]), 1e-30),
                    "conv_weight_rms": mean_of(c["conv_weight_rms"]) / mean_of(t["conv_weight_rms"]),
                    "grad_coherence_csp": mean_of(c["grad_coherence"]),
                    "grad_coherence_twin": mean_of(t["grad_coherence"]),
                }
            rel["bn_train_eval_gap"] = {
                k: {"csp": mean_of(v), "twin": mean_of(twin["bn_train_eval_gap"][k])}
                for k, v in csp["bn_train_eval_gap"].items()
            }
            rel["loss"] = {k: {"csp": mean_of(v), "twin": mean_of(twin["loss"][k])} for k, v in csp["loss"].items()}
            result["relative"].setdefault(wkey, {})[zg] = rel

    result["setup"] = {
        "command": "python benchmarks/detect_init.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "tables"),
        "images": source,
        "img": args.img,
        "batch": args.batch,
        "seeds": list(range(args.seeds)),
        "anchors": "k-means on the training boxes (--auto-anchors, as the raccoon run)" if data else "default",
        "loss": "DetectTask.loss with DetectCfg defaults (YOLOv4 loss: CIoU, BCE obj/cls, iou_thresh 0.213)",
        "mode": "train mode (BN batch statistics), no optimizer step",
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {args.threads} thread(s)",
        "wall_s": round(time.time() - t0, 1),
        "notes": "mean/std over init seeds; a plain number is the same for every seed. relative = CSP / twin "
        "of the seed means. grad_coherence: mean pairwise cosine between the gradients of 4 disjoint quarter batches (4 images each); "
        "bn_train_eval_gap: relative RMS difference of the head outputs, eval mode (running stats of all train images) "
        "against train mode (batch statistics, batches of 8 as in the raccoon run).",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} in {time.time() - t0:.0f} s")
    print(tables(result))


if __name__ == "__main__":
    main()
