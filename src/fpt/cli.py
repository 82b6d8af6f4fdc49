"""The `fpt` command line: `fpt train`, `fpt list`, `fpt demo`.

Options of `fpt train` are generated from TrainConfig's typed fields, so the CLI, YAML configs and the Python
API share one definition. Precedence: defaults < --config FILE.yaml < command-line options.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from fpt.config import TrainConfig, make_config, read_yaml
from fpt.errors import FPTError

EXAMPLES = """examples:
  fpt train --task bit-xor --backbone minilm --seed 0 --out runs/xor
  fpt train --task digits --init random --train input,output,layernorm --lr 3e-4
  fpt train --task ucr:GunPoint --task-args '{patch: 5}' --out runs/gunpoint
  fpt train --config configs/digits.yaml --seed 1
  fpt list tasks
"""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump): 'fpt: error: ...'."""

    def error(self, message: str) -> typing.NoReturn:
        raise FPTError(message)


def field_choices(annotation: Any) -> list[str] | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    literals = [a for a in args if typing.get_origin(a) is typing.Literal]
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    if literals:
        return [str(v) for v in typing.get_args(literals[0])]
    return None


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One --option per TrainConfig field; values are parsed as YAML (so 'null', '1e-3', '{a: 1}' work)."""
    group = parser.add_argument_group("training config (also settable in --config FILE.yaml)")
    for name, info in TrainConfig.model_fields.items():
        choices = field_choices(info.annotation)
        default = info.get_default(call_default_factory=True)
        metavar = "{" + ",".join(choices) + "}" if choices else name.upper()
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=argparse.SUPPRESS,
            metavar=metavar,
            help=f"{info.description} (default: {default})",
        )


def parse_value(name: str, text: str) -> Any:
    annotation = TrainConfig.model_fields[name].annotation
    if annotation is str:
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise FPTError(f"--{name.replace('_', '-')}: cannot parse {text!r}") from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = read_yaml(args.config) if args.config else {}
    for name in TrainConfig.model_fields:
        if name in vars(args):
            values[name] = parse_value(name, getattr(args, name))
    return make_config(values)


def cmd_train(args: argparse.Namespace) -> int:
    from fpt.train import train

    cfg = config_from_args(args)
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
        return 0
    result = train(cfg, out=args.out, quiet=args.quiet)
    where = f" → {Path(args.out) / 'result.json'}" if args.out else ""
    print(
        f"{result['task']} {result['backbone']}/{result['init']} seed {result['seed']}: "
        f"test_accuracy {result['test_accuracy']:.4f} val_accuracy {result['val_accuracy']:.4f} "
        f"(best step {result['best_step']}, {result['trainable_params']:,}/{result['total_params']:,} params "
        f"trained, {result['train_seconds']:.0f} s){where}"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from fpt.backbones import BACKBONES
    from fpt.model import MODELS
    from fpt.tasks import TASKS

    registry = {"tasks": TASKS, "backbones": BACKBONES, "models": MODELS}[args.what]
    names = registry.names()
    width = max(map(len, names))
    for name, entry in zip(names, registry.entries(), strict=True):
        print(f"{name:<{width}}  {entry.description}")
    if args.what == "tasks":
        from fpt.tasks import ucr

        print(f"\nucr:<name> ships offline for: {', '.join(sorted(ucr.shipped_datasets()))}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fpt.demo import run_demo

    run_demo(Path(args.out), steps=args.steps, quiet=args.quiet)
    return 0


def build_parser() -> Parser:
    parser = Parser(
        prog="fpt",
        description="Frozen Pretrained Transformers: train a frozen pretrained transformer "
        "on tasks far from its pretraining data.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train one FPT run and write its result files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
        description="Train a frozen pretrained transformer on a task. By default only the input "
        "layer, output head, layer norms and positional embeddings train (the paper's "
        "FPT); --train all fine-tunes everything.",
    )
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file of config keys; command-line options override it")
    p.add_argument("--out", metavar="DIR", help="write result.json, curve.jsonl and config.yaml to DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar; one log line per validation")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    add_config_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("list", help="list the registered tasks, backbones or models")
    p.add_argument("what", choices=["tasks", "backbones", "models"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("demo", help="FPT vs random init on bit-xor and digits with the shipped minilm backbone")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="where the four runs write (default runs/demo)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: each task's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except FPTError as err:
        print(f"fpt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fpt: interrupted; result files of finished runs are intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
