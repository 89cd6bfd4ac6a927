"""Call ``ref_prog`` on a candidate's inputs; a reference that does not fit the kernel is its fault.

``ref_prog`` gets the kernel's inputs (every parameter ``out_idx`` does not name) and must return
what the kernel returns (the parameters ``out_idx`` names). When it cannot take those inputs, or
returns another number of outputs or another shape, no candidate can pass: every one would be a
"mismatch". Such a reference raises :class:`ReferenceMismatch` here, inside the ``ref_prog`` stage,
so the pipeline reports it once as the reference's fault, naming ``out_idx`` and the parameters.
Runs in a timing worker (torch is loaded there).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tilelang.jit.kernel import JITKernel


class ReferenceMismatch(TypeError):
    """``ref_prog`` does not fit the kernel's inputs or outputs (a ``TypeError``: a call it cannot take)."""


def _names(kernel: JITKernel) -> list[str]:
    """The kernel's parameters by their buffers' names (``param N`` where the PrimFunc is not at hand)."""
    n = len(kernel.params)
    try:
        func = kernel.prim_func
        names = [func.buffer_map[p].name if p in func.buffer_map else p.name for p in func.params]
    except Exception:  # a kernel loaded from the cache may not carry its PrimFunc
        names = []
    return names if len(names) == n else [f"param {i}" for i in range(n)]


def _shape(kernel: JITKernel, i: int) -> list:
    return [d if isinstance(d, int) else str(d) for d in kernel.params[i].shape]


def _layout(kernel: JITKernel, outs: Sequence[int], out_idx: object) -> str:
    """The kernel's parameters and which of them ``out_idx`` makes outputs, in one sentence."""
    names = _names(kernel)
    ins = [i for i in range(len(names)) if i not in outs]
    inputs = ", ".join(f"{names[i]}{_shape(kernel, i)}" for i in ins) or "none"
    outputs = ", ".join(f"{names[i]}{_shape(kernel, i)}" for i in outs) or "none (the kernel writes its arguments)"
    return f"out_idx={out_idx!r}: the kernel takes {inputs} and returns {outputs}"


def check_call(ref_prog: Callable, inputs: list, kernel: JITKernel, outs: Sequence[int], out_idx: object) -> None:
    """Raise :class:`ReferenceMismatch` when ``ref_prog`` cannot take the kernel's inputs.
    ``outs``: the indices of the kernel's output parameters."""
    try:
        inspect.signature(ref_prog).bind(*inputs)
    except TypeError as exc:
        raise ReferenceMismatch(f"ref_prog cannot take the kernel's {len(inputs)} input(s) ({exc}); "
                                f"{_layout(kernel, outs, out_idx)}. ref_prog gets the inputs in that order: give "
                                f"it one parameter per input, or name the outputs in out_idx") from None
    except ValueError:
        pass  # no signature to read (a builtin): the call itself says what is wrong


def check_outputs(refs: list, kernel: JITKernel, outs: Sequence[int], out_idx: object) -> None:
    """Raise :class:`ReferenceMismatch` when ``ref_prog``'s outputs cannot be the kernel's: fewer
    than the kernel returns, or of another shape. More are allowed: the new values of inputs an
    in-place kernel writes follow its outputs."""
    if not outs:
        return
    if len(refs) < len(outs):
        raise ReferenceMismatch(f"ref_prog returned {len(refs)} output(s) but the kernel returns {len(outs)}; "
                                f"{_layout(kernel, outs, out_idx)}")
    names = _names(kernel)
    for n, (ref, i) in enumerate(zip(refs, outs)):
        got = [int(d) for d in ref.shape] if hasattr(ref, "shape") else None
        want = _shape(kernel, i)
        fixed = all(isinstance(d, int) for d in want)
        if got is not None and fixed and got != want:
            raise ReferenceMismatch(f"ref_prog's output {n} has shape {got} but the kernel's output {names[i]} "
                                    f"has {want}; {_layout(kernel, outs, out_idx)}")
