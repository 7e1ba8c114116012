r"""Where one training step's time goes, per op and per category, ours and the reference's.

    python benchmarks/profile_step.py --torch_python=/tmp/torchvenv/bin/python  # S-II, batch 16
    python benchmarks/profile_step.py --side=ours --config=configs/stage1.py:birds_pytorch \
        --batch_size=64

Defaults: Stage-II `birds_pytorch`, batch 16, float32, both sides pinned to the same 2 CPUs
with 2 threads each, as `compare_torch.py` runs them (`side_by_side.py`). Prints a side-by-side
table (ms per step per category and share of the profiled step, the step times, the name scopes,
the top ops of each side) on stderr and one JSON line on stdout (fields: benchmarks/README.md).
How ops are put into categories: `op_profile.py`.

Ours (`--side=ours|both`). The step is built and compiled as `harness.build` does (the real
`train_step`: replicated state, donated, synthetic batch); after `--warmup` untimed steps,
`--steps` steps are timed (each waited for), then `--steps` more run under
`jax.profiler.trace`, whose `xplane.pb` holds one event per executed HLO instruction.

Reference (`--side=reference|both`). `../shared/bench/torch_reference.py` runs twice in the
PyTorch interpreter `--torch_python` (torch is never a dependency of this project): once as it
is, for its own `sec_per_step` over `--steps` timed iterations, and once through
`torch_profile_driver.py`, which profiles exactly those timed iterations with `torch.profiler`
(CPU) and logs oneDNN's primitives over them.

What the numbers are:
- `categories_ms_per_step`: each op's share of the wall time, summed per category; they add up
  to `busy_ms_per_step`, the time during which some op ran. `coverage` = busy / profiled step:
  the rest is time outside ops (dispatch, Python, the executor's scheduling; on the reference
  Python and autograd bookkeeping between ops).
- `op_ms_per_step`: the ops' own (self) times summed; above `busy_ms_per_step` where XLA's
  executor ran independent ops at once (`concurrency` = their ratio; the reference has none).
- `sec_per_step_plain` vs `sec_per_step_profiled`: the profiler's overhead.

Caveats:
- Both profilers time an op on the thread that runs it; intra-op parallel work (XLA's Eigen and
  XNNPACK pools, PyTorch's OpenMP) is inside that time. Where XLA ran two ops at once on the 2
  cores, each gets half of that time, a split the trace cannot check.
- A fusion is one op: BatchNorm's normalisation and the activation after it, or a reduction
  and the elementwise work fused into it, cannot be separated, and a fusion carries the name
  stack of its root (of its convolution or dot, if it has one). PyTorch's
  `aten::native_batch_norm` computes the statistics and normalises in one op (`elementwise`),
  which are `reductions` + `elementwise` on our side: compare those two rows together.
- The reference's conv backward is split by oneDNN's primitive times, reorders included
  proportionally (see `op_profile.py`); oneDNN's own totals are in `onednn_ms_per_step`.
- Both profilers add a little time per op (thousands of ops per step); with a few steps, noise
  on a shared machine is larger than that.
"""

import glob
import json
import pathlib
import statistics
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

# `python benchmarks/profile_step.py` puts benchmarks/ on the path; imports need the repo root.
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import ml_collections  # noqa: E402

from benchmarks import harness, hlo_ops, op_profile, side_by_side  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    f"{REPO / 'configs' / 'stage2.py'}:birds_pytorch",
    "Training config; the reference side needs a 'pytorch'-arch one at the birds widths.",
    lock_config=True,
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Batch size of both sides.")
_SIDE = flags.DEFINE_enum("side", "both", ["both", "ours", "reference"], "What to profile.")
_STEPS = flags.DEFINE_integer("steps", 2, "Timed steps, then as many profiled ones.")
_WARMUP = flags.DEFINE_integer(
    "warmup",
    side_by_side.WARMUP,
    "Our untimed steps after compiling (the reference always runs its own 2).",
)
_TOP = flags.DEFINE_integer("top", 15, "Individual ops listed per side.")
_TRACE_DIR = flags.DEFINE_string(
    "trace_dir", None, "Keep our jax.profiler trace here (for TensorBoard); default: discarded."
)

TORCH_PROFILE_DRIVER = str(REPO / "benchmarks" / "torch_profile_driver.py")


def profile_ours(
    config: ml_collections.ConfigDict, num_steps: int, warmup: int, trace_dir: str | None
) -> op_profile.SideProfile:
    """Compiles, times and profiles our step."""
    logging.info("Compiling our Stage-%d step.", config.stage)
    bench = harness.build(config)
    plain = harness.time_steps(bench, num_steps, warmup)
    with tempfile.TemporaryDirectory() as scratch:
        directory = trace_dir or scratch
        with jax.profiler.trace(directory):
            profiled = harness.time_steps(bench, num_steps, 0)
        traces = sorted(glob.glob(f"{directory}/**/*.xplane.pb", recursive=True))
        if not traces:
            raise RuntimeError(f"jax.profiler.trace wrote no xplane.pb under {directory}.")
        module = hlo_ops.HloModule.parse(bench.step.as_text())
        events = op_profile.read_events(traces[-1], module.name)
    return op_profile.ours_profile(
        module,
        events,
        num_steps,
        plain_s=statistics.fmean(plain),
        profiled_s=statistics.fmean(profiled),
        extra={"compile_s": bench.compile_s},
    )


def profile_reference(
    config: ml_collections.ConfigDict, num_steps: int, threads: int
) -> op_profile.SideProfile:
    """Times the reference as it is, then profiles it."""
    run = (
        side_by_side.TORCH_PYTHON.value,
        side_by_side.TORCH_REFERENCE.value,
        config.stage,
        config.train.global_batch_size,
        num_steps,
        threads,
    )
    logging.info("Timing the reference.")
    plain = side_by_side.run_reference(*run)
    logging.info("Profiling the reference.")
    profiled = side_by_side.run_reference(
        *run, driver=(TORCH_PROFILE_DRIVER, str(side_by_side.WARMUP))
    )
    return op_profile.reference_profile(plain, profiled)


def main(argv: Sequence[str]) -> None:
    """Pins the CPUs, profiles the chosen sides, prints the report and the JSON record."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _STEPS.value < 1 or _WARMUP.value < 0:
        raise app.UsageError("Need --steps >= 1 and --warmup >= 0.")
    config = harness.configure(_CONFIG.value, _BATCH_SIZE.value, "float32")
    with_reference = _SIDE.value in ("both", "reference")
    if with_reference:
        side_by_side.check_pytorch_arch(config)
        if not side_by_side.TORCH_PYTHON.value:
            raise app.UsageError(f"--side={_SIDE.value} needs --torch_python.")
    threads = side_by_side.THREADS.value
    cpus = side_by_side.pin_cpus(threads, side_by_side.CPUS.value)
    xla_flags = side_by_side.single_cpu_device()
    sides = {}
    if _SIDE.value in ("both", "ours"):
        sides["ours"] = profile_ours(config, _STEPS.value, _WARMUP.value, _TRACE_DIR.value)
    if with_reference:
        sides["reference"] = profile_reference(config, _STEPS.value, threads)
    batch = config.train.global_batch_size
    print(
        f"Stage-{config.stage} {config.name}, batch {batch}, float32, {threads} threads "
        f"on CPUs {cpus}\n{op_profile.report(sides, _TOP.value)}",
        file=sys.stderr,
    )
    record: dict[str, Any] = {
        "benchmark": "profile_step",
        "config_name": config.name,
        "stage": config.stage,
        "arch": config.model.arch,
        "batch": batch,
        "dtype": "float32",
        "threads": threads,
        "cpus": cpus,
        "xla_flags": xla_flags,
        "jax_version": jax.__version__,
        "steps": _STEPS.value,
        "warmup": _WARMUP.value,
        "ratio_plain": (
            sides["reference"].plain_s / sides["ours"].plain_s if len(sides) == 2 else None
        ),
        **{name: side.as_dict(_TOP.value) for name, side in sides.items()},
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    app.run(main)
