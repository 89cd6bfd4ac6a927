"""The target one call compiles for and the devices it times on: this process's share of the GPUs.

``target="auto"`` becomes CUDA with a GPU, else C; a CUDA target is written out with its
device's arch. Under xdist each worker confirms on its own card and times on its share of
them; a ``torch.distributed`` rank confirms on its own. torch and TileLang are imported
inside the functions that need them.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from .model import TargetLike, TargetUnavailable
from .settings import target_kind

if TYPE_CHECKING:
    from .param import CompileArgs


def resolve_target(compile_args: CompileArgs, gpus: str = "all") -> tuple[CompileArgs, list[str]]:
    """``auto`` becomes cuda with a GPU, else c; a target this machine cannot run is a skip.
    Returns the resolved compile args and the devices to time on, the confirming one first
    (``gpus``: the ``tl_gpus`` option, see :func:`gpu_share`).

    A CUDA target is written out in full (with the device's ``arch``): compile workers run
    with CUDA hidden, and a bare ``"cuda"`` would make TVM guess ``sm_50`` there.
    """
    import torch

    target = compile_args.target
    kind = target_kind(target)
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "c"
        target = kind
    if kind in ("cuda", "hip"):
        if not torch.cuda.is_available():
            raise TargetUnavailable(f"target {kind!r} needs a GPU and torch sees none on this machine")
        share = own_share(torch.cuda.current_device(), gpus)
        devices = [f"cuda:{i}" for i in share]
        if kind == "cuda" and torch.version.hip is None:
            target = full_cuda_target(target, share[0])
    else:
        devices = ["cpu"]
    backend = compile_args.execution_backend
    if kind == "c" and backend == "auto":
        backend = "cython"  # the backend that runs CPU kernels from Python
    return replace(compile_args, target=target, execution_backend=backend), devices


def full_cuda_target(target: TargetLike, index: int) -> TargetLike:
    """The CUDA target with the arch of GPU ``index`` filled in when missing (as TileLang's own
    normaliser does for ``"cuda"``), as TVM JSON; a target that names its arch is kept as given."""
    import torch
    from tilelang.contrib import nvcc
    from tvm.target import Target

    arch = f"sm_{nvcc.get_target_arch(torch.cuda.get_device_capability(index))}"
    if isinstance(target, str) and target.strip() == "cuda":
        return str(Target({"kind": "cuda", "arch": arch}))
    spec = dict(target) if isinstance(target, dict) else None
    if spec is None:
        tgt = target if isinstance(target, Target) else Target(target)
        if "arch" in tgt.attrs:
            return target
        spec = dict(tgt.export())
    if "arch" in spec:
        return target
    spec["arch"] = arch
    return str(Target(spec))


def cuda_arch(target: object) -> int | None:
    """The ``sm_XX`` number of a resolved CUDA target, else None."""
    match = re.search(r"sm_(\d+)", str(target)) if "cuda" in str(target) else None
    return int(match.group(1)) if match else None


def _xdist_slot() -> tuple[int, int] | None:
    """(this worker's number, the number of workers) under xdist, else None."""
    worker = xdist_worker_id()
    if worker and worker.startswith("gw") and worker[2:].isdigit():
        return int(worker[2:]), max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    return None


def _own_gpu(count: int, current: int) -> int:
    """The GPU this process confirms winners on: under xdist worker gwN's is GPU N mod count, so
    workers spread over the cards (the per-device timing lock keeps two of them off one card at
    once); in a ``torch.distributed`` job (``LOCAL_RANK`` set) the rank's own card; else the
    current device."""
    slot = _xdist_slot()
    if count > 1 and slot:
        return slot[0] % count
    local_rank = os.environ.get("LOCAL_RANK", "")
    if count > 1 and local_rank.isdigit():
        return int(local_rank) % count
    return current


def own_share(current: int, gpus: str | None) -> list[int]:
    """This process's GPUs (:func:`gpu_share` of the visible ones), its own first."""
    import torch

    count = torch.cuda.device_count()
    return gpu_share(count, _own_gpu(count, current), gpus)


def gpu_share(count: int, own: int, gpus: str | None = "all") -> list[int]:
    """The GPUs one tuning of this process times its candidates on, ``own`` first.

    ``gpus`` (option ``tl_gpus``): ``all`` -- every GPU this process may use: all of them, or
    under xdist with at least as many GPUs as workers, worker N's share (N, N + workers, ...),
    else just its own; ``one`` -- only ``own``; or a comma list of indices. Ranks of one
    ``torch.distributed`` job take all of them: the tuning lock lets one rank tune while the
    others wait for its result.
    """
    if gpus == "one" or count <= 1:
        return [own]
    if gpus not in ("all", "", None):
        picked = [i for i in (int(x) for x in str(gpus).split(",") if x.strip()) if i < count] or [own]
        return sorted(dict.fromkeys(picked), key=lambda i: i != own)
    slot = _xdist_slot()
    if slot and slot[1] > 1:
        worker, workers = slot
        share = [g for g in range(count) if g % workers == worker % workers] if count >= workers else [own]
    else:
        share = list(range(count))
    return sorted(share, key=lambda i: i != own)


def xdist_worker_id() -> str | None:
    """``gw0``... inside an xdist worker, else None."""
    return os.environ.get("PYTEST_XDIST_WORKER")
