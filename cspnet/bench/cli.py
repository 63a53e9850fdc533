"""`cspnet bench` sub-command."""

from __future__ import annotations

import argparse
import json

from cspnet.cli_args import add_output, existing_dir, image_size, nonneg_int, positive_int


def _cmd_runtimes(args: argparse.Namespace) -> int:
    from cspnet.bench.report import runtimes_markdown, write_runtimes
    from cspnet.bench.runtimes import parse_runtimes, run_runtimes
    from cspnet.errors import ConfigError

    variant_flags = {"--twins": args.twins, "--compare-timm": args.compare_timm, "--timm-best": args.timm_best}
    variant_flags.update({"--fuse": args.fuse, "--channels-last": args.channels_last, "--compile": args.compile})
    variant_flags.update({"--train": args.train, "--dtype": args.dtype != "float32"})
    used = [k for k, on in variant_flags.items() if on]
    if used:
        raise ConfigError(
            f"{', '.join(used)} select variants of the model matrix; with --runtimes name the paths instead, e.g. "
            "--runtimes eager,fused,compile,openvino:bf16"
        )
    result = run_runtimes(
        args.models,
        parse_runtimes(args.runtimes),
        tuple(args.batch),
        args.img,
        args.threads,
        args.runs,
        args.warmup,
        args.darknet,
    )
    if args.out:
        paths = write_runtimes(result, args.out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    print(json.dumps(result, indent=2) if args.json else runtimes_markdown(result))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from cspnet.bench.harness import BenchConfig, expand_variants, run_bench
    from cspnet.bench.report import markdown, write_all

    if args.runtimes:
        return _cmd_runtimes(args)

    opts = tuple(o for o, on in (("fuse", args.fuse), ("cl", args.channels_last), ("compile", args.compile)) if on)
    variants = expand_variants(
        args.models, twins=args.twins, compare_timm=args.compare_timm, opts=opts, timm_best=args.timm_best
    )
    cfg = BenchConfig(
        variants=variants,
        img_size=args.img or 224,
        batches=tuple(args.batch),
        threads=args.threads,
        dtype=args.dtype,
        runs=args.runs,
        warmup=args.warmup,
        train=args.train,
        memory=not args.no_memory,
    )
    result = run_bench(cfg)
    if args.out:
        paths = write_all(result, args.out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark models interleaved: latency, img/s, GFLOP/s vs matmul peak, memory",
        epilog="On a machine shared with other jobs, run with OMP_WAIT_POLICY=PASSIVE: spin-waiting OpenMP threads "
        "make eager PyTorch latencies swing by an order of magnitude when a core is taken.",
    )
    p.add_argument(
        "models",
        nargs="+",
        help="model variants: NAME, timm:NAME, NAME@fuse+cl+compile, NAME@ort (options: fuse, cl, compile, ort); "
        "with --runtimes: NAME, timm:NAME or a training checkpoint",
    )
    p.add_argument(
        "--runtimes",
        default=None,
        help="measure each model on these paths, e.g. eager,fused,compile,torchscript,onnxruntime,openvino,opencv; "
        "RUNTIME:PRECISION for fp16/bf16/int8 (openvino:int8, onnxruntime:int8, openvino:bf16, ...)",
    )
    p.add_argument(
        "--darknet",
        type=existing_dir,
        default=None,
        help="--runtimes: folder of darknet .cfg files; a zoo detector NAME with NAME.cfg there is built from it "
        "(random .weights) and OpenCV runs it through its darknet importer",
    )
    p.add_argument("--img", type=image_size, default=None, help="image size (default 224; --runtimes: the model's)")
    p.add_argument("--batch", type=positive_int, nargs="+", default=[1], help="batch sizes, e.g. --batch 1 8")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    p.add_argument("--runs", type=positive_int, default=20, help="timed runs per variant (interleaved)")
    p.add_argument("--warmup", type=nonneg_int, default=3)
    p.add_argument("--twins", action="store_true", help="add each model's plain (or CSP) twin")
    p.add_argument("--compare-timm", action="store_true", help="add timm's implementation of each model")
    p.add_argument(
        "--timm-best",
        action="store_true",
        help="add timm's model eager, under torch.compile and in ONNX Runtime (a timm user's best paths)",
    )
    p.add_argument("--fuse", action="store_true", help="fold BN into convs (model.fuse()) for every cspnet model")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for every model")
    p.add_argument("--compile", action="store_true", help="torch.compile every cspnet model (slow to start)")
    p.add_argument("--train", action="store_true", help="also time training steps (forward, backward, SGD step)")
    p.add_argument("--no-memory", action="store_true", help="skip the profiler's peak-memory step")
    add_output(
        p, "--out", kind="dir", default=None, help="new folder for bench.json, bench.md, bench.png (--force: reuse)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    p.set_defaults(func=_cmd_bench)
