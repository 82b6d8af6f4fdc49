"""The `fpt` command line: `fpt train`, `fpt list`, `fpt demo`, `fpt bench`, ...

Options are generated from typed pydantic models, so the CLI and the Python API share one definition: `fpt train`'s
from TrainConfig (also the YAML configs' keys; precedence: defaults < --config FILE.yaml < command-line options), and
`fpt serve`, `bench`, `sweep` and `report`'s from the settings model beside the code that runs them.
"""

from __future__ import annotations

import argparse
import sys
import typing
from argparse import SUPPRESS
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from fpt.config import TrainConfig, format_validation_error, make_config, members, read_yaml
from fpt.errors import FPTError

M = TypeVar("M", bound=BaseModel)

EXAMPLES = """examples:
  fpt train --task bit-xor --backbone minilm --seed 0 --out runs/xor
  fpt train --task digits --init random --train input,output,layernorm --lr 3e-4
  fpt train --task ucr:GunPoint --task-args '{patch: 5}' --out runs/gunpoint
  fpt train --config configs/digits.yaml --seed 1
  fpt list tasks
  fpt train --resume --out runs/xor                    # continue a killed run from its last checkpoint
  fpt export runs/xor --out xor.fpt.safetensors
  fpt serve --patch xor.fpt.safetensors --patch digits.fpt.safetensors
  fpt bench --json results/bench/cpu.json && fpt bench --render results/bench/cpu.json > BENCHMARKS.md
"""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump): 'fpt: error: ...'."""

    def error(self, message: str) -> typing.NoReturn:
        raise FPTError(message)


# ---- options generated from pydantic models -------------------------------------------------------------------------


def field_choices(annotation: Any) -> list[str] | None:
    literals = [m for m in members(annotation) if typing.get_origin(m) is typing.Literal]
    return [str(v) for v in typing.get_args(literals[0])] if literals else None


def list_item(annotation: Any) -> Any | None:
    """The item type of a list field (given by repeating its option), else None."""
    lists = [m for m in members(annotation) if typing.get_origin(m) is list]
    return typing.get_args(lists[0])[0] if lists else None


def field_extra(info: FieldInfo) -> dict[str, Any]:
    """A field's command-line metadata: flag (default --field-name), metavar, and cli: False to leave it out."""
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def is_switch(info: FieldInfo, switches: bool) -> bool:
    return switches and info.annotation is bool


def option_flags(model: type[BaseModel], switches: bool = True) -> dict[str, str]:
    """Field name → its --option. With `switches`, a bool field is a flag that flips its default: --quiet for a field
    that defaults to False, --no-attention for one that defaults to True."""
    flags = {}
    for name, info in model.model_fields.items():
        extra = field_extra(info)
        if extra.get("cli", True):
            flag = extra.get("flag", "--" + name.replace("_", "-"))
            flags[name] = "--no-" + flag[2:] if is_switch(info, switches) and info.default is True else flag
    return flags


def add_options(
    parser: argparse.ArgumentParser, model: type[BaseModel], title: str | None = None, switches: bool = True
) -> None:
    """One --option per field of the pydantic `model`, its help the field's description. An option not given is left
    out of the parsed arguments (the model's default, or a config file's value, applies); values are parsed as YAML
    unless the field is text (so 'null', '1e-3', '{a: 1}' work); a list field's option repeats."""
    group = parser.add_argument_group(title) if title else parser
    for name, flag in option_flags(model, switches).items():
        info = model.model_fields[name]
        help = (info.description or "").replace("%", "%%")
        if is_switch(info, switches):
            on = info.default is not True
            off = "" if on else " (default: on; this flag turns it off)"
            group.add_argument(flag, dest=name, action="store_true" if on else "store_false", default=SUPPRESS,
                               help=help + off)  # fmt: skip
            continue
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if default not in (None, [], {}):
            help += f" (default: {default})"
        choices = field_choices(info.annotation)
        group.add_argument(
            flag,
            dest=name,
            default=SUPPRESS,
            required=info.is_required(),
            action="append" if list_item(info.annotation) is not None else "store",
            metavar=field_extra(info).get("metavar") or ("{" + ",".join(choices) + "}" if choices else name.upper()),
            help=help,
        )


def parse_value(annotation: Any, value: Any) -> Any:
    """A command-line value for a field of this type: text fields keep it (null aside), others read it as YAML."""
    if isinstance(value, list):
        return [parse_value(list_item(annotation), v) for v in value]
    if not isinstance(value, str):  # a switch's bool
        return value
    if any(m in (str, Path) for m in members(annotation)):
        return None if type(None) in members(annotation) and value in ("null", "~") else value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise FPTError(f"cannot parse {value!r}") from None


def given_values(model: type[BaseModel], args: argparse.Namespace, switches: bool = True) -> dict[str, Any]:
    """The values of `model`'s options given on the command line, parsed."""
    values = {}
    for name, flag in option_flags(model, switches).items():
        if name in vars(args):
            try:
                values[name] = parse_value(model.model_fields[name].annotation, getattr(args, name))
            except FPTError as err:
                raise FPTError(f"{flag}: {err}") from None
    return values


def options_from_args(model: type[M], args: argparse.Namespace) -> M:
    """The settings `model` from its options; a bad value is an FPTError naming the option."""
    try:
        return model(**given_values(model, args))
    except ValidationError as err:
        raise FPTError(format_validation_error(err, model, "option", option_flags(model))) from None


# ---- commands --------------------------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = read_yaml(args.config) if args.config else {}
    values.update(given_values(TrainConfig, args, switches=False))
    return make_config(values)


def cmd_train(args: argparse.Namespace) -> int:
    from fpt.distributed import launched
    from fpt.train import train

    if args.resume and not args.out:
        raise FPTError("--resume needs --out DIR: the folder of the run to continue")
    if args.resume:  # the checkpoint's config and what the command line gives (placement options may differ)
        from fpt.shipping.checkpoint import CHECKPOINT_FILE, saved_config

        given = read_yaml(args.config) if args.config else {}
        given.update(given_values(TrainConfig, args, switches=False))
        has_checkpoint = (Path(args.out) / CHECKPOINT_FILE).is_file()
        saved = saved_config(args.out).model_dump() if has_checkpoint or not given else {}
        cfg = make_config({**saved, **given})
    else:
        cfg = config_from_args(args)
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
        return 0
    result = train(cfg, out=args.out, quiet=args.quiet, resume=args.resume, overwrite=args.overwrite)
    if not launched().main:  # a data-parallel run reports once, from rank 0
        return 0
    where = f" → {Path(args.out) / 'result.json'}" if args.out else ""
    metric = result.get("metric", "accuracy")
    print(
        f"{result['task']} {result['backbone']}/{result['init']} seed {result['seed']}: "
        f"test_{metric} {result[f'test_{metric}']:.4f} val_{metric} {result[f'val_{metric}']:.4f} "
        f"(best step {result['best_step']}, {result['trainable_params']:,}/{result['total_params']:,} params "
        f"trained, {result['train_seconds']:.0f} s){where}"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from fpt.backbones import BACKBONES
    from fpt.registry import METHODS, MODELS
    from fpt.tasks import TASKS

    registry = {"tasks": TASKS, "backbones": BACKBONES, "models": MODELS, "methods": METHODS}[args.what]
    names = registry.names()
    width = max(map(len, names))
    for name, entry in zip(names, registry.entries(), strict=True):
        print(f"{name:<{width}}  {entry.description}")
    if args.what == "tasks":
        from fpt.tasks import ucr

        print(f"\nucr:<name> ships offline for: {', '.join(sorted(ucr.shipped_datasets()))}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fpt.experiments.demo import run_demo

    run_demo(Path(args.out), steps=args.steps, quiet=args.quiet)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fpt.shipping.patch import backbone_bytes_on_disk, describe_size, export

    if args.format == "peft":
        from fpt.shipping.peft_adapter import export_adapter

        out, patch = export_adapter(args.run_dir, args.out, args.backbone_path, overwrite=args.overwrite)
    elif args.backbone_path is not None:
        raise FPTError("--backbone-path is for --format peft (a patch file is written without loading the backbone)")
    else:
        out, patch = export(args.run_dir, args.out, overwrite=args.overwrite)
    params = sum(t.numel() for t in patch.tensors.values())
    size = describe_size(patch.nbytes, backbone_bytes_on_disk(patch.meta.get("backbone_source")))
    kind = "peft adapter, " if args.format == "peft" else ""
    print(f"{out}: {kind}{len(patch.tensors)} tensors, {params:,} params ({', '.join(patch.groups)}), {size}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    import json

    import torch

    from fpt.shipping.multitask import check_examples, check_outputs, pad
    from fpt.shipping.patch import from_patch

    model = from_patch(args.patch, backbone_path=args.backbone_path)
    patch, spec = model.patch, model.patch.spec
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in patch.metrics.items() if k.endswith("accuracy"))
    print(
        f"{args.patch}: task {spec.name} ({spec.shape()}, {spec.num_classes} classes) on {patch.backbone} "
        f"({patch.config.init}), trained {', '.join(patch.groups)}; {metrics or 'no metrics'}; backbone verified "
        f"(frozen weights sha256 {patch.frozen_sha256[:16]}…)",
        file=sys.stderr if args.inputs else sys.stdout,
    )
    if args.inputs:
        try:
            data = json.loads(Path(args.inputs).read_text())
        except (OSError, ValueError) as err:
            raise FPTError(f"cannot read inputs from {args.inputs}: {err}") from None
        examples = check_examples(spec, data.get("inputs") if isinstance(data, dict) else data, model.readout)
        with torch.inference_mode():
            logits = model(*pad(examples))  # (n, K, C)
        check_outputs(logits)
        classes = logits.argmax(-1).tolist()
        labels = [[spec.label_names[c] for c in row] for row in classes] if spec.label_names else None
        print(json.dumps({"task": spec.name, "predictions": classes, "labels": labels}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from fpt.shipping.serve import ServeSettings, serve

    serve(options_from_args(ServeSettings, args))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from fpt.experiments.plan import load_sweep
    from fpt.experiments.sweep import SweepOptions, dry_run, run_sweep

    options = options_from_args(SweepOptions, args)
    sweep = load_sweep(args.config)
    results = options.results_file(sweep)
    if args.dry_run:
        print(dry_run(sweep, options))
        return 0
    try:
        records = run_sweep(sweep, options)
    except KeyboardInterrupt:
        print(
            f"fpt: sweep interrupted; {results} holds every finished run and {options.runs_folder(sweep)} the "
            f"checkpoints of the others: run the same command again to continue",
            file=sys.stderr,
        )
        return 130
    print(f"{len(records)} records in {results}; render them: fpt report {results} --out DIR")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fpt.experiments.report import ReportOptions, write_report

    out = write_report([Path(p) for p in args.results], options_from_args(ReportOptions, args))
    print(f"wrote {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from fpt.performance import bench, render
    from fpt.results import read_json, write_json

    settings = options_from_args(bench.BenchSettings, args)
    if args.render:
        try:
            record = read_json(args.render)
        except (OSError, ValueError) as err:
            raise FPTError(f"cannot read bench record {args.render}: {err}") from None
        print(render.render_markdown(record), end="")
        return 0
    command = " ".join(["fpt", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None
    record = bench.run_bench(settings, command=command)
    render.print_text(record)
    if args.json:
        write_json(args.json, record)
        print(f"→ {args.json}")
    return 0


def build_parser(command: str | None = None) -> Parser:
    """The `fpt` parser. Given the `command` that runs, only its settings options are generated: the other commands'
    modules (FastAPI, scipy) are not imported."""
    parser = Parser(
        prog="fpt",
        description="Frozen Pretrained Transformers: train a frozen pretrained transformer "
        "on tasks far from its pretraining data.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    adders = {"train": add_train_parser, "list": add_list_parser, "demo": add_demo_parser, "export": add_export_parser,
              "load": add_load_parser, "serve": add_serve_parser, "sweep": add_sweep_parser,
              "report": add_report_parser, "bench": add_bench_parser}  # fmt: skip
    for name, add in adders.items():
        add(sub, command in (None, name))
    return parser


def add_train_parser(sub, options: bool) -> None:
    """fpt train: its run options, then every TrainConfig field as an option."""
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
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the killed run in --out DIR from its last checkpoint (same numbers as an unbroken run); "
        "with no config options, the checkpoint's config is used, else it must match",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out DIR (without it, a folder holding a run is refused)",
    )
    add_options(p, TrainConfig, "training config (also settable in --config FILE.yaml)", switches=False)
    p.set_defaults(func=cmd_train)


def add_list_parser(sub, options: bool) -> None:
    """fpt list."""
    p = sub.add_parser("list", help="list the registered tasks, backbones or models")
    p.add_argument("what", choices=["tasks", "backbones", "models", "methods"])
    p.set_defaults(func=cmd_list)


def add_demo_parser(sub, options: bool) -> None:
    """fpt demo."""
    p = sub.add_parser("demo", help="FPT vs random init on bit-xor and digits with the shipped minilm backbone")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="where the four runs write (default runs/demo)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: each task's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


def add_export_parser(sub, options: bool) -> None:
    """fpt export."""
    p = sub.add_parser("export", help="write a finished run's trained tensors as a task patch (.fpt.safetensors)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (result.json, trained.safetensors)")
    p.add_argument(
        "--format",
        choices=("patch", "peft"),
        default="patch",
        help="patch: one .fpt.safetensors file (default); peft: a peft adapter folder (adapter_config.json, "
        "adapter_model.safetensors, and fpt's metadata in fpt_patch.json) that PeftModel.from_pretrained and fpt load",
    )
    p.add_argument(
        "--out",
        metavar="PATH",
        help="the patch file (default: RUN_DIR/<RUN_DIR name>.fpt.safetensors) or peft folder (.../<name>.peft)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the patch file or folder if it exists")
    p.add_argument(
        "--backbone-path",
        metavar="DIR",
        help="--format peft: the backbone's folder or hub id, for a backbone the registry does not ship (the run is "
        "rebuilt on it, checked by fingerprint, and saved by peft)",
    )
    p.set_defaults(func=cmd_export)


def add_load_parser(sub, options: bool) -> None:
    """fpt load."""
    p = sub.add_parser("load", help="rebuild a model from a patch, checking its backbone; optionally predict")
    p.add_argument("patch", metavar="PATCH", help="a .fpt.safetensors file or peft folder from fpt export")
    p.add_argument(
        "--backbone-path",
        metavar="DIR",
        help="the backbone's folder or hub id, for a backbone the registry does not ship (a patch never names the "
        "path it is read from; its fingerprint check verifies what you give)",
    )
    p.add_argument("--inputs", metavar="FILE.json", help='predict {"inputs": [...]} (as POST .../predict) to stdout')
    p.set_defaults(func=cmd_load)


def add_serve_parser(sub, options: bool) -> None:
    p = sub.add_parser(
        "serve",
        help="serve task patches over HTTP from one shared frozen backbone",
        description="Load the backbone once and every patch onto it; requests for different tasks are batched into "
        "shared forward passes. API: GET /v1/tasks, POST /v1/tasks/NAME/predict, GET /healthz, docs at /docs.",
    )
    if options:
        from fpt.shipping.serve import ServeSettings

        add_options(p, ServeSettings)
    p.set_defaults(func=cmd_serve)


def add_sweep_parser(sub, options: bool) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of runs from a sweep file; resumable, results appended to one JSONL file",
        description="Run every run of a sweep file (tasks × models × grid axes × lr × seeds). Runs are identified by "
        "a hash of their config: a run whose id is in the results file is skipped, a half-done one resumes from "
        "its checkpoint, so a killed sweep continues when the same command runs again.",
    )
    p.add_argument("config", metavar="SWEEP.yaml", help="the sweep file (see configs/offline-suite.yaml)")
    if options:
        from fpt.experiments.sweep import SweepOptions

        add_options(p, SweepOptions)
    p.add_argument("--dry-run", action="store_true", help="list the runs (id, done/todo, labels) and exit")
    p.set_defaults(func=cmd_sweep)


def add_report_parser(sub, options: bool) -> None:
    p = sub.add_parser(
        "report",
        help="render tables and plots from sweep results into DIR/report.md",
        description="Choose each setting's lr on validation, then write DIR/report.md (tables: mean ± 95% CI over "
        "seeds) and PNG plots, all from the results files.",
    )
    p.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="results JSONL files of fpt sweep, result.json files or run folders",
    )
    if options:
        from fpt.experiments.report import ReportOptions

        add_options(p, ReportOptions)
    p.set_defaults(func=cmd_report)


def add_bench_parser(sub, options: bool) -> None:
    p = sub.add_parser(
        "bench",
        help="time fpt's FPT step against a plain transformers reference, full fine-tuning, the reservoir and "
        "inference, side by side",
        description="Measure, in one run on the same backbone, shapes and batch: fpt's FPT training step, the "
        "straightforward transformers reference, full fine-tuning, output-only training on cached features and "
        "inference: step time (median of interleaved repeats), samples/s, tokens/s, peak memory, counted FLOPs and "
        "MFU against a dense matmul timed in the same run; then the ratios and targets.",
    )
    if options:
        from fpt.performance.bench import BenchSettings

        add_options(p, BenchSettings)
    p.add_argument("--json", metavar="FILE", help="also write the full record (settings, environment, load) here")
    p.add_argument("--render", metavar="FILE", help="print BENCHMARKS.md (markdown) from a --json record and exit")
    p.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), "")  # the top-level parser has no options but -h
    try:
        args = build_parser(command).parse_args(argv)
        return args.func(args)
    except FPTError as err:
        print(f"fpt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "fpt: interrupted; result files of finished runs are intact; continue a run: fpt train --resume --out DIR",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
