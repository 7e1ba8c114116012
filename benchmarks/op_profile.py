"""Per-op profiles of a training step: categories, XLA trace parsing, PyTorch op names (library).

Used by `profile_step.py`, whose docstring says what runs. Every op, ours or the reference's,
gets one of `CATEGORIES`.

Ours. XLA:CPU's thunk executor records one trace event per executed HLO instruction (thunk),
with its `hlo_op` and `hlo_module`; `read_events` reads them from the `xplane.pb` of a
`jax.profiler.trace` with `jax.profiler.ProfileData` (no TensorFlow, no xprof). An event's self
time is its duration less that of the events nested in it on the same thread (a `while` loop
and its body). The executor runs independent thunks at once where it can, so op times overlap;
`attribute_wall_time` shares each instant out equally among the ops running then, and these
wall shares add up to the time during which any op ran. Each instruction is looked up in the
compiled module's text (`hlo_ops.HloModule.parse(compiled.as_text())`): opcode, shape, the
instructions fused into it and its `op_name` metadata (JAX's name stack), and is put into a
category by `hlo_ops.classify_instruction`:
- `conv_forward`, `conv_input_grad`, `conv_kernel_grad`: a convolution, or a fusion containing
  one (XLA:CPU wraps some in XNNPACK `ynn_fusion`s). The gradients are told apart by the name
  scopes `cpu_conv.conv2d`'s CPU backward pass opens (`cpu_conv.INPUT_GRAD_SCOPE`,
  `cpu_conv.KERNEL_GRAD_SCOPE`), or, for XLA's own transposed convolutions, by `transpose(` in
  the name stack and a kernel-gradient output layout (`dim_labels=...->` not starting with `b`);
- a dot (or a fusion containing one): `conv_kernel_grad` inside `KERNEL_GRAD_SCOPE` (our
  per-tap products), else `other_dot` (dense layers, the up-convolutions' phase kernels);
- `optimizer`: anything else under `steps.OPTIMIZER_SCOPE` (Adam);
- `reductions`: containing a `reduce` (BatchNorm statistics and their gradients, losses);
- `copies`: nothing but data movement (copy, transpose, pad, slice, concatenate, ...);
- `elementwise`: other fusions and arithmetic (BatchNorm normalisation, activations, RNG);
- `other`: control flow (`while`, `call`), custom calls.
Every op also keeps the name scope it ran in (`hlo_ops.scope_of`), so e.g. the slices and transposes
that feed the per-tap kernel-gradient products can be told from other copies.

Reference. `torch_profile_driver.py` reports self CPU time per PyTorch op name (and whether it
ran under an optimiser step); `classify_torch_op` maps names to categories
(`aten::mkldnn_convolution` → `conv_forward`, `aten::mm` → `other_dot`,
`aten::native_batch_norm` and activations → `elementwise`, `aten::sum` / BCE → `reductions`,
`aten::copy_` / `cat` / `upsample_nearest2d` → `copies`, anything under `Optimizer.step#` →
`optimizer`, allocations and autograd bookkeeping → `other`). `aten::convolution_backward`
computes both gradients in one op; `reference_profile` splits its time between
`conv_input_grad` and `conv_kernel_grad` in proportion to the execution times oneDNN's verbose
log gives its `backward_data` and `backward_weights` primitives over the same iterations (the
weight and gradient reorders inside the op are shared out in the same proportion). Backward
convolutions that do not go through oneDNN (`aten::_slow_conv2d_backward`, PyTorch's choice for
some small shapes) are `conv_backward_unsplit`. The reference runs its ops one after another on
one thread (each parallelised inside with OpenMP), so its wall shares are its self times.
"""

import collections
import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

import jax

from benchmarks import hlo_ops

CATEGORIES = {
    "conv_forward": "convolution forward",
    "conv_input_grad": "conv input gradient",
    "conv_kernel_grad": "conv kernel gradient",
    "conv_backward_unsplit": "conv backward, unsplit",
    "other_dot": "other dot / matmul",
    "elementwise": "BatchNorm / elementwise",
    "reductions": "reductions",
    "copies": "copies / transposes",
    "optimizer": "optimizer updates",
    "other": "other",
}

# --- Ours: the trace ----------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Event:
    """One executed instruction in the trace.

    Attributes:
      name: the instruction (`hlo_op`).
      start_ns, duration_ns: when it ran.
      run_id: the execution (step) it belongs to.
      line: the trace line (thread) it ran on.
      self_ns: its duration less that of the events nested in it on its line.
      wall_ns: its share of the wall time (see `attribute_wall_time`).
    """

    name: str
    start_ns: float
    duration_ns: float
    run_id: int
    line: int
    self_ns: float = 0.0
    wall_ns: float = 0.0

    @property
    def end_ns(self) -> float:
        """When it finished."""
        return self.start_ns + self.duration_ns


def read_events(xspace_path: str, module_name: str) -> list[Event]:
    """Events of `module_name`'s instructions in an `xplane.pb`, with self and wall times."""
    profile = jax.profiler.ProfileData.from_file(xspace_path)
    events = []
    lines = (line for plane in profile.planes for line in plane.lines)
    for index, line in enumerate(lines):
        on_line = []
        for raw in line.events:
            stats = dict(raw.stats)
            if "hlo_op" in stats and stats.get("hlo_module") == module_name:
                run_id = stats.get("run_id", 0)
                on_line.append(Event(stats["hlo_op"], raw.start_ns, raw.duration_ns, run_id, index))
        set_self_times(on_line)
        events.extend(on_line)
    attribute_wall_time(events)
    return events


def set_self_times(events: list[Event]) -> None:
    """Self time of events on one line: their duration less that of the events nested in them."""
    events.sort(key=lambda e: (e.start_ns, -e.duration_ns))
    open_events: list[Event] = []
    for event in events:
        event.self_ns = event.duration_ns
        while open_events and open_events[-1].end_ns <= event.start_ns:
            open_events.pop()
        if open_events:
            open_events[-1].self_ns -= event.duration_ns
        open_events.append(event)


def attribute_wall_time(events: list[Event]) -> None:
    """Shares out wall time among the events running at each instant (sets `wall_ns`).

    At each instant, every line with an event running gives it (its innermost one) an equal share
    of that instant, so the wall times add up to the time during which anything ran, however
    many instructions the executor ran at once.
    """
    boundaries = sorted(
        [(e.start_ns, 1, -e.duration_ns, i) for i, e in enumerate(events)]
        + [(e.end_ns, 0, 0.0, i) for i, e in enumerate(events)]
    )
    running: dict[int, list[Event]] = collections.defaultdict(list)
    previous = None
    for time_ns, starts, _, index in boundaries:
        innermost = [stack[-1] for stack in running.values() if stack]
        if innermost and time_ns > previous:
            for event in innermost:
                event.wall_ns += (time_ns - previous) / len(innermost)
        previous = time_ns
        event = events[index]
        if starts:
            running[event.line].append(event)
        else:
            running[event.line].remove(event)


@dataclasses.dataclass
class OpRow:
    """One op's (or op kind's) time per step.

    Attributes:
      op: the HLO instruction, or the PyTorch op name.
      category: its category (a key of CATEGORIES, or one `SideProfile.shares` splits).
      scope: the name scope it ran in (`cpu_conv.KERNEL_GRAD_SCOPE`, `cpu_conv.INPUT_GRAD_SCOPE`,
        `steps.OPTIMIZER_SCOPE`), or "".
      wall_ms: its share of the step's wall time, ms per step.
      op_ms: its own (self) time, ms per step; more than `wall_ms` when it ran beside others.
      calls: executions per step.
      detail: opcode and shapes.
      op_name: JAX's name stack of the instruction (ours), or "".
    """

    op: str
    category: str
    scope: str
    wall_ms: float
    op_ms: float
    calls: float
    detail: str
    op_name: str = ""


@dataclasses.dataclass
class SideProfile:
    """One side's profile, per step.

    Attributes:
      plain_s: seconds per step without the profiler.
      profiled_s: seconds per step under the profiler.
      rows: every op's times (`OpRow`).
      shares: how a row category is shared out among CATEGORIES (default: all to itself).
      extra: side-specific fields for the JSON record.
    """

    plain_s: float
    profiled_s: float
    rows: list[OpRow]
    shares: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def categories(self, rows: Iterable[OpRow] | None = None) -> dict[str, float]:
        """Wall ms per step per category, of `rows` (default: all)."""
        totals = dict.fromkeys(CATEGORIES, 0.0)
        for row in self.rows if rows is None else rows:
            for category, share in self.shares.get(row.category, {row.category: 1.0}).items():
                totals[category] += row.wall_ms * share
        return totals

    def scopes(self) -> dict[str, dict[str, float]]:
        """Wall ms per step per category within each name scope that ran."""
        names = sorted({row.scope for row in self.rows} - {""})
        return {
            name: {
                k: v
                for k, v in self.categories(r for r in self.rows if r.scope == name).items()
                if v
            }
            for name in names
        }

    @property
    def busy_ms(self) -> float:
        """Time during which an op ran, ms per step."""
        return sum(row.wall_ms for row in self.rows)

    @property
    def op_ms(self) -> float:
        """Sum of the ops' own times, ms per step."""
        return sum(row.op_ms for row in self.rows)

    def top(self, count: int) -> list[OpRow]:
        """The `count` ops with the most wall time."""
        return sorted(self.rows, key=lambda r: -r.wall_ms)[:count]

    def as_dict(self, top: int) -> dict[str, Any]:
        """The JSON form, with the `top` largest ops."""
        return {
            "sec_per_step_plain": self.plain_s,
            "sec_per_step_profiled": self.profiled_s,
            "profiler_overhead": self.profiled_s / self.plain_s - 1,
            "busy_ms_per_step": self.busy_ms,
            "op_ms_per_step": self.op_ms,
            "coverage": self.busy_ms / (1e3 * self.profiled_s),
            "concurrency": self.op_ms / self.busy_ms,
            "categories_ms_per_step": self.categories(),
            "scopes_ms_per_step": self.scopes(),
            "top_ops": [dataclasses.asdict(row) for row in self.top(top)],
            **self.extra,
        }


def ours_profile(
    module: hlo_ops.HloModule,
    events: list[Event],
    num_steps: int,
    plain_s: float,
    profiled_s: float,
    extra: dict[str, Any],
) -> SideProfile:
    """Our side's profile from the trace events of `num_steps` executions of `module`.

    Args:
      module: the compiled step's module.
      events: `read_events` of the trace.
      num_steps: the executions traced.
      plain_s: seconds per step without the profiler.
      profiled_s: seconds per step under the profiler.
      extra: fields for the JSON record.

    Raises:
      RuntimeError: the trace does not hold `num_steps` executions of the module.
    """
    runs = {event.run_id for event in events}
    if len(runs) != num_steps:
        raise RuntimeError(f"The trace holds {len(runs)} runs of {module.name}, not {num_steps}.")
    per_op: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for event in events:
        totals = per_op[event.name]
        totals[0] += event.wall_ns / 1e6 / num_steps
        totals[1] += event.self_ns / 1e6 / num_steps
        totals[2] += 1 / num_steps
    rows = []
    for name, (wall_ms, op_ms, calls) in per_op.items():
        instruction = module.instructions.get(name)
        if instruction is None:
            category, detail, op_name = "other", "not in the module text", ""
        else:
            category, detail = hlo_ops.classify_instruction(module, instruction)
            # Without the leading `jit(train_step)/` every op of the step has.
            op_name = re.sub(r"^jit\([^/]*\)/", "", instruction.op_name)
        rows.append(
            OpRow(name, category, hlo_ops.scope_of(op_name), wall_ms, op_ms, calls, detail, op_name)
        )
    extra = {"hlo_module": module.name, "executed_instructions": len(per_op), **extra}
    return SideProfile(plain_s, profiled_s, rows, extra=extra)


# --- The reference ------------------------------------------------------------------------------

TORCH_CONV_FORWARD = frozenset(
    {
        "aten::conv2d",
        "aten::convolution",
        "aten::_convolution",
        "aten::mkldnn_convolution",
        "aten::_slow_conv2d_forward",
        "aten::thnn_conv2d",
        "aten::_nnpack_spatial_convolution",
    }
)
TORCH_CONV_BACKWARD_ONEDNN = frozenset({"aten::convolution_backward"})
TORCH_CONV_BACKWARD_OTHER = frozenset({"aten::_slow_conv2d_backward", "aten::thnn_conv2d_backward"})
TORCH_DOT = frozenset(
    {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::addmv"}
)
TORCH_REDUCTIONS = frozenset(
    {
        "aten::sum",
        "aten::mean",
        "aten::binary_cross_entropy",
        "aten::binary_cross_entropy_backward",
    }
)
TORCH_COPIES = frozenset(
    {
        "aten::copy_",
        "aten::_to_copy",
        "aten::to",
        "aten::clone",
        "aten::contiguous",
        "aten::cat",
        "aten::stack",
        "aten::upsample_nearest2d",
        "aten::upsample_nearest2d_backward",
        "aten::to_mkldnn",
        "aten::to_dense",
        "aten::expand",
        "aten::view",
        "aten::reshape",
        "aten::_reshape_alias",
        "aten::as_strided",
        "aten::as_strided_",
        "aten::slice",
        "aten::select",
        "aten::narrow",
        "aten::permute",
        "aten::transpose",
        "aten::t",
        "aten::unsqueeze",
        "aten::squeeze",
        "aten::detach",
        "aten::detach_",
        "aten::alias",
    }
)
TORCH_ALLOCATION = frozenset(
    {"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::resize_", "aten::zeros"}
)


def classify_torch_op(name: str, scope: str) -> str:
    """The category of a PyTorch profiler op (before splitting the oneDNN conv backward)."""
    if scope == "optimizer":
        return "optimizer"
    if name in TORCH_CONV_FORWARD:
        return "conv_forward"
    if name in TORCH_CONV_BACKWARD_ONEDNN:
        return "conv_backward_onednn"
    if name in TORCH_CONV_BACKWARD_OTHER:
        return "conv_backward_unsplit"
    if name in TORCH_DOT:
        return "other_dot"
    if name in TORCH_REDUCTIONS:
        return "reductions"
    if name in TORCH_COPIES:
        return "copies"
    if name in TORCH_ALLOCATION or not name.startswith("aten::"):
        return "other"
    return "elementwise"


def reference_profile(plain: dict[str, Any], profiled: dict[str, Any]) -> SideProfile:
    """The reference's profile from a plain run's record and a `torch_profile_driver.py` one."""
    profile = profiled["profile"]
    steps = profile["steps"]
    onednn = {k: v["ms"] / steps for k, v in profile["onednn"].items()}
    backward_data = onednn.get("convolution/backward_data", 0.0)
    backward_weights = onednn.get("convolution/backward_weights", 0.0)
    backward = backward_data + backward_weights
    split = backward_weights / backward if backward else None
    shares = {
        "conv_backward_onednn": (
            {"conv_kernel_grad": split, "conv_input_grad": 1 - split}
            if split is not None
            else {"conv_backward_unsplit": 1.0}
        )
    }
    rows = []
    for op in profile["ops"]:
        ms = op["self_us"] / 1e3 / steps
        category = classify_torch_op(op["name"], op["scope"])
        rows.append(
            OpRow(op["name"], category, op["scope"], ms, ms, op["calls"] / steps, op["shapes"])
        )
    return SideProfile(
        plain_s=plain["sec_per_step"],
        profiled_s=profile["seconds"] / steps,
        rows=rows,
        shares=shares,
        extra={
            "torch_version": plain.get("framework"),
            "onednn_ms_per_step": onednn,
            "conv_backward_kernel_share": split,
        },
    )


# --- Report -------------------------------------------------------------------------------------


def _share(ms: float, step_s: float) -> str:
    return f"{ms:9.1f} ({ms / 10 / step_s:4.1f}%)"


def report(sides: dict[str, SideProfile], top: int) -> str:
    """The side-by-side category table, name scopes and each side's top ops, as text."""
    names = list(sides)
    categories = {name: side.categories() for name, side in sides.items()}
    lines = [f"{'ms / step (share of step)':28}" + "".join(f"{name:>22}" for name in names)]

    def row(label: str, values: Sequence[str]) -> None:
        lines.append(f"{label:28}" + "".join(f"{v:>22}" for v in values))

    for key, label in CATEGORIES.items():
        if any(categories[name][key] for name in names):
            row(label, [_share(categories[n][key], sides[n].profiled_s) for n in names])
    row("ops, wall (busy)", [_share(sides[n].busy_ms, sides[n].profiled_s) for n in names])
    row("step, profiled", [f"{1e3 * sides[n].profiled_s:9.1f}" for n in names])
    row("step, plain", [f"{1e3 * sides[n].plain_s:9.1f}" for n in names])
    row("ops, own time (sum)", [f"{sides[n].op_ms:9.1f}" for n in names])
    for name, side in sides.items():
        for scope, totals in side.scopes().items():
            parts = ", ".join(f"{CATEGORIES[k]} {v:.1f}" for k, v in totals.items())
            lines.append(f"{name}, scope {scope}: {sum(totals.values()):.1f} ms ({parts})")
    for name, side in sides.items():
        lines.append(f"\nTop ops, {name}: wall ms / step, own ms / step, calls / step")
        for op in side.top(top):
            lines.append(
                f"{op.wall_ms:9.1f} {op.op_ms:9.1f} {op.calls:6.1f}  {op.category:21} {op.op}  "
                f"{op.detail}  {op.op_name}".rstrip()
            )
    return "\n".join(lines)
