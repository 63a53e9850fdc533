"""The `cspnet` command. Each feature adds its own sub-commands through `add_parser(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from typing import NoReturn

from cspnet.cli_args import check_outputs, image_size, nonneg_int, positive_int
from cspnet.errors import CspnetError

# modules that contribute sub-commands; each defines add_parser(subparsers)
COMMAND_MODULES = (
    "cspnet.cli",
    "cspnet.bench.cli",
    "cspnet.deploy.cli",
    "cspnet.interop.darknet.cli",
    "cspnet.engine.cli",
    "cspnet.ablate.cli",
)


def _cmd_models(args: argparse.Namespace) -> int:
    from cspnet.bench.measure import count_macs, count_params
    from cspnet.models import create_model, list_models, model_info

    rows = []
    for name in list_models(args.pattern, task=args.task):
        info = model_info(name)
        if args.measure:
            m = create_model(name)
            params, gmacs = count_params(m) / 1e6, count_macs(m, info.img_size) / 1e9
        else:
            params, gmacs = info.params_m, info.gmacs
        rows.append(
            dict(
                name=name,
                task=info.task,
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
    print(f"{'model':<22} {'task':<8} {'params (M)':>10} {'GMACs':>7} {'img':>5}  {'twin':<22} timm")
    for r in rows:
        p = f"{r['params_m']:.2f}" if r["params_m"] else "-"
        g = f"{r['gmacs']:.2f}" if r["gmacs"] else "-"
        print(f"{r['name']:<22} {r['task']:<8} {p:>10} {g:>7} {r['img']:>5}  {r['twin'] or '-':<22} {r['timm'] or '-'}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from cspnet.bench.compare import compare, format_table

    result = compare(
        [args.a, args.b],
        img=args.img,
        batch=args.batch,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        fuse=args.fuse,
    )
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cspnet.data.sample import make_sample
    from cspnet.errors import InputError

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already holds files; pass a new folder (nothing is overwritten)")
    make_sample(out, seed=args.seed)
    print(f"sample: classify {out}/classify, detect {out}/detect/data.yaml (also detect_coco/, detect_voc/)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="write a tiny shapes dataset (classify and detect) to try every command offline")
    p.add_argument("out", help="a new folder")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("models", help="list the model zoo (name, params, GMACs, twin)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'csp*'")
    p.add_argument("--task", default=None, choices=["classify", "detect"], help="only models of this task")
    p.add_argument("--measure", action="store_true", help="count params and MACs now instead of the registry")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("compare", help="params, MACs and interleaved latency of two models")
    p.add_argument("a", help="first model, e.g. resnet50")
    p.add_argument("b", help="second model, e.g. cspresnet50")
    p.add_argument("--img", type=image_size, default=224)
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--runs", type=positive_int, default=20, help="timed runs per model (after warm-up)")
    p.add_argument("--warmup", type=nonneg_int, default=3, help="untimed runs per model first")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--fuse", action="store_true", help="time the deployment path: model.fuse() (BN folded)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=_cmd_compare)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `cspnet: error: <prog>: <problem> (see <prog> -h)`, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"cspnet: error: {self.prog}: {_one_line(message)} (see `{self.prog} -h`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cspnet",
        description="Cross Stage Partial Networks, measured.",
        epilog="Errors are one line; --debug (anywhere on the command line) shows the Python traceback.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    return parser


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())  # messages with newlines (e.g. from libraries) stay on one line
    return text[:500] + ("..." if len(text) > 500 else "")


def main(argv: list[str] | None = None) -> int:
    """Run a command; every CspnetError is one `cspnet: error: ...` line (exit 2), any other error one line (exit 1).

    `--debug` anywhere on the command line (or CSPNET_DEBUG=1) prints the traceback as well.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CSPNET_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    try:
        check_outputs(args)  # an existing output is refused before any work
        return args.func(args) or 0
    except CspnetError as e:
        if debug:
            traceback.print_exc()
        print(f"cspnet: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cspnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cspnet models | head`: the reader left; not an error of ours
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        except (OSError, ValueError):
            pass
        return 0
    except Exception as e:
        if debug:
            traceback.print_exc()
        what = f"{type(e).__name__}: {_one_line(e)}" if str(e).strip() else type(e).__name__
        print(f"cspnet: error: unexpected {what} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
