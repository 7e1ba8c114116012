r"""Our training step against the PyTorch reference on the same CPUs; prints one JSON line.

    python benchmarks/compare_torch.py --torch_python=/tmp/torchvenv/bin/python [--stage2]

Both sides run StackGAN-Pytorch's networks at the birds widths (our `birds_pytorch` config;
`../shared/bench/torch_reference.py` on the other side) with the same maths: float32, synthetic
inputs, D run separately on real and fake images with the real features reused for the wrong
pairs, one Adam step for D then one for G per iteration. Stage-I at batch 64, Stage-II (with
--stage2) at batch 16 around a randomly initialised frozen Stage-I generator.

Threads. Both are pinned to the same `--threads` CPUs (by default the first of those this
process may use) with `os.sched_setaffinity`, set before JAX starts its CPU backend and
inherited by the PyTorch process:
- ours: one XLA CPU device (`jax_num_cpu_devices=1`; any `--xla_force_host_platform_device_count`
  is removed from XLA_FLAGS) with XLA's default multi-threaded Eigen (`--xla_cpu_multi_thread_eigen`
  left at its default, true); XLA sizes its intra-op pool from the CPUs the process may use, so
  pinning gives it `--threads` threads;
- reference: `torch.set_num_threads(threads)`, and OMP_NUM_THREADS / MKL_NUM_THREADS set to the
  same number, in a separate interpreter (--torch_python): PyTorch is never a dependency of this
  project.

Each of `--runs` runs times both sides in turn, alternating which goes first (ABBA), each with 2
untimed warm-up steps then `--steps_*` timed ones; our steps are dispatched back to back and
waited for once, as the reference's are synchronous. The reference's script rebuilds its
networks every run; our step is compiled once per stage (compile time is reported, not timed).
The medians over runs are compared: `ratio` = ours / reference in images per second.
"""

import json
import pathlib
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from absl import app, flags, logging

# `python benchmarks/compare_torch.py` puts benchmarks/ on the path; imports need the repo root.
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from benchmarks import harness, side_by_side  # noqa: E402
from configs import stage1 as stage1_configs  # noqa: E402
from configs import stage2 as stage2_configs  # noqa: E402
from stackgan_jax import models  # noqa: E402

_STAGE2 = flags.DEFINE_bool("stage2", False, "Also compare Stage-II.")
_CONFIG_NAME = flags.DEFINE_string(
    "config_name", "birds_pytorch", "Our config; it must be a 'pytorch'-arch preset."
)
_RUNS = flags.DEFINE_integer("runs", 5, "Alternating runs of each side; medians are compared.")
_STEPS_STAGE1 = flags.DEFINE_integer("steps_stage1", 5, "Timed Stage-I steps per run.")
_STEPS_STAGE2 = flags.DEFINE_integer("steps_stage2", 2, "Timed Stage-II steps per run.")
_BATCH_STAGE1 = flags.DEFINE_integer("batch_size_stage1", 64, "Stage-I batch.")
_BATCH_STAGE2 = flags.DEFINE_integer("batch_size_stage2", 16, "Stage-II batch.")


def compare_stage(stage: int, batch: int, steps: int, runs: int, threads: int) -> dict[str, Any]:
    """Alternating runs of both sides at one stage; medians, ratio and per-run numbers."""
    module = stage1_configs if stage == 1 else stage2_configs
    config = harness.configure(module.get_config(_CONFIG_NAME.value), batch, "float32")
    side_by_side.check_pytorch_arch(config)
    logging.info("Compiling our Stage-%d step at batch %d.", stage, batch)
    bench = harness.build(config)
    ours, reference, torch_record = [], [], {}
    for run in range(runs):
        sides = ("ours", "reference") if run % 2 == 0 else ("reference", "ours")
        for side in sides:
            if side == "ours":
                seconds = harness.time_pipelined(bench, steps, side_by_side.WARMUP)
                ours.append(batch / seconds)
            else:
                torch_record = side_by_side.run_reference(
                    side_by_side.TORCH_PYTHON.value,
                    side_by_side.TORCH_REFERENCE.value,
                    stage,
                    batch,
                    steps,
                    threads,
                )
                reference.append(torch_record["img_per_s"])
        logging.info(
            "Stage-%d run %d: ours %.3f, reference %.3f img/s", stage, run, ours[-1], reference[-1]
        )
    ours_median, reference_median = statistics.median(ours), statistics.median(reference)
    state = bench.state
    return {
        "config": config.name,
        "batch": batch,
        "steps_per_run": steps,
        "warmup_per_run": side_by_side.WARMUP,
        "ours_images_per_sec": ours_median,
        "reference_images_per_sec": reference_median,
        "ratio": ours_median / reference_median,
        "ours_runs": ours,
        "reference_runs": reference,
        "ours_compile_s": bench.compile_s,
        "torch_version": torch_record.get("framework"),
        "params": {
            "ours_generator": models.parameter_count(state.generator.variables),
            "ours_discriminator": models.parameter_count(state.discriminator.variables),
            "reference_generator_trainable": torch_record.get("params_G_trainable"),
            "reference_discriminator": torch_record.get("params_D"),
        },
    }


def main(argv: Sequence[str]) -> None:
    """Pins the CPUs, runs the comparisons and prints the JSON record."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _RUNS.value < 1:
        raise app.UsageError("--runs must be at least 1.")
    threads = side_by_side.THREADS.value
    cpus = side_by_side.pin_cpus(threads, side_by_side.CPUS.value)
    xla_flags = side_by_side.single_cpu_device()
    stages = [(1, _BATCH_STAGE1.value, _STEPS_STAGE1.value)]
    if _STAGE2.value:
        stages.append((2, _BATCH_STAGE2.value, _STEPS_STAGE2.value))
    results = {
        f"stage{stage}": compare_stage(stage, batch, steps, _RUNS.value, threads)
        for stage, batch, steps in stages
    }
    record: dict[str, Any] = {
        "benchmark": "compare_torch",
        "threads": threads,
        "cpus": cpus,
        "xla_flags": xla_flags,
        "jax_device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "runs": _RUNS.value,
        **{f"ratio_{name}": result["ratio"] for name, result in results.items()},
        **results,
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    flags.mark_flag_as_required("torch_python")
    app.run(main)
