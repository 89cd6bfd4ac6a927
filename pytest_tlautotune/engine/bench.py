"""Check and time candidates. Runs inside a timing worker process.

Each job loads a compiled candidate from its artifact directory, feeds it the
same inputs as ``ref_prog``, compares the outputs and times it. A candidate that
crashes the process or hangs only takes this worker down (the pool kills and
replaces it); the parent records the failure against that config.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cloudpickle
import torch

from ..key import sha256_hex
from ..model import Status
from ..param import CompileArgs, ProfileArgs
from ..store.artifacts import load_kernel
from .failures import CHECK, CUDA_FAULT_EXIT, REF_PROG, RUN, SUPPLY_PROG, StageError, describe, reason

if TYPE_CHECKING:
    from tilelang.jit.kernel import JITKernel

#: ``CompileArgs.out_idx``: the outputs the kernel allocates and returns.
OutIdx = list[int] | int | None

L2_FLUSH_BYTES = 256 * 1024 * 1024

# Per-process memo: inputs and reference outputs per input key and kernel signature
# (cache_input_tensors); the few most recent only, so a test sweeping shapes does not pin them all.
_INPUTS: OrderedDict[str, tuple[list, list | None, list[float]]] = OrderedDict()
_INPUTS_KEPT = 4


@dataclass
class BenchJob:
    """One candidate to check and time; pickled into the timing worker."""

    key: str
    kernel_dir: str
    compile_args: CompileArgs
    profile_blob: bytes  # cloudpickle(ProfileArgs): it holds the user's callables
    device: str  # "cpu" or "cuda:N"
    lock_path: str | None = None  # machine-/device-wide timing lock
    stop_above_ms: float | None = None  # early stop: give up when clearly slower than this
    stage_path: str | None = None  # where the job says whose code it is running (see _mark_stages)


# ----------------------------------------------------------------------------- inputs


def _output_indices(kernel: JITKernel, out_idx: OutIdx) -> list[int]:
    """``out_idx`` (None, an int or a list, negatives allowed) as sorted param indices."""
    n = len(kernel.params)
    outs = [] if out_idx is None else ([out_idx] if isinstance(out_idx, int) else list(out_idx))
    return sorted({i % n for i in outs})


def _input_indices(kernel: JITKernel, out_idx: OutIdx) -> list[int]:
    outs = _output_indices(kernel, out_idx)
    return [i for i in range(len(kernel.params)) if i not in outs]


def make_inputs(kernel: JITKernel, profile: ProfileArgs, out_idx: OutIdx, device: str, seed: int = 0) -> list:
    """Inputs for the kernel's non-output params, from supply_prog or supply_type."""
    from tilelang.utils.tensor import get_tensor_supply

    params = [kernel.params[i] for i in _input_indices(kernel, out_idx)]
    if profile.supply_prog is not None:
        tensors = list(profile.supply_prog(params))
    else:
        torch.manual_seed(seed)
        supply = get_tensor_supply(profile.supply_type)
        tensors = [supply(p) for p in params]
    return [t.to(device) if isinstance(t, torch.Tensor) else t for t in tensors]


def _as_list(out: object) -> list:
    if out is None:
        return []
    return list(out) if isinstance(out, (list, tuple)) else [out]


# ----------------------------------------------------------------------------- check


def compare(outs: list, refs: list, profile: ProfileArgs) -> str | None:
    """None when outputs match; else a message with the mismatch ratio and the worst element."""
    if len(outs) != len(refs):
        return f"kernel returned {len(outs)} output(s), ref_prog {len(refs)}"
    for n, (out, ref) in enumerate(zip(outs, refs)):
        if not isinstance(ref, torch.Tensor):
            ref = torch.as_tensor(ref)
        if tuple(out.shape) != tuple(ref.shape):
            return f"output {n}: shape {tuple(out.shape)} but ref_prog gave {tuple(ref.shape)}"
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
                f"output {n}: {count}/{bad.numel()} elements mismatch ({ratio:.2%} > max_mismatched_ratio "
                f"{profile.max_mismatched_ratio:.2%}); worst at {worst}: got {o[worst].item():.6g}, "
                f"expected {r[worst].item():.6g} (rtol={profile.rtol}, atol={profile.atol})"
            )
    return None


# ----------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


#: The shortest sample worth taking, per clock (seconds): shorter calls are batched until one
#: sample lasts this long, as ``timeit.Timer.autorange`` and pytest-benchmark's calibration do.
#: CPU time gets more: it also counts the interpreter's own work between calls, which a longer
#: sample averages out. CUDA events resolve about 0.5 us.
MIN_SAMPLE_S = {"wall": 1e-3, "cpu": 2e-3, "cuda": 5e-5}
MAX_LOOPS = 10_000
_TICK_S: dict[str, float] = {}


def clock_tick_s(clock: str) -> float:
    """The clock's effective resolution: the smallest step two readings in a row can show
    (``time.get_clock_info`` claims 1 ns for both on Linux; reading CPU time costs ~0.25 us)."""
    if clock not in _TICK_S:
        read = time.process_time_ns if clock == "cpu" else time.perf_counter_ns
        info = time.get_clock_info("process_time" if clock == "cpu" else "perf_counter")
        steps = []
        for _ in range(200):
            a = b = read()
            while b == a:
                b = read()
            steps.append(b - a)
        _TICK_S[clock] = max(info.resolution, min(steps) / 1e9)
    return _TICK_S[clock]


def min_sample_s(clock: str) -> float:
    """How long one sample must last on ``clock`` (``wall``, ``cpu`` or ``cuda``): the floor in
    ``MIN_SAMPLE_S``, or 1000 ticks of a coarser clock (0.1% quantisation)."""
    if clock == "cuda":
        return MIN_SAMPLE_S["cuda"]
    return max(MIN_SAMPLE_S[clock], 1000 * clock_tick_s(clock))


def calibrate_loops(fn: Callable[[], object], device: str, clock: str = "wall", backend: str = "event") -> int:
    """Calls per sample so that one sample lasts at least :func:`min_sample_s`.

    1 for anything that already takes that long. Grows 10x at a time until a batch is
    long enough to estimate from, then takes the fastest of three batches (a preempted
    batch must not shrink the count). A call that mostly waits (CPU time far below wall
    time) stops growing once a batch has lasted 20x the target on the wall clock.
    """
    cuda = device.startswith("cuda")
    if cuda and backend == "cupti":
        return 1  # the profiler reports each launch's device time: nothing to batch
    kind = "cuda" if cuda else clock
    target = min_sample_s(kind)
    fn()  # warm
    loops = 1
    while True:
        batch, wall = min(_batch_s(fn, loops, kind) for _ in range(3 if loops > 1 else 1))
        if batch >= target or loops >= MAX_LOOPS or wall >= 20 * target:
            return loops
        if batch >= target / 10:
            return min(MAX_LOOPS, math.ceil(loops * target / batch))
        loops = min(MAX_LOOPS, loops * 10)


def _batch_s(fn: Callable, loops: int, kind: str) -> tuple[float, float]:
    """(seconds on ``kind``'s clock, seconds of wall time) for ``loops`` calls of ``fn``."""
    if kind == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        w0 = time.perf_counter()
        start.record()
        for _ in range(loops):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3, time.perf_counter() - w0
    read = time.process_time if kind == "cpu" else time.perf_counter
    w0, c0 = time.perf_counter(), read()
    for _ in range(loops):
        fn()
    c1, w1 = read(), time.perf_counter()
    return c1 - c0, w1 - w0


def time_fn(fn: Callable[[], object], profile: ProfileArgs, device: str, rep: int | None = None,
            warmup: int | None = None, stop_above_ms: float | None = None,
            clock: str = "wall", loops: int | None = None) -> tuple[list[float], bool]:
    """Run ``fn`` warmup times, then take ``rep`` samples; every sample in ms per call.

    Each sample times ``loops`` calls back to back and divides by ``loops``; by default
    :func:`calibrate_loops` picks it so that a sample outlasts the clock's resolution and
    jitter (a 15 us kernel timed alone is mostly clock). With ``stop_above_ms``, the first
    few samples decide whether the rest are worth taking: returns (samples, stopped_early).
    ``clock="cpu"`` times a CPU device by the process's CPU time instead of wall time
    (CUDA ignores it).
    """
    rep = profile.rep if rep is None else rep
    warmup = profile.warmup if warmup is None else warmup
    HOST_MS.clear()
    for _ in range(warmup):
        fn()
    _sync(device)
    if loops is None:
        loops = calibrate_loops(fn, device, clock, getattr(profile, "backend", "event"))
    probe = min(rep, max(3, rep // 10)) if stop_above_ms else rep
    if device.startswith("cuda"):
        timer = _cuda_timer(profile.backend)
    else:
        timer = _cpu_time_samples if clock == "cpu" else _wall_samples
    samples = timer(fn, probe, device, loops)
    if stop_above_ms and statistics.median(samples) > stop_above_ms:
        return samples, True
    if rep > probe:
        samples += timer(fn, rep - probe, device, loops)
    return samples, False


def _host_samples(clock_ns: Callable[[], int], fn: Callable, n: int, loops: int) -> list[float]:
    """``n`` samples of ``loops`` calls each on ``clock_ns``, in ms per call."""
    samples = []
    for _ in range(n):
        t0 = clock_ns()
        for _ in range(loops):
            fn()
        samples.append((clock_ns() - t0) / 1e6 / loops)
    return samples


def _wall_samples(fn: Callable, n: int, device: str, loops: int = 1) -> list[float]:
    return _host_samples(time.perf_counter_ns, fn, n, loops)


def _cpu_time_samples(fn: Callable, n: int, device: str, loops: int = 1) -> list[float]:
    # CPU time leaves out the time the process waits for a core: on a shared runner that wait,
    # not the kernel, is what differs between runs (see benchmarks/gate_aa.py).
    return _host_samples(time.process_time_ns, fn, n, loops)


def _cuda_timer(backend: str) -> Callable:
    return {"event": _cuda_event_samples, "cudagraph": _cudagraph_samples, "cupti": _cupti_samples}[backend]


def _flush_buffer(device: str) -> torch.Tensor:
    return torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device)


#: Host time per call (ms) of the CUDA event samples of the last :func:`time_fn` call: what the
#: host spent launching. A kernel whose event time is not well above it is launch-bound
#: (``gate.LAUNCH_BOUND``): the GPU waited for the host, and the host's speed is what was timed.
HOST_MS: list[float] = []


def _cuda_event_samples(fn: Callable, n: int, device: str, loops: int = 1) -> list[float]:
    # A batch of several launches (kernels under MIN_SAMPLE_S["cuda"]) starts with a cold L2;
    # its later launches find their inputs there, as the same kernel does in a real loop.
    flush = _flush_buffer(device)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    host = []
    for i in range(n):
        flush.zero_()  # evict the inputs from L2 so every run starts cold
        starts[i].record()
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        host.append((time.perf_counter_ns() - t0) / 1e6 / loops)
        ends[i].record()
    torch.cuda.synchronize()
    HOST_MS.extend(host)
    return [s.elapsed_time(e) / loops for s, e in zip(starts, ends)]


def _cudagraph_samples(fn: Callable, n: int, device: str, loops: int = 1) -> list[float]:
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()  # warm up on the capture stream
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            fn()
    torch.cuda.synchronize()
    return _cuda_event_samples(graph.replay, n, device, loops)


def _cupti_samples(fn: Callable, n: int, device: str, loops: int = 1) -> list[float]:
    from torch.profiler import ProfilerActivity, profile

    flush = _flush_buffer(device)
    marks = []
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(n):
            flush.zero_()
            torch.cuda.synchronize()
            marks.append(i)
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
               and "zero" not in e.name.lower() and "fill" not in e.name.lower()]
    if not kernels or len(kernels) % n:
        # Could not attribute kernel records to calls: fall back to events.
        return _cuda_event_samples(fn, n, device)
    per_call = len(kernels) // n
    times = [getattr(k, "device_time", None) or k.cuda_time for k in kernels]
    return [sum(times[i * per_call:(i + 1) * per_call]) / 1000.0 for i in range(n)]


@contextlib.contextmanager
def _stage(stage: str, passes: type[BaseException] | None = None):
    """Mark an exception raised in the block as ``stage``'s (``passes`` go through unmarked), and
    say in the job's stage file that ``stage`` runs (a job killed in the block is blamed on it)."""
    _say_stage(stage)
    try:
        yield
    except StageError:
        raise
    except Exception as exc:
        if passes is not None and isinstance(exc, passes):
            raise
        raise StageError(stage, exc) from exc
    finally:
        _say_stage("")


#: The running job's stage file and what it says (``BenchJob.stage_path``).
_STAGE_FILE: dict[str, str | None] = {"path": None, "stage": ""}
WAITING_FOR_LOCK = "waiting for the timing lock"


def _mark_stages(job: BenchJob) -> None:
    """Say in ``job.stage_path`` whose code runs from now on: a job that hangs (or crashes) is
    killed without a word, and the parent reads there whether ref_prog or supply_prog was running,
    so that their fault is said once instead of as every candidate's timeout."""
    _STAGE_FILE["path"] = job.stage_path
    _STAGE_FILE["stage"] = ""


def _say_stage(stage: str) -> None:
    _STAGE_FILE["stage"] = stage
    if _STAGE_FILE["path"]:
        with contextlib.suppress(OSError), open(_STAGE_FILE["path"], "w") as f:
            f.write(stage)


@contextlib.contextmanager
def _timing_lock(path: str | None):
    if not path:
        yield
        return
    from filelock import FileLock

    stage = _STAGE_FILE["stage"]
    _say_stage(WAITING_FOR_LOCK)  # a wait for another process's timing is nobody's program hanging
    with FileLock(path):
        _say_stage(stage)
        yield


def _check_ref_devices(refs: list, device: str) -> None:
    """A reference output the check cannot read (a ``meta`` tensor holds no data) is the
    reference's fault: raised as ref_prog's, so it is said once, not as every candidate's."""
    for n, ref in enumerate(refs):
        if isinstance(ref, torch.Tensor) and ref.device.type == "meta":
            raise StageError(REF_PROG, ValueError(
                f"ref_prog returned a tensor on {ref.device} (output {n}), the kernel's outputs are on {device}: "
                f"a meta tensor has no values to compare; return real tensors"))


# ----------------------------------------------------------------------------- jobs


def _prepare(job: BenchJob) -> tuple[JITKernel, ProfileArgs, list, list | None, list[float]]:
    if job.device == "cpu":
        # TileLang's CPU kernels run on one thread; a multi-threaded torch reference would
        # spin-wait against the compile workers on the other cores and time as noise.
        torch.set_num_threads(1)
    profile: ProfileArgs = cloudpickle.loads(job.profile_blob)
    kernel = load_kernel(Path(job.kernel_dir), job.compile_args)
    # The kernel's signature is part of the key: one test may call autotune with several shapes
    # or dtypes, and inputs made for one would fail (or silently mis-time) another.
    memo_key = f"{job.key}:{job.device}:{signature(kernel)}"
    if profile.cache_input_tensors and memo_key in _INPUTS:
        _INPUTS.move_to_end(memo_key)
        inputs, refs, ref_samples = _INPUTS[memo_key]
        return kernel, profile, inputs, refs, ref_samples
    with _stage(SUPPLY_PROG if profile.supply_prog is not None else RUN):
        inputs = make_inputs(kernel, profile, job.compile_args.out_idx, job.device)
    refs, ref_samples = None, []
    if profile.ref_prog is not None:
        with _stage(REF_PROG):
            refs = _as_list(profile.ref_prog(*inputs))
            with _timing_lock(job.lock_path):
                ref_samples, _ = time_fn(lambda: profile.ref_prog(*inputs), profile, job.device)
    if profile.cache_input_tensors:
        _INPUTS[memo_key] = (inputs, refs, ref_samples)
        while len(_INPUTS) > _INPUTS_KEPT:
            _INPUTS.popitem(last=False)
    return kernel, profile, inputs, refs, ref_samples


def signature(kernel: JITKernel) -> str:
    """Every param's shape and dtype: what inputs made for one kernel must match to serve another."""
    return ";".join(f"{[str(d) for d in p.shape]}:{p.dtype}" for p in kernel.params)


def _check_inputs(kernel: JITKernel, profile: ProfileArgs, job: BenchJob, inputs: list, refs: list | None):
    """Fresh inputs (and reference outputs) for checking this one candidate.

    A kernel that writes nothing returns whatever its freshly allocated output held: on
    the CPU that can be a freed buffer with the right answer for the shared inputs (from
    timing ref_prog or an earlier candidate). For inputs no one has seen, no freed buffer
    holds the answer, so such a kernel cannot pass whatever the allocator does.
    """
    if profile.skip_check or profile.ref_prog is None or profile.supply_prog is not None:
        return inputs, refs
    seed = int(sha256_hex(job.kernel_dir)[:8], 16)
    fresh = make_inputs(kernel, profile, job.compile_args.out_idx, job.device, seed=seed)
    with _stage(REF_PROG):
        return fresh, _as_list(profile.ref_prog(*fresh))


def check_and_time(job: BenchJob) -> dict:
    """Check one candidate against ref_prog, then time it. Returns its record fields."""
    t0 = time.perf_counter()
    _mark_stages(job)
    try:
        if job.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(job.device))
        kernel, profile, inputs, refs, ref_samples = _prepare(job)
        check_inputs, check_refs = _check_inputs(kernel, profile, job, inputs, refs)
        _poison_allocator(kernel, job)
        with _stage(RUN):
            outs = _as_list(kernel(*check_inputs))
            _sync(job.device)
        if not profile.skip_check:
            if profile.manual_check_prog is not None:
                with _stage(CHECK, passes=AssertionError):
                    profile.manual_check_prog(outs, check_refs)
            elif check_refs is not None:
                _check_ref_devices(check_refs, job.device)
                error = compare(outs, check_refs, profile)
                if error:
                    return {"status": Status.MISMATCH, "reason": error, "bench_s": time.perf_counter() - t0,
                            "ref_samples": ref_samples}
        with _timing_lock(job.lock_path):
            fn = lambda: kernel(*inputs)  # noqa: E731
            loops = calibrate_loops(fn, job.device, backend=profile.backend)
            samples, stopped = time_fn(fn, profile, job.device, stop_above_ms=job.stop_above_ms, loops=loops)
    except AssertionError as exc:  # manual_check_prog's way of saying no
        return {"status": Status.MISMATCH, "reason": f"manual_check_prog: {exc}", "bench_s": time.perf_counter() - t0}
    except BaseException as exc:  # noqa: BLE001 - TileLang's errors do not pickle: send data back
        if job.device.startswith("cuda") and _poisons_context(exc):
            # An illegal address poisons this process's CUDA context for good: die, so the pool
            # starts a clean worker, and let the parent record the crash on this config.
            sys.stderr.write(f"tlautotune: candidate {job.kernel_dir}: {exc}\n")
            os._exit(CUDA_FAULT_EXIT)
        failure = describe(exc, RUN)
        return {"status": Status.ERROR, "reason": reason(failure), "failure": failure,
                "bench_s": time.perf_counter() - t0}
    return {
        "status": Status.EARLY_STOP if stopped else Status.OK,
        "reason": f"stopped after {len(samples)} samples: median {statistics.median(samples):.4g} ms "
                  f"> {job.stop_above_ms:.4g} ms" if stopped else None,
        "samples": samples,
        "loops": loops,  # calls per sample (short kernels are batched)
        "median_ms": statistics.median(samples),
        "ref_samples": ref_samples,
        "bench_s": time.perf_counter() - t0,
        "device_info": device_info(job.device),
    }


def _poison_allocator(kernel: JITKernel, job: BenchJob) -> None:
    """Leave NaN-filled blocks of each output's size in the allocator's cache.

    The kernel allocates its outputs with ``torch.empty``; without this, a candidate
    that writes nothing (or writes elsewhere) can return a block still holding the
    previous candidate's correct answer, and pass the check.
    """
    for i in _output_indices(kernel, job.compile_args.out_idx):
        param = kernel.params[i]
        with contextlib.suppress(Exception):
            dtype = param.torch_dtype()
            fill = float("nan") if dtype.is_floating_point else -1
            torch.full([int(d) for d in param.shape], fill, dtype=dtype, device=job.device)


def _poisons_context(exc: BaseException) -> bool:
    text = str(exc)
    return any(s in text for s in ("illegal memory access", "illegal address", "CUDA error", "unspecified launch"))


def confirm(jobs: list[BenchJob], rounds: int = 5, with_ref: bool = True, clock: str = "wall") -> dict:
    """Re-time several candidates (and ref_prog) interleaved, on one device, in rounds.

    Interleaving spreads clock and load drift over all of them, so one lucky
    sample cannot decide the winner. Each is batched by one loop count, calibrated
    before the first round. Returns {"samples": {kernel_dir: samples, "ref": samples},
    "loops": {same keys: calls per sample}, "device_info": ...}, or, when something raised,
    {"failure": failures.describe(...)}.
    """
    try:
        return _confirm(jobs, rounds, with_ref, clock)
    except BaseException as exc:  # noqa: BLE001 - TileLang's errors do not pickle: send data back
        if jobs[0].device.startswith("cuda") and _poisons_context(exc):
            os._exit(CUDA_FAULT_EXIT)
        return {"failure": describe(exc, RUN)}


def _confirm(jobs: list[BenchJob], rounds: int, with_ref: bool, clock: str) -> dict:
    job0 = jobs[0]
    _mark_stages(job0)
    if job0.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(job0.device))
    prepared = [_prepare(job) for job in jobs]
    _, profile, inputs, _, _ = prepared[0]
    fns = {job.kernel_dir: (lambda k=kernel, ins=ins: k(*ins)) for job, (kernel, _, ins, _, _) in zip(jobs, prepared)}
    if with_ref and profile.ref_prog is not None:
        fns["ref"] = lambda: profile.ref_prog(*inputs)
    per_round = max(1, profile.rep // rounds)
    warm = max(1, profile.warmup // rounds)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    host: dict[str, list[float]] = {name: [] for name in fns}
    with _timing_lock(job0.lock_path):
        loops = {name: calibrate_loops(fn, job0.device, clock, profile.backend) for name, fn in fns.items()}
        for _ in range(rounds):
            for name, fn in fns.items():
                samples[name] += time_fn(fn, profile, job0.device, rep=per_round, warmup=warm, clock=clock,
                                         loops=loops[name])[0]
                host[name] += HOST_MS
    host_ms = {name: statistics.median(h) for name, h in host.items() if h}
    return {"samples": samples, "loops": loops, "host_ms": host_ms, "device_info": device_info(job0.device)}


def device_info(device: str) -> dict:
    """The device that measured, with its clocks when they can be read."""
    if not device.startswith("cuda"):
        from ..key import _cpu_model

        return {"device": _cpu_model()}
    idx = torch.device(device).index or 0
    info = {"device": torch.cuda.get_device_name(idx), "index": idx}
    with contextlib.suppress(Exception):
        info["clock_mhz"] = torch.cuda.clock_rate(idx)
    return info


def cuda_ready(device: str) -> int:
    """A CUDA timing worker's first job: create its context on ``device`` and draw from the
    default CUDA generator (what ``make_inputs`` does first), so a worker that cannot use its GPU
    fails here, not on a candidate."""
    torch.cuda.set_device(torch.device(device))
    torch.randn(1, device=device).add_(1)
    torch.cuda.synchronize()
    return os.getpid()
