"""How fast this machine is today at what a test's worker process pays, so that ``make test``
times taken on different days (or machines) can be compared.

    .venv/bin/python bench/machine_speed.py [--repeats 3]

A worker of the suite starts Python, imports torch, imports torch._dynamo (the first optimizer
does), imports scikit-learn's metrics (the first validation does), then trains a ResNet18 for a
few steps at 16 px, batch 8, on one thread. Each cost is measured in a fresh process, the median
of ``--repeats``, on one CPU (as a pinned test worker is). The reference is the brief's figure for
this 2-core machine at full speed: ``import torch`` in about 1.3 s; the ratio says how much slower
(above 1) or faster today is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

REFERENCE_TORCH_IMPORT_S = 1.3  # the developers' brief, "This machine"

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import torch._dynamo
t2 = time.perf_counter()
import sklearn.metrics
t3 = time.perf_counter()
torch.set_num_threads(1)
torch.manual_seed(0)
sys.path.insert(0, sys.argv[1])
from engine.models import build_model
model = build_model("resnet18", 1)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 2, (8, 1)).float()
def step():
    optimizer.zero_grad()
    torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
    optimizer.step()
for _ in range(3):
    step()
times = []
for _ in range(10):
    s = time.perf_counter(); step(); times.append(time.perf_counter() - s)
times.sort()
print(json.dumps({"torch": t1 - t0, "dynamo": t2 - t1, "sklearn": t3 - t2, "step_ms": 1000 * times[len(times) // 2]}))
"""


def one_probe(root: str) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cpu = sorted(os.sched_getaffinity(0))[0] if hasattr(os, "sched_getaffinity") else None
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    done = subprocess.run([sys.executable, "-c", PROBE, root], capture_output=True, text=True, env=env, preexec_fn=preexec,
                          check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probes = [one_probe(root) for _ in range(args.repeats)]
    median = {key: statistics.median(p[key] for p in probes) for key in probes[0]}
    print(f"import torch                  {median['torch']:6.2f} s")
    print(f"import torch._dynamo          {median['dynamo']:6.2f} s")
    print(f"import sklearn.metrics        {median['sklearn']:6.2f} s")
    print(f"ResNet18 step, 16 px, batch 8 {median['step_ms']:6.0f} ms (one thread)")
    imports = median["torch"] + median["dynamo"] + median["sklearn"]
    print(f"a worker's imports            {imports:6.2f} s")
    print(f"import torch against the reference ({REFERENCE_TORCH_IMPORT_S} s): {median['torch'] / REFERENCE_TORCH_IMPORT_S:.2f}x")


if __name__ == "__main__":
    main()
