"""The frozen products' backward, grad (N, out) · W (out, in), three ways on one torch thread: oneDNN on W's transpose
view (fpt before), torch.matmul (fpt now) and oneDNN on a contiguous copy of the transpose (a cached copy would cost
memory). Medians of interleaved repeats; writes frozen_backward_products.json beside this file.

    PYTHONPATH=src OMP_NUM_THREADS=1 python results/bench/micro/frozen_backward_products.py
"""

import json
import os
import statistics
import time
from pathlib import Path

import torch

from fpt.performance.ops import onednn_linear
from fpt.results import environment

ROWS, REPEATS = 1024, 5  # a feed-forward chunk's tokens (ops.FEED_FORWARD_ROWS)
WEIGHTS = {  # name → (out, in) of the frozen weight W
    "smollm2 down_proj": (576, 1536),
    "smollm2 gate_proj / up_proj": (1536, 576),
    "smollm2 q_proj / o_proj": (576, 576),
    "smollm2 k_proj / v_proj": (192, 576),
    "minilm output.dense": (384, 1536),
    "minilm intermediate.dense": (1536, 384),
    "bert-base output.dense": (768, 3072),
    "bert-base attention": (768, 768),
}

torch.set_num_threads(1)
torch.manual_seed(0)
results = {}
for name, (out, inn) in WEIGHTS.items():
    weight, grad = torch.randn(out, inn), torch.randn(ROWS, out)
    transposed = weight.t().contiguous()
    ways = {
        "onednn_transpose_view": lambda g=grad, w=weight: onednn_linear(g, w.t()),
        "matmul": lambda g=grad, w=weight: torch.matmul(g, w),
        "onednn_contiguous_transpose": lambda g=grad, t=transposed: onednn_linear(g, t),
    }
    seconds = {way: [] for way in ways}
    for run in ways.values():
        run()
    for _ in range(REPEATS):
        for way, run in ways.items():
            started = time.perf_counter()
            run()
            seconds[way].append(time.perf_counter() - started)
    results[name] = {"weight": [out, inn], **{way: statistics.median(s) * 1e3 for way, s in seconds.items()}}
    print(name, {k: round(v, 1) for k, v in results[name].items() if k != "weight"}, flush=True)
record = {"rows": ROWS, "repeats": REPEATS, "threads": 1, "unit": "ms", "load_average": list(os.getloadavg()),
          "products": results, "environment": environment(torch.device("cpu"))}  # fmt: skip
Path(__file__).with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
