"""CPU measurements of a study's variants through the bench harness: one interleaved run per batch size."""

from __future__ import annotations

import os
import time

import torch

from cspnet.ablate.budgets import Budget
from cspnet.ablate.grid import GridVariant
from cspnet.bench.harness import BenchConfig, Variant, build_model, machine_info, run_group


def bench_variant(v: GridVariant, budget: Budget, fused: bool) -> Variant:
    overrides = {**v.kwargs(), **({"small_input": True} if budget.small_input else {})}
    return Variant(v.model, "cspnet", ("fuse",) if fused else (), tuple(sorted(overrides.items())))


def measure_variants(variants: list[GridVariant], budget: Budget, num_classes: int) -> dict[str, dict]:
    """Per variant (by slug): params, MACs, latency at each batch fused and unfused, a timed training step and its
    peak memory, each with its ratio to variants[0] (the plain base) from the same interleaved run. Always on the CPU."""
    if budget.threads:
        torch.set_num_threads(budget.threads)
    ref = variants[0]
    out: dict[str, dict] = {v.slug: {"label": v.label, "latency": {}, "ratios": {}} for v in variants}
    common = dict(img_size=budget.img, runs=budget.latency_runs, num_classes=num_classes, warmup=budget.latency_warmup)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    for batch in budget.latency_batches:
        bvs = {(v.slug, f): bench_variant(v, budget, f) for v in variants for f in (False, True)}
        cfg = BenchConfig(list(bvs.values()), batches=(batch,), memory=False, **common)
        rows = run_group(cfg, batch, train=False)["rows"]
        for (slug, fused), bv in bvs.items():
            r = rows[bv.label]
            key = f"b{batch}_{'fused' if fused else 'unfused'}"
            out[slug].update(params=r["params"], macs=r["macs"])
            out[slug]["latency"][key] = {k: r[k] for k in ("median_ms", "p25_ms", "p75_ms")}
            out[slug]["ratios"][key] = r["median_ms"] / rows[bvs[(ref.slug, fused)].label]["median_ms"]
    # training step: forward + backward + SGD step on a synthetic batch, interleaved; and what the step keeps alive
    bvs = {v.slug: bench_variant(v, budget, False) for v in variants}
    cfg = BenchConfig(list(bvs.values()), batches=(budget.train_batch,), memory=False, **common)
    rows = run_group(cfg, budget.train_batch, train=True)["rows"]
    for slug, bv in bvs.items():
        r = rows[bv.label]
        ref_r = rows[bvs[ref.slug].label]
        out[slug]["train_step"] = {"batch": budget.train_batch, "images_per_s": r["images_per_s"], **_ms(r)}
        out[slug]["ratios"]["train_step"] = r["median_ms"] / ref_r["median_ms"]
        out[slug]["activations_mib"] = saved_activation_bytes(build_model(bv, num_classes), budget, num_classes) / 2**20
    for slug in out:
        out[slug]["macs_ratio"] = out[slug]["macs"] / out[ref.slug]["macs"]
        out[slug]["params_ratio"] = out[slug]["params"] / out[ref.slug]["params"]
        out[slug]["reference"] = ref.label
        out[slug]["settings"] = {
            "img": budget.img,
            "batches": list(budget.latency_batches),
            "runs": budget.latency_runs,
            "num_classes": num_classes,
            "interleaved_with": [v.label for v in variants],
        }
        out[slug]["machine"] = {
            **machine_info(torch.get_num_threads()),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "seconds": round(time.perf_counter() - t0, 1),
        }
    return out


def saved_activation_bytes(model: torch.nn.Module, budget: Budget, num_classes: int) -> int:
    """Bytes of the tensors one training step saves for backward (unique storages, weights excluded): the part of
    training memory that grows with the batch. Counted by autograd's saved-tensor hooks, so it is the same on any
    machine; weights, gradients and momentum add 3 x params x 4 bytes on top."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in weights:
            saved[st.data_ptr()] = st.nbytes()
        return t

    model.train()
    x = torch.randn(budget.train_batch, getattr(model, "in_chans", 3), budget.img, budget.img)
    y = torch.randint(0, num_classes, (budget.train_batch,))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return sum(saved.values())


def _ms(r: dict) -> dict:
    return {k: r[k] for k in ("median_ms", "p25_ms", "p75_ms")}
