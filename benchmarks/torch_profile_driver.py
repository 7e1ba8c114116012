"""Runs the PyTorch reference's timed iterations under `torch.profiler`; prints one JSON line.

    TORCH_PYTHON benchmarks/torch_profile_driver.py WARMUP THREADS REFERENCE STAGE BATCH STEPS

Run by `profile_step.py` (through `side_by_side.run_reference`) in an interpreter that has torch;
it imports nothing from this project. It sets `torch.set_num_threads(THREADS)` and runs
REFERENCE's `main()` (`torch_reference.py STAGE BATCH STEPS`) unchanged. Iterations are counted
with a global optimiser-step hook (`torch.optim.optimizer.register_optimizer_step_post_hook`):
the reference steps D's Adam and then G's once per iteration, so profiling starts after the
2·WARMUP-th optimiser step (the end of the reference's untimed iterations) and stops after the
2·(WARMUP + STEPS)-th, covering exactly the STEPS iterations the reference times.

Over the same window oneDNN's verbose mode (`torch.backends.mkldnn.verbose`) logs every
primitive it executes with its time; `aten::convolution_backward` computes the input and the
kernel gradient in one op, and those logs are what tell them apart. They are written to file
descriptor 1, which is captured for the run (the reference's own JSON line is read from it too).

The printed record is the reference's (`sec_per_step`, `img_per_s`, `threads`, ... — its timing
now includes the profiler's overhead) plus `profile`:
- `steps`, `seconds`: profiled iterations and the wall time between the two hooks;
- `ops`: per (op name, scope, non-empty input shapes): total self CPU microseconds (`self_us`) and
  `calls`; `scope` is "optimizer" for ops under `Optimizer.step#...` / `Optimizer.zero_grad#...`,
  else "";
- `onednn`: per "primitive/propagation kind" (e.g. "convolution/backward_weights"): total
  milliseconds (`ms`) and `calls` of the executed primitives.
"""

import collections
import contextlib
import ctypes
import json
import os
import runpy
import sys
import tempfile
import time
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import ProfilerActivity, profile

# torch_reference.py steps D's optimiser, then G's, once per iteration.
OPTIMIZERS_PER_ITERATION = 2
OPTIMIZER_SCOPE = "optimizer"
OPTIMIZER_EVENTS = ("Optimizer.step#", "Optimizer.zero_grad#")


class Window:
    """Profiles (and logs oneDNN primitives) between two counts of optimiser steps."""

    def __init__(self, start_after: int, stop_after: int):
        self.start_after, self.stop_after = start_after, stop_after
        self.count = 0
        self.optimizers: set[int] = set()
        self.profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
        self.verbose = contextlib.ExitStack()
        self.started = self.stopped = 0.0

    def hook(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        """Optimiser-step post hook: starts or stops the window at the set counts."""
        self.count += 1
        self.optimizers.add(id(optimizer))
        if self.count == self.start_after:
            self.verbose.enter_context(
                torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON)
            )
            self.profiler.start()
            self.started = time.perf_counter()
        elif self.count == self.stop_after:
            self.stopped = time.perf_counter()
            self.profiler.stop()
            self.verbose.close()


def run_captured(path: str, argv: list[str]) -> list[str]:
    """Runs script `path` as __main__ with `argv`; the lines it (or C code) wrote to fd 1."""
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile(mode="w+") as captured:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(captured.fileno(), 1)
        try:
            sys.argv = [path, *argv]
            runpy.run_path(path, run_name="__main__")
        finally:
            sys.stdout.flush()
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        captured.seek(0)
        return captured.read().splitlines()


def in_optimizer(event: Any) -> bool:
    """Whether a profiler event is, or runs under, an optimiser's step or zero_grad."""
    while event is not None:
        if event.name.startswith(OPTIMIZER_EVENTS):
            return True
        event = event.cpu_parent
    return False


def op_table(profiler: profile) -> list[dict[str, Any]]:
    """Self CPU time and calls per (name, scope, input shapes) over the profiled window."""
    totals: dict[tuple[str, str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for event in profiler.events():
        scope = OPTIMIZER_SCOPE if in_optimizer(event) else ""
        shapes = str([list(shape) for shape in event.input_shapes or () if shape])
        total = totals[event.name, scope, shapes]
        total[0] += event.self_cpu_time_total
        total[1] += 1
    return [
        {"name": name, "scope": scope, "shapes": shapes, "self_us": us, "calls": calls}
        for (name, scope, shapes), (us, calls) in totals.items()
    ]


def onednn_table(lines: list[str]) -> dict[str, dict[str, float]]:
    """Milliseconds and calls per 'primitive/prop_kind' from oneDNN's verbose `exec` lines.

    A line reads `onednn_verbose,[v1,primitive,]exec,cpu,KIND,IMPLEMENTATION,PROP_KIND,...,MS`.
    """
    totals: dict[str, dict[str, float]] = {}
    for line in lines:
        fields = line.split(",")
        if fields[0] != "onednn_verbose" or "exec" not in fields:
            continue
        at = fields.index("exec")
        try:
            ms = float(fields[-1])
            key = f"{fields[at + 2]}/{fields[at + 4]}"
        except (IndexError, ValueError):
            continue
        total = totals.setdefault(key, {"ms": 0.0, "calls": 0})
        total["ms"] += ms
        total["calls"] += 1
    return totals


def main() -> None:
    """Profiles the reference's timed iterations and prints its record with the profile."""
    warmup, threads = int(sys.argv[1]), int(sys.argv[2])
    path, reference_args = sys.argv[3], sys.argv[4:]
    steps = int(reference_args[2])
    torch.set_num_threads(threads)
    window = Window(OPTIMIZERS_PER_ITERATION * warmup, OPTIMIZERS_PER_ITERATION * (warmup + steps))
    register_optimizer_step_post_hook(window.hook)
    lines = run_captured(path, reference_args)
    if window.count != window.stop_after or len(window.optimizers) != OPTIMIZERS_PER_ITERATION:
        raise RuntimeError(
            f"Expected {window.stop_after} steps of {OPTIMIZERS_PER_ITERATION} optimisers, saw "
            f"{window.count} of {len(window.optimizers)}: is the reference's loop as assumed?"
        )
    record = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    record["profile"] = {
        "steps": steps,
        "seconds": window.stopped - window.started,
        "ops": op_table(window.profiler),
        "onednn": onednn_table(lines),
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
