"""The compiled module's text, read: HLO instructions and the category of each (library).

`HloModule.parse(compiled.as_text())` gives every instruction's opcode, shape, the instructions
fused into it and its `op_name` metadata (JAX's name stack); `classify_instruction` puts it into
one of `op_profile.CATEGORIES` by the rules `op_profile`'s docstring lists. Used by
`op_profile.ours_profile` and `profile_step.py`.
"""

import dataclasses
import re

from stackgan_jax import steps as steps_lib
from stackgan_jax.models import cpu_conv

# HLO opcodes that only move or re-view data.
DATA_MOVEMENT = frozenset(
    {
        "bitcast",
        "broadcast",
        "concatenate",
        "copy",
        "dynamic-slice",
        "dynamic-update-slice",
        "gather",
        "get-tuple-element",
        "iota",
        "pad",
        "reshape",
        "reverse",
        "slice",
        "transpose",
        "tuple",
    }
)
STRUCTURAL = frozenset({"parameter", "constant"})
CONTROL = frozenset({"while", "conditional", "call", "custom-call"})

_HEADER = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[^\s(]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%?(?P<name>[^\s=]+)\s*=\s*(?P<rest>.*)$")
_CALLS = re.compile(r"\bcalls=%?([^\s,}]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_DIM_LABELS = re.compile(r"dim_labels=(\S+?)->(\w+)")
_LAYOUT = re.compile(r"\{[^{}]*\}")


@dataclasses.dataclass
class Instruction:
    """One HLO instruction of the compiled module's text.

    Attributes:
      name: its name, as trace events report it (`hlo_op`).
      opcode: e.g. `fusion`, `convolution`, `dot`.
      shape: its result type without layouts, e.g. `f32[16,32,32,256]`.
      operands: operand names.
      op_name: the `op_name` metadata (JAX's name stack), or "".
      calls: the fused computation of a fusion, or None.
      attributes: the text after the operands.
    """

    name: str
    opcode: str
    shape: str
    operands: list[str]
    op_name: str
    calls: str | None
    attributes: str


def _closing(text: str, start: int) -> int:
    """Index of the parenthesis closing the one at `text[start]`."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"Unbalanced parentheses: {text[start : start + 80]}")


def _split_top_level(text: str) -> list[str]:
    """`text` split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_instruction(name: str, rest: str) -> Instruction:
    """Parses the right-hand side of `name = TYPE OPCODE(OPERANDS), ATTRIBUTES`."""
    if rest.startswith("("):  # A tuple type.
        end = _closing(rest, 0) + 1
        shape, rest = rest[:end], rest[end:].lstrip()
    else:
        shape, rest = rest.split(" ", 1)
    open_at = rest.index("(")
    close_at = _closing(rest, open_at)
    operands = [op.split()[-1].lstrip("%") for op in _split_top_level(rest[open_at + 1 : close_at])]
    attributes = rest[close_at + 1 :]
    op_name = _OP_NAME.search(attributes)
    calls = _CALLS.search(attributes)
    return Instruction(
        name=name,
        opcode=rest[:open_at].strip(),
        shape=_LAYOUT.sub("", shape),
        operands=operands,
        op_name=op_name.group(1) if op_name else "",
        calls=calls.group(1) if calls else None,
        attributes=attributes,
    )


@dataclasses.dataclass
class HloModule:
    """The instructions of a compiled module's text, by name and by computation.

    Attributes:
      name: the module's name (`hlo_module` in trace events), e.g. `jit_train_step`.
      entry: the name of its entry computation.
      instructions: every instruction, by name (names are unique in a module).
      computations: each computation's instructions, by computation name.
    """

    name: str
    entry: str
    instructions: dict[str, Instruction]
    computations: dict[str, list[Instruction]]

    @classmethod
    def parse(cls, text: str) -> "HloModule":
        """Parses `compiled.as_text()`."""
        module_name, entry, instructions, computations = "", "", {}, {}
        current: list[Instruction] = []
        for line in text.splitlines():
            if line.startswith("HloModule "):
                module_name = line.split()[1].rstrip(",")
            elif match := _INSTRUCTION.match(line):
                instruction = parse_instruction(match["name"], match["rest"])
                instructions[instruction.name] = instruction
                current.append(instruction)
            elif match := _HEADER.match(line):
                current = computations.setdefault(match["name"], [])
                if line.startswith("ENTRY "):
                    entry = match["name"]
        return cls(module_name, entry, instructions, computations)

    def contents(self, instruction: Instruction) -> list[Instruction]:
        """The instruction itself, or for a fusion everything fused into it (recursively)."""
        if instruction.calls is None or instruction.opcode != "fusion":
            return [instruction]
        out = []
        for inner in self.computations.get(instruction.calls, []):
            out.extend(self.contents(inner))
        return out

    def operand_shapes(self, instruction: Instruction) -> str:
        """`A x B -> C` with the operands' and the result's types."""
        shapes = [
            self.instructions[o].shape for o in instruction.operands if o in self.instructions
        ]
        return f"{' x '.join(shapes)} -> {instruction.shape}"


def scope_of(op_name: str) -> str:
    """The profiling name scope `op_name` is in, or ""."""
    segments = op_name.split("/")
    scopes = (cpu_conv.KERNEL_GRAD_SCOPE, cpu_conv.INPUT_GRAD_SCOPE, steps_lib.OPTIMIZER_SCOPE)
    return next((scope for scope in scopes if scope in segments), "")


def classify_instruction(module: HloModule, instruction: Instruction) -> tuple[str, str]:
    """The category of one instruction and a short description (opcode and shapes)."""
    contents = module.contents(instruction)
    opcodes = {i.opcode for i in contents} - STRUCTURAL - {"fusion"}
    heavy = next((i for i in contents if i.opcode == "convolution"), None) or next(
        (i for i in contents if i.opcode == "dot"), None
    )
    if heavy is None:
        kind = f"fusion({','.join(sorted(opcodes))})" if instruction.opcode == "fusion" else None
        description = f"{kind or instruction.opcode} -> {instruction.shape}"
        if scope_of(instruction.op_name) == steps_lib.OPTIMIZER_SCOPE:
            return "optimizer", description
        if instruction.opcode in CONTROL:
            return "other", description
        if opcodes & {"reduce", "reduce-window"}:
            return "reductions", description
        if opcodes <= DATA_MOVEMENT:
            return "copies", description
        return "elementwise", description

    description = f"{heavy.opcode} {module.operand_shapes(heavy)}"
    if instruction is not heavy:
        description = f"{instruction.opcode}: {description}"
    scope = scope_of(heavy.op_name)
    if scope == cpu_conv.KERNEL_GRAD_SCOPE:
        return "conv_kernel_grad", description
    # XLA may rewrite a convolution as a dot; its op_name still ends in the JAX primitive.
    if heavy.opcode == "dot" and not heavy.op_name.endswith("conv_general_dilated"):
        return "other_dot", description
    labels = _DIM_LABELS.search(heavy.attributes)
    if labels and not labels.group(2).startswith("b"):  # XLA's backward-filter convolution.
        return "conv_kernel_grad", description
    if scope == cpu_conv.INPUT_GRAD_SCOPE or "transpose(" in heavy.op_name:
        return "conv_input_grad", description
    return "conv_forward", description
