"""ListOps as the Long Range Arena makes it: the value (0-9) of a nested expression such as `[MAX 2 [MIN 4 7 ] 0 ]`.

Data is generated here with the LRA recipe (the default) or read from LRA-format TSV files (task argument
`data_dir`). The generator makes LRA's random draws in LRA's order: a node shallower than `max_depth` is an operator
with probability VALUE_P = 0.25 (the root is depth 1; always a digit at `max_depth`), an operator takes 2..`max_args`
arguments, MED = int(numpy.median(args)), SM = sum mod 10, and trees are de-duplicated across all three splits.
One deliberate difference: LRA's length filter counts operators, digits and `]` but not the parentheses; here the
bounds apply to the tokens of the parenthesised source, i.e. to the sequence the model sees.

Tokens: 0 = padding, then `(` `)` `[MIN` `[MAX` `[MED` `[SM` `]` `0`..`9` (vocabulary 18 with padding). LRA writes a
tree in a left-nested binary form, `( ( ( [MAX 2 ) 9 ) ] )` = MAX(2, 9); `keep_brackets=False` drops the `(` `)`
tokens as the original FPT code did, leaving the plain prefix form `[MAX 2 9 ]` (token ids do not change).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import torch

from fpt.errors import FPTError
from fpt.registry import TASKS
from fpt.tasks.base import SPLITS, Task, TaskSpec, TensorSplit, check_positive, drop_longer

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
DIGITS = tuple(str(d) for d in range(10))
VOCAB = ("<pad>", "(", ")", *OPERATORS, END, *DIGITS)
TOKEN_IDS = {token: i for i, token in enumerate(VOCAB) if i > 0}
BRACKET_IDS = np.array([TOKEN_IDS["("], TOKEN_IDS[")"]])
VALUE_P = 0.25  # LRA: a node below the maximum depth is an operator when random.random() <= VALUE_P
LRA_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
HEADER = "Source\tTarget"

# Small on purpose (LRA: depth 10, 500-2000 tokens, 96k/2k/2k). Depth <= 6 and 21-99 tokens keep every example far
# below 512 positions, generation at a few seconds and the task within reach of a frozen backbone trained for ~1000
# CPU steps: most trees are 2-4 levels deep (mean ~45 tokens), where the four operators must be learnt first.
GENERATOR_DEFAULTS = {
    "max_depth": 6,
    "max_args": 10,
    "min_length": 20,
    "max_length": 100,
    "train_size": 10000,
    "val_size": 500,
    "test_size": 1000,
    "seed": 0,
}

Tree = int | tuple[str, list["Tree"]]


# --- generator (LRA recipe) --------------------------------------------------------------------------------------


class _TooLong(Exception):
    """The tree being built already has `max_length` tokens, so it would be rejected: stop building it."""


def _generate_tree(rng: random.Random, max_depth: int, max_args: int, max_length: int) -> tuple[Tree, int]:
    """A random tree and its token count with parentheses; children are drawn before their operator, as in LRA."""
    count = 0

    def node(depth: int) -> Tree:
        nonlocal count
        if depth < max_depth and rng.random() <= VALUE_P:
            args = [node(depth + 1) for _ in range(rng.randint(2, max_args))]
            tree: Tree = (rng.choice(OPERATORS), args)
            count += 2 + 2 * (len(args) + 1)  # operator, `]`, and one pair of parentheses per binary node
        else:
            tree = rng.choice(range(10))
            count += 1
        if count >= max_length:
            raise _TooLong
        return tree

    return node(1), count


def _tree_tokens(tree: Tree) -> list[str]:
    """LRA's left-nested binary form: MAX(2, 9) → ( ( ( [MAX 2 ) 9 ) ] )."""
    if isinstance(tree, int):
        return [DIGITS[tree]]
    op, args = tree
    tokens = ["("] * (len(args) + 1) + [op]
    for arg in args:
        tokens += _tree_tokens(arg) + [")"]
    return tokens + [END, ")"]


def _tree_value(tree: Tree) -> int:
    if isinstance(tree, int):
        return tree
    op, args = tree
    values = [_tree_value(a) for a in args]
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":
        return int(np.median(values))
    return sum(values) % 10


def generate_examples(
    n: int, max_depth: int = 6, max_args: int = 10, min_length: int = 20, max_length: int = 100, seed: int = 0
) -> list[tuple[str, int]]:
    """`n` distinct (source, value) pairs whose parenthesised source has strictly between min and max_length tokens.

    Deterministic in `seed`. Raises FPTError when the bounds admit too few distinct trees to find `n` of them.
    """
    rng = random.Random(seed)
    found: dict[str, int] = {}
    attempts, budget = 0, 100 * n + 100_000
    while len(found) < n:
        attempts += 1
        if attempts > budget:
            raise FPTError(
                f"listops: found only {len(found)} of {n} distinct trees with {min_length} < tokens < "
                f"{max_length} at max_depth={max_depth} in {budget} attempts; widen the bounds or ask for "
                "fewer"
            )
        try:
            tree, count = _generate_tree(rng, max_depth, max_args, max_length)
        except _TooLong:
            continue
        if count > min_length:
            found.setdefault(" ".join(_tree_tokens(tree)), _tree_value(tree))
    return list(found.items())


# --- independent evaluator ---------------------------------------------------------------------------------------


def _apply(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    ordered, mid = sorted(args), len(args) // 2
    return ordered[mid] if len(args) % 2 else (ordered[mid - 1] + ordered[mid]) // 2  # floor of the mean of the two


def evaluate_expression(source: str) -> int:
    """The value of a ListOps expression in the parenthesised or the plain form, computed with an operator stack.

    Written independently of the generator's tree evaluation, so each checks the other. Raises ValueError when
    `source` is not one well-formed expression.
    """
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    open_parens = 0
    for position, token in enumerate(source.split(), 1):
        if token == "(":
            open_parens += 1
            continue
        if token == ")":
            open_parens -= 1
            if open_parens < 0:
                raise ValueError(f"token {position}: `)` without a matching `(`")
            continue
        if token in OPERATORS:
            stack.append((token, []))
            continue
        if token == END:
            if not stack:
                raise ValueError(f"token {position}: `]` without an operator")
            op, args = stack.pop()
            if not args:
                raise ValueError(f"token {position}: {op} has no arguments")
            value = _apply(op, args)
        elif token in DIGITS:
            value = int(token)
        else:
            raise ValueError(f"token {position}: unknown token {token!r}")
        if stack:
            stack[-1][1].append(value)
        elif result is None:
            result = value
        else:
            raise ValueError(f"token {position}: a second expression after a complete one")
    if stack or open_parens or result is None:
        raise ValueError("incomplete expression" if result is None or stack else "unbalanced parentheses")
    return result


# --- LRA TSV files -----------------------------------------------------------------------------------------------


def write_lra_tsv(path: str | Path, examples: list[tuple[str, int]]) -> None:
    """Write (source, value) pairs as LRA does: header `Source<TAB>Target`, one example a line."""
    lines = [HEADER] + [f"{source}\t{value}" for source, value in examples]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_lra_tsv(path: str | Path) -> tuple[list[np.ndarray], list[int]]:
    """Token ids (uint8, brackets as written) and labels of an LRA ListOps TSV file, in either source form.

    Any problem (missing file, header, column count, unknown token, unbalanced brackets, label) is an FPTError
    naming the file and line.
    """
    path = Path(path)
    allowed = " ".join(VOCAB[1:])
    inputs: list[np.ndarray] = []
    labels: list[int] = []
    try:
        with path.open(encoding="utf-8-sig") as f:  # a BOM from a spreadsheet is not an error
            header = f.readline().rstrip("\r\n")
            if header != HEADER:
                raise FPTError(f"{path}:1: expected the header 'Source<TAB>Target', got {header[:60]!r}")
            for line_no, line in enumerate(f, 2):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                columns = line.split("\t")
                if len(columns) != 2:
                    raise FPTError(
                        f"{path}:{line_no}: expected 2 tab-separated columns (Source, Target), got {len(columns)}"
                    )
                source, target = columns
                tokens = source.split()
                unknown = next((t for t in tokens if t not in TOKEN_IDS), None)
                if unknown is not None:
                    raise FPTError(f"{path}:{line_no}: unknown token {unknown!r}; ListOps tokens are: {allowed}")
                if (
                    not tokens
                    or tokens.count("(") != tokens.count(")")
                    or sum(tokens.count(op) for op in OPERATORS) != tokens.count(END)
                ):
                    raise FPTError(f"{path}:{line_no}: empty or unbalanced expression {source[:60]!r}")
                if target.strip() not in DIGITS:
                    raise FPTError(f"{path}:{line_no}: Target must be one digit 0-9, got {target[:20]!r}")
                inputs.append(np.array([TOKEN_IDS[t] for t in tokens], dtype=np.uint8))
                labels.append(int(target))
    except FileNotFoundError:
        raise FPTError(f"{path}: no such file; data_dir must hold {', '.join(LRA_FILES.values())}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FPTError(f"{path}: cannot read: {e}") from None
    if not labels:
        raise FPTError(f"{path}: no examples after the header")
    return inputs, labels


# --- the task ----------------------------------------------------------------------------------------------------


class TokenSplit(TensorSplit):
    """Token ids kept as uint8 (LRA's 96k × ~2000-token train file would take 1.5 GB as int64), served as int64."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().__getitem__(i)
        return x.long(), y


def _check_generator_args(args: dict) -> None:
    check_positive(**{k: args[k] for k in ("max_depth", "max_length", "train_size", "val_size", "test_size")})
    for name in ("max_args", "min_length", "seed"):
        if not isinstance(args[name], int) or args[name] < 0:
            raise FPTError(f"task argument {name} must be a non-negative integer, got {args[name]!r}")
    if args["max_args"] < 2:
        raise FPTError(
            f"task argument max_args must be at least 2 (an operator takes 2..max_args), got {args['max_args']}"
        )
    if args["max_length"] - args["min_length"] < 2:
        raise FPTError(
            f"task arguments min_length < tokens < max_length admit no length: {args['min_length']}, "
            f"{args['max_length']}"
        )


def read_lra_files(folder: Path, generator_args: dict) -> tuple[dict, dict]:
    """LRA's basic_{train,val,test}.tsv; the generator's arguments must be left at their defaults."""
    changed = [k for k, v in generator_args.items() if v != GENERATOR_DEFAULTS[k]]
    if changed:
        raise FPTError(f"task argument {changed[0]} applies to generated ListOps, not to files from data_dir")
    data = {split: read_lra_tsv(folder / file) for split, file in LRA_FILES.items()}
    return data, {"generated": False, "source": str(folder.resolve()), "files": dict(LRA_FILES)}


def generate_splits(args: dict) -> tuple[dict[str, tuple[list[np.ndarray], list[int]]], dict]:
    """Train, val and test drawn in that order from one seeded stream of generated expressions, as token ids."""
    _check_generator_args(args)
    sizes = {"train": args["train_size"], "val": args["val_size"], "test": args["test_size"]}
    examples = generate_examples(
        sum(sizes.values()), args["max_depth"], args["max_args"], args["min_length"], args["max_length"], args["seed"]
    )
    data, start = {}, 0
    for split in SPLITS:
        part = examples[start : start + sizes[split]]
        start += sizes[split]
        data[split] = ([np.array([TOKEN_IDS[t] for t in s.split()], dtype=np.uint8) for s, _ in part],
                       [v for _, v in part])  # fmt: skip
    return data, {"generated": True, "data_seed": args["seed"], "params": args}


@TASKS.register(
    "listops",
    "symbolic: LRA ListOps expressions → value 0-9, one token a symbol (vocab 18), 10 classes",
    example_bytes=lambda args: 8 * args["max_length"],  # generated into memory: int64 tokens per example
)
def listops(
    max_depth: int = 6,
    max_args: int = 10,
    min_length: int = 20,
    max_length: int = 100,
    train_size: int = 10000,
    val_size: int = 500,
    test_size: int = 1000,
    seed: int = 0,
    keep_brackets: bool = True,
    max_len: int | None = None,
    data_dir: str | None = None,
) -> Task:
    """Generated ListOps (small LRA recipe), or LRA's basic_{train,val,test}.tsv from `data_dir`.

    `keep_brackets=False` drops the `(` `)` tokens. `max_len` drops (never truncates) longer examples and reports
    how many in `info` and on stderr.
    """
    generator_args = {
        "max_depth": max_depth,
        "max_args": max_args,
        "min_length": min_length,
        "max_length": max_length,
        "train_size": train_size,
        "val_size": val_size,
        "test_size": test_size,
        "seed": seed,
    }
    if not isinstance(keep_brackets, bool):
        raise FPTError(f"task argument keep_brackets must be true or false, got {keep_brackets!r}")
    if max_len is not None:
        check_positive(max_len=max_len)

    if data_dir is not None:
        data, info = read_lra_files(Path(data_dir), generator_args)
    else:
        data, info = generate_splits(generator_args)

    if not keep_brackets:
        data = {s: ([x[~np.isin(x, BRACKET_IDS)] for x in xs], ys) for s, (xs, ys) in data.items()}
    dropped = {s: 0 for s in SPLITS}
    if max_len is not None:
        data, dropped = drop_longer(data, max_len, "listops")

    lengths = {s: [len(x) for x in xs] for s, (xs, _) in data.items()}
    spec = TaskSpec(
        "listops",
        "symbolic",
        "tokens",
        input_dim=len(VOCAB),
        num_classes=10,
        max_tokens=max(max(n) for n in lengths.values()),
        readout="last",
        default_steps=1000,
        default_eval_every=100,
        label_names=DIGITS,
    )
    info |= {
        "keep_brackets": keep_brackets,
        "max_len": max_len,
        "dropped_over_max_len": dropped,
        "lengths": {s: {"min": min(n), "mean": round(float(np.mean(n)), 1), "max": max(n)} for s, n in lengths.items()},
        "label_counts": {s: np.bincount(ys, minlength=10).tolist() for s, (_, ys) in data.items()},
    }
    return Task(spec, {s: TokenSplit(xs, ys) for s, (xs, ys) in data.items()}, info)


@TASKS.register(
    "listops-lra",
    "symbolic: LRA's ListOps TSV files (data_dir: basic_{train,val,test}.tsv), 500-2000 tokens (vocab 18), "
    "10 classes; 96k/2k/2k",
)
def listops_lra(data_dir: str | None = None, keep_brackets: bool = True, max_len: int | None = None) -> Task:
    """LRA's published ListOps splits as they are (train 96k, val 2k, test 2k): `listops` reading `data_dir`."""
    if data_dir is None:
        raise FPTError(
            f"task 'listops-lra' reads your copy of LRA: give --task-args '{{data_dir: DIR}}' with "
            f"{', '.join(LRA_FILES.values())}"
        )
    task = listops(data_dir=data_dir, keep_brackets=keep_brackets, max_len=max_len)
    spec = dataclasses.replace(task.spec, name="listops-lra", default_steps=5000, default_eval_every=500)
    return Task(spec, task.splits, task.info)
