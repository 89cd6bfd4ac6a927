"""What a kernel and its reference produced, and whether they agree. Runs in a timing worker.

A kernel's results are its outputs (``out_idx``) followed by the inputs it writes in place: those
the marker's ``inplace`` names, else those it or ``ref_prog`` changed. The reference's results are
what ``ref_prog`` returned: all of them, or only the outputs, followed by the in-place inputs as
``ref_prog`` left them. Both run on copies of the inputs, so neither sees what the other (or a
timing loop) did to them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tvm.tirx import PrimFunc

    from ..param import ProfileArgs

#: How an ``inplace`` mismatch in counts is fixed, for the messages that need it.
INPLACE_HINT = ("name the inputs that are the kernel's results with inplace=[...] (parameter names or "
                "indices); ref_prog then returns the outputs followed by those inputs' new values, or the "
                "outputs alone and changes those inputs in place")


class NothingToCompare(ValueError):
    """``ref_prog`` returned nothing and changed none of its inputs."""


def as_list(out: object) -> list:
    if out is None:
        return []
    return list(out) if isinstance(out, (list, tuple)) else [out]


def copy_inputs(inputs: Sequence) -> list:
    """Fresh copies of the tensors among ``inputs`` (other values as they are)."""
    return [t.clone() if isinstance(t, torch.Tensor) else t for t in inputs]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (NaNs included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    try:
        return torch.equal(a.detach().reshape(-1).view(torch.uint8), b.detach().reshape(-1).view(torch.uint8))
    except RuntimeError:
        return torch.equal(a, b)


def changed(after: Sequence, before: Sequence) -> set[int]:
    """Positions of the tensors of ``after`` that differ from the same position of ``before``."""
    return {i for i, (a, b) in enumerate(zip(after, before))
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and not _same(a, b)}


@dataclass
class Run:
    """One call on copies of the inputs: what it returned, the inputs afterwards, which it changed."""

    returned: list
    inputs: list
    changed: set[int]

    @classmethod
    def after(cls, returned: list, copies: list, inputs: Sequence) -> Run:
        """The run that ``returned`` and left ``copies`` (of ``inputs``); an input it did not change
        is kept as the original (which no one writes: see :func:`restoring`), not as a copy."""
        written = changed(copies, inputs)
        return cls(returned, [c if i in written else x for i, (c, x) in enumerate(zip(copies, inputs))], written)


def run_on_copies(fn: Callable, inputs: Sequence) -> Run:
    copies = copy_inputs(inputs)
    return Run.after(as_list(fn(*copies)), copies, inputs)


def reference(profile: ProfileArgs, inputs: Sequence) -> Run:
    """``ref_prog`` on copies of ``inputs``. One that returns nothing and changes nothing says
    nothing about the kernel: an error (unless nothing is compared with it anyway)."""
    run = run_on_copies(profile.ref_prog, inputs)
    compares = not profile.skip_check and profile.manual_check_prog is None
    if compares and not run.returned and not run.changed:
        raise NothingToCompare(
            "ref_prog returned nothing and changed none of its inputs, so there is nothing to compare the kernel "
            "with: return the expected outputs (return A @ B), or change the inputs the kernel changes in place "
            "as it does (A.add_(B))")
    return run


def param_names(func: PrimFunc) -> list[str]:
    """Every parameter of a PrimFunc by the name its signature gives it (a buffer's name)."""
    buffers = getattr(func, "buffer_map", None) or {}
    return [str(buffers[p].name) if p in buffers else str(p.name) for p in func.params]


def inplace_indices(inplace: Sequence[str | int], names: Sequence[str], outputs: Sequence[int],
                    program: str = "the kernel") -> list[int]:
    """The parameter indices ``inplace`` names, in its order. Raises ``ValueError`` saying which
    item names no input of the kernel (``names``: every parameter; ``outputs``: ``out_idx``'s)."""
    n = len(names)
    listed = f"({', '.join(names)})"
    indices = []
    for item in inplace:
        if isinstance(item, str):
            if item not in names:
                raise ValueError(f"{item!r} is not a parameter of {program} {listed}")
            index = names.index(item)
        else:
            if not -n <= item < n:
                raise ValueError(f"{item} is out of range: {program} has {n} parameters {listed}")
            index = item % n
        if index in outputs:
            raise ValueError(f"{item!r} is an output (out_idx), not an input: an output is compared anyway")
        if index in indices:
            raise ValueError(f"{item!r} names {names[index]!r} a second time")
        indices.append(index)
    return indices


def pair(kernel: Run, ref: Run, inplace: list[int] | None, names: Sequence[str]) -> tuple[list, list, list[str]] | str:
    """(the kernel's results, the reference's, a label for each) to compare, or why they cannot be paired.

    ``inplace``: input positions (None: those changed); ``names``: the inputs' names.
    """
    n_out = len(kernel.returned)
    if inplace is None:
        both = sorted(kernel.changed | ref.changed)
        # Every changed input when the reference returned their new values after the outputs; else
        # those it changed itself (an input only the kernel writes is its scratch space).
        positions = both if len(ref.returned) == n_out + len(both) else sorted(ref.changed)
    else:
        positions = list(inplace)
    got = kernel.returned + [kernel.inputs[p] for p in positions]
    labels = [f"output {i}" for i in range(n_out)] + [f"input {names[p]} (in place)" for p in positions]
    if len(ref.returned) == len(got):
        return got, list(ref.returned), labels
    if len(ref.returned) == n_out:
        return got, ref.returned + [ref.inputs[p] for p in positions], labels
    hint = f": {INPLACE_HINT}" if kernel.changed or ref.changed or len(ref.returned) > n_out else ""
    return (f"kernel returned {n_out} output(s) and changed {_which(kernel.changed, names)}; ref_prog returned "
            f"{len(ref.returned)} and changed {_which(ref.changed, names)}{hint}")


def _which(positions: set[int], names: Sequence[str]) -> str:
    return ", ".join(names[p] for p in sorted(positions)) if positions else "none of its inputs"


def compare(outs: list, refs: list, profile: ProfileArgs, labels: Sequence[str] | None = None) -> str | None:
    """None when outputs match; else a message with the mismatch ratio and the worst element."""
    if len(outs) != len(refs):
        return f"kernel returned {len(outs)} output(s), ref_prog {len(refs)}"
    for n, (out, ref) in enumerate(zip(outs, refs)):
        label = labels[n] if labels else f"output {n}"
        if not isinstance(ref, torch.Tensor):
            ref = torch.as_tensor(ref)
        if tuple(out.shape) != tuple(ref.shape):
            return f"{label}: shape {tuple(out.shape)} but ref_prog gave {tuple(ref.shape)}"
        # Compared where the output lives: copying a large GPU output to the host in float64
        # took longer than timing the candidate.
        o = out.detach().to(torch.float64)
        r = ref.detach().to(o.device, torch.float64)
        diff = (o - r).abs()
        tol = profile.atol + profile.rtol * r.abs()
        finite_ref = torch.isfinite(r)
        bad = (diff > tol) & finite_ref
        bad |= ~torch.isfinite(o) & finite_ref
        bad |= ~finite_ref & ~((o == r) | (torch.isnan(o) & torch.isnan(r)))
        count = int(bad.sum())
        ratio = count / max(1, bad.numel())
        if ratio > profile.max_mismatched_ratio:
            excess = torch.where(bad, torch.nan_to_num(diff - tol, nan=float("inf")), torch.zeros_like(diff))
            worst = tuple(int(i) for i in torch.unravel_index(torch.argmax(excess), excess.shape))
            return (
                f"{label}: {count}/{bad.numel()} elements mismatch ({ratio:.2%} > max_mismatched_ratio "
                f"{profile.max_mismatched_ratio:.2%}); worst at {worst}: got {o[worst].item():.6g}, "
                f"expected {r[worst].item():.6g} (rtol={profile.rtol}, atol={profile.atol})"
            )
    return None


@contextlib.contextmanager
def restoring(inputs: list, positions: set[int] | Sequence[int]) -> Iterator[Callable[[], None] | None]:
    """Keep the tensors of ``inputs`` at ``positions`` as they are now, as Triton's
    ``restore_value`` does: yields a function that puts them back (None when there are none),
    to be called before each timed sample, and puts them back at the end, so what a kernel
    does to its inputs while it is timed never reaches what is checked or timed next."""
    saved = {p: inputs[p].clone() for p in positions if isinstance(inputs[p], torch.Tensor)}

    def restore() -> None:
        for p, value in saved.items():
            inputs[p].copy_(value)

    try:
        yield restore if saved else None
    finally:
        restore()
