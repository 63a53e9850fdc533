"""The `cspnet` command. Each feature adds its own sub-commands through `add_parser(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from cspnet.errors import CspnetError

# modules that contribute sub-commands; each defines add_parser(subparsers)
COMMAND_MODULES = (
    "cspnet.cli",
    "cspnet.bench.cli",
    "cspnet.deploy.cli",
    "cspnet.interop.darknet.cli",
    "cspnet.engine.cli",
)


def _cmd_models(args: argparse.Namespace) -> int:
    from cspnet.bench.measure import count_macs, count_params
    from cspnet.models import create_model, list_models, model_info

    rows = []
    for name in list_models(args.pattern):
        info = model_info(name)
        if args.measure:
            m = create_model(name)
            params, gmacs = count_params(m) / 1e6, count_macs(m, info.img_size) / 1e9
        else:
            params, gmacs = info.params_m, info.gmacs
        rows.append(
            dict(
                name=name,
                params_m=params,
                gmacs=gmacs,
                img=info.img_size,
                twin=info.twin,
                csp=info.is_csp,
                timm=info.timm_name,
                paper=info.paper,
            )
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<18} {'params (M)':>10} {'GMACs':>7} {'img':>5}  {'twin':<18} timm")
    for r in rows:
        p = f"{r['params_m']:.2f}" if r["params_m"] else "-"
        g = f"{r['gmacs']:.2f}" if r["gmacs"] else "-"
        print(f"{r['name']:<18} {p:>10} {g:>7} {r['img']:>5}  {r['twin'] or '-':<18} {r['timm'] or '-'}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from cspnet.bench.compare import compare, format_table

    result = compare(
        [args.a, args.b], img=args.img, batch=args.batch, runs=args.runs, threads=args.threads, fuse=args.fuse
    )
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo (name, params, GMACs, twin)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'csp*'")
    p.add_argument("--measure", action="store_true", help="count params and MACs now instead of the registry")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("compare", help="params, MACs and interleaved latency of two models")
    p.add_argument("a", help="first model, e.g. resnet50")
    p.add_argument("b", help="second model, e.g. cspresnet50")
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=20, help="timed runs per model (after warm-up)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--fuse", action="store_true", help="time the deployment path: model.fuse() (BN folded)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=_cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cspnet", description="Cross Stage Partial Networks, measured.")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except CspnetError as e:
        print(f"cspnet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cspnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
