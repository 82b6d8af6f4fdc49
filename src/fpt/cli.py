"""The `fpt` command line: `fpt train`, `fpt list`, `fpt demo`, `fpt bench`, ...

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
  fpt train --resume --out runs/xor                    # continue a killed run from its last checkpoint
  fpt export runs/xor --out xor.fpt.safetensors
  fpt serve --patch xor.fpt.safetensors --patch digits.fpt.safetensors
  fpt bench --json results/bench/cpu.json && fpt bench --render results/bench/cpu.json > BENCHMARKS.md
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
    from fpt.distributed import launched
    from fpt.train import train

    if args.resume and not args.out:
        raise FPTError("--resume needs --out DIR: the folder of the run to continue")
    given = args.config or any(name in vars(args) for name in TrainConfig.model_fields)
    if args.resume and not given:  # no options: continue the run with the config its checkpoint holds
        from fpt.shipping.checkpoint import saved_config

        cfg = saved_config(args.out)
    else:
        cfg = config_from_args(args)
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
        return 0
    result = train(cfg, out=args.out, quiet=args.quiet, resume=args.resume)
    if not launched().main:  # a data-parallel run reports once, from rank 0
        return 0
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
    from fpt.registry import MODELS
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
    from fpt.experiments.demo import run_demo

    run_demo(Path(args.out), steps=args.steps, quiet=args.quiet)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fpt.shipping.patch import backbone_bytes_on_disk, describe_size, export

    out, patch = export(args.run_dir, args.out)
    params = sum(t.numel() for t in patch.tensors.values())
    size = describe_size(patch.nbytes, backbone_bytes_on_disk(patch.meta.get("backbone_source")))
    print(f"{out}: {len(patch.tensors)} tensors, {params:,} params ({', '.join(patch.groups)}), {size}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    import json

    import torch

    from fpt.shipping.multitask import check_examples, pad
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
        classes = logits.argmax(-1).tolist()
        labels = [[spec.label_names[c] for c in row] for row in classes] if spec.label_names else None
        print(json.dumps({"task": spec.name, "predictions": classes, "labels": labels}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from fpt.shipping.serve import Settings, serve

    if not args.patch and not args.allow_upload:
        raise FPTError("give at least one --patch FILE (or --allow-upload to add tasks at run time)")
    settings = Settings(
        batching=args.batching,
        max_wait_ms=args.max_wait_ms,
        max_batch_rows=args.max_batch_rows,
        max_examples=args.max_examples,
        max_body_bytes=int(args.max_body_mb * 2**20),
        allow_upload=args.allow_upload,
    )
    serve(args.patch or [], args.backbone, args.backbone_path, args.host, args.port, settings, args.threads)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from fpt.experiments.sweep import default_runs_dir, dry_run, load_sweep, run_sweep

    sweep = load_sweep(args.config)
    results = Path(args.results) if args.results else Path("runs") / f"{sweep.name}.jsonl"
    if args.dry_run:
        print(dry_run(sweep, results, args.retry_failed))
        return 0
    try:
        records = run_sweep(
            sweep,
            results,
            runs_dir=args.runs_dir,
            workers=args.workers,
            backend=args.backend,
            ray_address=args.ray_address,
            retry_failed=args.retry_failed,
            quiet=args.quiet,
        )
    except KeyboardInterrupt:
        runs_dir = args.runs_dir or default_runs_dir(results)
        print(
            f"fpt: sweep interrupted; {results} holds every finished run and {runs_dir} the checkpoints of the others:"
            f" run the same command again to continue",
            file=sys.stderr,
        )
        return 130
    print(f"{len(records)} records in {results}; render them: fpt report {results} --out DIR")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fpt.experiments.report import write_report

    out = write_report(
        [Path(p) for p in args.results],
        Path(args.out),
        runs_dir=args.runs_dir,
        attention=not args.no_attention,
        attention_backbone=args.attention_backbone,
        attention_backbone_path=args.attention_backbone_path,
    )
    print(f"wrote {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from fpt.performance import bench, render
    from fpt.results import read_json, write_json

    if args.render:
        try:
            record = read_json(args.render)
        except (OSError, ValueError) as err:
            raise FPTError(f"cannot read bench record {args.render}: {err}") from None
        print(render.render_markdown(record), end="")
        return 0
    record = bench.run_bench(
        backbone=args.backbone,
        backbone_path=args.backbone_path,
        shapes=[bench.parse_shape(s) for s in args.shape] if args.shape else None,
        rows=[r.strip() for r in args.rows.split(",") if r.strip()],
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        threads=args.threads,
        seed=args.seed,
        command=" ".join(["fpt", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None,
    )
    render.print_text(record)
    if args.json:
        write_json(args.json, record)
        print(f"→ {args.json}")
    return 0


def add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time fpt's FPT step against a plain transformers reference, full fine-tuning, the reservoir and "
        "inference, side by side",
        description="Measure, in one run on the same backbone, shapes and batch: fpt's FPT training step, the "
        "straightforward transformers reference, full fine-tuning, output-only training on cached features and "
        "inference: step time (median of interleaved repeats), samples/s, tokens/s, peak memory, counted FLOPs and "
        "MFU against a dense matmul timed in the same run; then the ratios and targets.",
    )
    p.add_argument("--backbone", default="minilm", help="backbone name (default minilm)")
    p.add_argument("--backbone-path", metavar="DIR", help="local folder for hub backbones")
    p.add_argument("--shape", action="append", metavar="NAME=BATCHxTOKENS",
                   help="a shape (repeat); names starting bit-memory use that task's token layout, others a "
                   "1-feature, 10-class layout; default: bit-memory=32x120 and long=8x512 on a CPU (GPU: 256x120, "
                   "32x512; long = 1024 tokens or the backbone's position limit)")  # fmt: skip
    p.add_argument("--rows", default=",".join(("fpt", "reference", "full", "reservoir", "inference")),
                   help="comma list of rows (default all: fpt,reference,full,reservoir,inference)")  # fmt: skip
    p.add_argument("--repeats", type=int, help="timed repeats per row (default 5 on a CPU, 20 on a GPU)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per row first (default 2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                   help="fp32, or bf16 autocast; auto: bf16 on a GPU, fp32 on a CPU")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile fpt's rows (not the reference)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--seed", type=int, default=0, help="seed for the models' initialisation and the batch")
    p.add_argument("--json", metavar="FILE", help="also write the full record (settings, environment, load) here")
    p.add_argument("--render", metavar="FILE", help="print BENCHMARKS.md (markdown) from a --json record and exit")
    p.set_defaults(func=cmd_bench)


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
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the killed run in --out DIR from its last checkpoint (same numbers as an unbroken run); "
        "with no config options, the checkpoint's config is used, else it must match",
    )
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

    p = sub.add_parser("export", help="write a finished run's trained tensors as a task patch (.fpt.safetensors)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (result.json, trained.safetensors)")
    p.add_argument("--out", metavar="FILE", help="the patch file (default: RUN_DIR/<RUN_DIR name>.fpt.safetensors)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("load", help="rebuild a model from a patch, checking its backbone; optionally predict")
    p.add_argument("patch", metavar="PATCH", help="a .fpt.safetensors file from fpt export")
    p.add_argument("--backbone-path", metavar="DIR", help="the backbone folder, if not where the run loaded it from")
    p.add_argument("--inputs", metavar="FILE.json", help='predict {"inputs": [...]} (as POST .../predict) to stdout')
    p.set_defaults(func=cmd_load)

    p = sub.add_parser(
        "serve",
        help="serve task patches over HTTP from one shared frozen backbone",
        description="Load the backbone once and every patch onto it; requests for different tasks are batched into "
        "shared forward passes. API: GET /v1/tasks, POST /v1/tasks/NAME/predict, GET /healthz, docs at /docs.",
    )
    p.add_argument("--patch", action="append", metavar="[NAME=]FILE", help="a task patch (repeat); NAME defaults to "
                   "the file name without .fpt.safetensors")  # fmt: skip
    p.add_argument("--backbone", help="backbone name (default: the patches')")
    p.add_argument("--backbone-path", metavar="DIR", help="backbone folder (default: the first patch's)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--batching", choices=["cross-task", "per-task"], default="cross-task",
                   help="one forward pass for all tasks' requests (default), or one per task")  # fmt: skip
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a request waits for a batch (default 2)")
    p.add_argument("--max-batch-rows", type=int, default=64, help="examples per forward pass (default 64)")
    p.add_argument("--max-examples", type=int, default=256, help="examples per request (default 256)")
    p.add_argument("--max-body-mb", type=float, default=4.0, help="largest predict request body (default 4 MiB)")
    p.add_argument("--allow-upload", action="store_true", help="enable POST /v1/tasks (token: $FPT_SERVE_TOKEN)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.set_defaults(func=cmd_serve)
    add_sweep_commands(sub)
    add_bench_parser(sub)
    return parser


def add_sweep_commands(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of runs from a sweep file; resumable, results appended to one JSONL file",
        description="Run every run of a sweep file (tasks × models × grid axes × lr × seeds). Runs are identified by "
        "a hash of their config: a run whose id is in the results file is skipped, a half-done one resumes from "
        "its checkpoint, so a killed sweep continues when the same command runs again.",
    )
    p.add_argument("config", metavar="SWEEP.yaml", help="the sweep file (see configs/offline-suite.yaml)")
    p.add_argument("--results", metavar="FILE.jsonl", help="results file (default runs/<sweep name>.jsonl)")
    p.add_argument("--runs-dir", metavar="DIR", help="run folders (default: the results path without .jsonl)")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (processes, or Ray tasks); default 1")
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="local processes (default) or Ray")
    p.add_argument("--ray-address", metavar="ADDRESS", help="a running Ray cluster (default: start Ray locally)")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again (else they count as finished)")
    p.add_argument("--dry-run", action="store_true", help="list the runs (id, done/todo, labels) and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar; one line per finished run")
    p.set_defaults(func=cmd_sweep)

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
    p.add_argument("--out", required=True, metavar="DIR", help="where report.md and the PNGs go")
    p.add_argument("--runs-dir", metavar="DIR", help="run folders (default: the first results path without .jsonl)")
    p.add_argument("--no-attention", action="store_true", help="skip the attention-map figure")
    p.add_argument("--attention-backbone", metavar="NAME", help="backbone of the attention maps when no trained "
                   "bit-memory run is found (default: the sweep's, else minilm)")  # fmt: skip
    p.add_argument("--attention-backbone-path", metavar="DIR", help="its folder, for backbones read from a folder")
    p.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
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
