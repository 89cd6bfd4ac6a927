"""Check and time candidates. Runs inside a timing worker process.

Each job loads a compiled candidate from its artifact directory, runs it and ``ref_prog`` on
copies of the same inputs, compares their results (``check.py``: outputs and in-place inputs)
and times it on inputs that are put back before each sample. A candidate that crashes the
process or hangs only takes this worker down (the pool kills and replaces it); the parent
records the failure against that config.
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

from ..model import Status
from ..param import CompileArgs, ProfileArgs
from ..store.artifacts import load_kernel
from .check import (
    Run,
    as_list,
    compare,
    copy_inputs,
    inplace_indices,
    pair,
    param_names,
    reference,
    restoring,
    run_on_copies,
)
from .failures import CHECK, CUDA_FAULT_EXIT, REF_PROG, RUN, SUPPLY_PROG, StageError, describe, reason
from .key import sha256_hex
from .reference import check_call, check_outputs

if TYPE_CHECKING:
    from tilelang.jit.kernel import JITKernel

#: ``CompileArgs.out_idx``: the outputs the kernel allocates and returns.
OutIdx = list[int] | int | None

L2_FLUSH_BYTES = 256 * 1024 * 1024

# Per-process memo: inputs and the reference's run per input key and kernel signature
# (cache_input_tensors); the few most recent only, so a test sweeping shapes does not pin them all.
# Timing puts the inputs back as they were (check.restoring), so they stay as supplied.
_INPUTS: OrderedDict[str, tuple[list, Run | None, list[float]]] = OrderedDict()
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
    #: The test process's ``sys.path`` when the job was made: the worker started earlier (as
    #: collection began), and a test may have put the folder of the module that defines its
    #: ``ref_prog`` on the path since (``monkeypatch.syspath_prepend``, a helper that imports an
    #: example from its folder). cloudpickle ships such a function by reference to its module.
    sys_path: tuple[str, ...] = ()


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


def input_names(kernel: JITKernel, out_idx: OutIdx) -> list[str]:
    """The names of the kernel's inputs (its non-output parameters), in call order."""
    names = param_names(kernel.prim_func)
    return [names[i] for i in _input_indices(kernel, out_idx)]


def inplace_positions(kernel: JITKernel, profile: ProfileArgs, out_idx: OutIdx) -> list[int] | None:
    """The positions among the kernel's inputs that ``profile.inplace`` names (None when unset)."""
    if profile.inplace is None:
        return None
    indices = inplace_indices(profile.inplace, param_names(kernel.prim_func), _output_indices(kernel, out_idx))
    inputs = _input_indices(kernel, out_idx)
    return [inputs.index(i) for i in indices]


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


#: What runs before each sample, outside its time (see :func:`time_fn`).
Before = Callable[[], None] | None


def time_fn(fn: Callable[[], object], profile: ProfileArgs, device: str, rep: int | None = None,
            warmup: int | None = None, stop_above_ms: float | None = None,
            clock: str = "wall", loops: int | None = None, before: Before = None) -> tuple[list[float], bool]:
    """Run ``fn`` warmup times, then take ``rep`` samples; every sample in ms per call.

    Each sample times ``loops`` calls back to back and divides by ``loops``; by default
    :func:`calibrate_loops` picks it so that a sample outlasts the clock's resolution and
    jitter (a 15 us kernel timed alone is mostly clock). With ``stop_above_ms``, the first
    few samples decide whether the rest are worth taking: returns (samples, stopped_early).
    ``clock="cpu"`` times a CPU device by the process's CPU time instead of wall time
    (CUDA ignores it). ``before`` runs before each sample, outside its time (putting back the
    inputs a kernel writes, ``check.restoring``).
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
    samples = timer(fn, probe, device, loops, before)
    if stop_above_ms and statistics.median(samples) > stop_above_ms:
        return samples, True
    if rep > probe:
        samples += timer(fn, rep - probe, device, loops, before)
    return samples, False


def _host_samples(clock_ns: Callable[[], int], fn: Callable, n: int, loops: int, before: Before = None) -> list[float]:
    """``n`` samples of ``loops`` calls each on ``clock_ns``, in ms per call."""
    samples = []
    for _ in range(n):
        if before is not None:
            before()
        t0 = clock_ns()
        for _ in range(loops):
            fn()
        samples.append((clock_ns() - t0) / 1e6 / loops)
    return samples


def _wall_samples(fn: Callable, n: int, device: str, loops: int = 1, before: Before = None) -> list[float]:
    return _host_samples(time.perf_counter_ns, fn, n, loops, before)


def _cpu_time_samples(fn: Callable, n: int, device: str, loops: int = 1, before: Before = None) -> list[float]:
    # CPU time leaves out the time the process waits for a core: on a shared runner that wait,
    # not the kernel, is what differs between runs (see benchmarks/gate_aa.py).
    return _host_samples(time.process_time_ns, fn, n, loops, before)


def _cuda_timer(backend: str) -> Callable:
    return {"event": _cuda_event_samples, "cudagraph": _cudagraph_samples, "cupti": _cupti_samples}[backend]


def _flush_buffer(device: str) -> torch.Tensor:
    return torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device)


#: Host time per call (ms) of the CUDA event samples of the last :func:`time_fn` call: what the
#: host spent launching. A kernel whose event time is not well above it is launch-bound
#: (``gate.LAUNCH_BOUND``): the GPU waited for the host, and the host's speed is what was timed.
HOST_MS: list[float] = []


def _cuda_event_samples(fn: Callable, n: int, device: str, loops: int = 1, before: Before = None) -> list[float]:
    # A batch of several launches (kernels under MIN_SAMPLE_S["cuda"]) starts with a cold L2;
    # its later launches find their inputs there, as the same kernel does in a real loop.
    flush = _flush_buffer(device)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    host = []
    for i in range(n):
        if before is not None:
            before()  # queued before the start event: not timed
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


def _cudagraph_samples(fn: Callable, n: int, device: str, loops: int = 1, before: Before = None) -> list[float]:
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()  # warm up on the capture stream
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            fn()
    torch.cuda.synchronize()
    return _cuda_event_samples(graph.replay, n, device, loops, before)


def _cupti_samples(fn: Callable, n: int, device: str, loops: int = 1, before: Before = None) -> list[float]:
    from torch.profiler import ProfilerActivity, profile

    flush = _flush_buffer(device)
    marks = []
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(n):
            if before is not None:
                before()
            flush.zero_()
            torch.cuda.synchronize()
            marks.append(i)
            fn()
        torch.cuda.synchronize()
    skip = ("zero", "fill", "memcpy", "copy")  # the L2 flush and putting back the inputs
    kernels = [e for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
               and not any(word in e.name.lower() for word in skip)]
    if not kernels or len(kernels) % n:
        # Could not attribute kernel records to calls: fall back to events.
        return _cuda_event_samples(fn, n, device, before=before)
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


def _load_profile(job: BenchJob) -> ProfileArgs:
    """The job's profile settings, unpickled with the test process's ``sys.path`` as it was when
    the job was made, so the modules its callables live in import here as they did there."""
    if job.sys_path:
        sys.path[:] = job.sys_path
    return cloudpickle.loads(job.profile_blob)


def _prepare(job: BenchJob) -> tuple[JITKernel, ProfileArgs, list, Run | None, list[float]]:
    """The kernel, the profile settings, the inputs to time on, ``ref_prog``'s run on a copy of
    them and its samples (remembered per input key with ``cache_input_tensors``)."""
    if job.device == "cpu":
        # TileLang's CPU kernels run on one thread; a multi-threaded torch reference would
        # spin-wait against the compile workers on the other cores and time as noise.
        torch.set_num_threads(1)
    profile = _load_profile(job)
    kernel = load_kernel(Path(job.kernel_dir), job.compile_args)
    # The kernel's signature is part of the key: one test may call autotune with several shapes
    # or dtypes, and inputs made for one would fail (or silently mis-time) another.
    memo_key = f"{job.key}:{job.device}:{signature(kernel)}"
    if profile.cache_input_tensors and memo_key in _INPUTS:
        _INPUTS.move_to_end(memo_key)
        inputs, ref, ref_samples = _INPUTS[memo_key]
        return kernel, profile, inputs, ref, ref_samples
    with _stage(SUPPLY_PROG if profile.supply_prog is not None else RUN):
        inputs = make_inputs(kernel, profile, job.compile_args.out_idx, job.device)
    ref, ref_samples = None, []
    if profile.ref_prog is not None:
        with _stage(REF_PROG):
            ref = _reference(profile, inputs, kernel, job)
            if _timed_ref(profile):
                with _timing_lock(job.lock_path), restoring(inputs, ref.changed) as before:
                    ref_samples, _ = time_fn(lambda: profile.ref_prog(*inputs), profile, job.device, before=before)
    if profile.cache_input_tensors:
        _INPUTS[memo_key] = (inputs, ref, ref_samples)
        while len(_INPUTS) > _INPUTS_KEPT:
            _INPUTS.popitem(last=False)
    return kernel, profile, inputs, ref, ref_samples


def _timed_ref(profile: ProfileArgs) -> bool:
    """A reference config's kernel (``reference_config.ReferenceKernel``) checks, but is no ref_prog to time."""
    return profile.ref_prog is not None and not getattr(profile.ref_prog, "tl_untimed", False)


def signature(kernel: JITKernel) -> str:
    """Every param's shape and dtype: what inputs made for one kernel must match to serve another."""
    return ";".join(f"{[str(d) for d in p.shape]}:{p.dtype}" for p in kernel.params)


def _check_inputs(kernel: JITKernel, profile: ProfileArgs, job: BenchJob, inputs: list,
                  ref: Run | None) -> tuple[list, Run | None]:
    """Fresh inputs (and ``ref_prog``'s run on them) for checking this one candidate.

    A kernel that writes nothing returns whatever its freshly allocated output held: on
    the CPU that can be a freed buffer with the right answer for the shared inputs (from
    timing ref_prog or an earlier candidate). For inputs no one has seen, no freed buffer
    holds the answer, so such a kernel cannot pass whatever the allocator does.
    """
    if profile.skip_check or profile.ref_prog is None or profile.supply_prog is not None:
        return inputs, ref
    fresh = make_inputs(kernel, profile, job.compile_args.out_idx, job.device, seed=check_seed(job.kernel_dir))
    with _stage(REF_PROG):
        return fresh, _reference(profile, fresh, kernel, job)


def _reference(profile: ProfileArgs, inputs: list, kernel: JITKernel, job: BenchJob) -> Run:
    """ref_prog run on copies of ``inputs``; a reference that does not fit the kernel raises
    (``reference.py``), one that returns and changes nothing too (``check.reference``)."""
    out_idx = job.compile_args.out_idx
    outs = _output_indices(kernel, out_idx)
    check_call(profile.ref_prog, inputs, kernel, outs, out_idx)
    run = reference(profile, inputs)
    if not profile.skip_check and profile.manual_check_prog is None:
        check_outputs(run.returned, kernel, outs, out_idx)
        _check_ref_devices(run.returned, job.device)
    return run


def _check(kernel: JITKernel, profile: ProfileArgs, job: BenchJob, run: Run,
           ref: Run | None) -> tuple[str | None, list]:
    """(why the candidate's results disagree with ``ref_prog``'s or None, what was compared)."""
    if profile.skip_check or (ref is None and profile.manual_check_prog is None):
        return None, []
    out_idx = job.compile_args.out_idx
    paired = pair(run, ref, inplace_positions(kernel, profile, out_idx), input_names(kernel, out_idx)) \
        if ref is not None else None
    if profile.manual_check_prog is not None:
        outs, refs = paired[:2] if isinstance(paired, tuple) else (run.returned, ref and ref.returned)
        with _stage(CHECK, passes=AssertionError):
            profile.manual_check_prog(outs, refs)
        return None, ["manual_check_prog"]
    if isinstance(paired, str):
        return paired, []
    got, want, labels = paired
    return compare(got, want, profile, labels), labels


def check_seed(kernel_dir: str) -> int:
    """The seed of the inputs a candidate is checked on (those ``_check_inputs`` makes)."""
    return int(sha256_hex(kernel_dir)[:8], 16)


def check_and_time(job: BenchJob) -> dict:
    """Check one candidate against ref_prog, then time it. Returns its record fields; ``compared``
    says what the check compared (empty: nothing, the candidate is unchecked)."""
    t0 = time.perf_counter()
    _mark_stages(job)
    try:
        if job.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(job.device))
        kernel, profile, inputs, ref, ref_samples = _prepare(job)
        check_inputs, check_ref = _check_inputs(kernel, profile, job, inputs, ref)
        copies = copy_inputs(check_inputs)
        _poison_allocator(kernel, job)
        with _stage(RUN):
            returned = as_list(kernel(*copies))
            _sync(job.device)
        run = Run.after(returned, copies, check_inputs)
        error, compared = _check(kernel, profile, job, run, check_ref)
        if error:
            return {"status": Status.MISMATCH, "reason": error, "compared": compared,
                    "bench_s": time.perf_counter() - t0, "ref_samples": ref_samples}
        # The inputs it writes are put back before each sample and at the end (the next
        # candidate is timed on the same inputs).
        written = run.changed | set(inplace_positions(kernel, profile, job.compile_args.out_idx) or ())
        with _timing_lock(job.lock_path), restoring(inputs, written) as before:
            fn = lambda: kernel(*inputs)  # noqa: E731
            loops = calibrate_loops(fn, job.device, backend=profile.backend)
            samples, stopped = time_fn(fn, profile, job.device, stop_above_ms=job.stop_above_ms, loops=loops,
                                       before=before)
    except AssertionError as exc:  # manual_check_prog's way of saying no
        return {"status": Status.MISMATCH, "reason": f"manual_check_prog: {exc}", "compared": ["manual_check_prog"],
                "bench_s": time.perf_counter() - t0}
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
        "compared": compared,
        "samples": samples,
        "loops": loops,  # calls per sample (short kernels are batched)
        "median_ms": statistics.median(samples),
        "ref_samples": ref_samples,
        "bench_s": time.perf_counter() - t0,
        "device_info": device_info(job.device),
    }


def check_once(job: BenchJob, checked_as: str) -> dict:
    """Check a stored kernel against today's reference, nothing timed: one ref_prog call and one
    kernel call on inputs made now, compared as a candidate's check compares.

    A hit runs this before the test gets the kernel: a reference whose behaviour comes from data
    (a file, a module's dict, an object's attribute) may have changed while every key stayed.
    The inputs are drawn as those the winner passed on when it was tuned as the candidate at
    ``checked_as`` (its kernel directory then; supply_prog's or seed 0's where its check used
    the timing inputs): an unchanged reference gives the verdict it gave, never a tolerance's
    coin flip on other random inputs, which would tune the key again on a later run.
    Returns ``{"status": ok | mismatch | error, "reason": ..., "failure": ...}``.
    """
    _mark_stages(job)
    try:
        if job.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(job.device))
        profile = _load_profile(job)
        kernel = load_kernel(Path(job.kernel_dir), job.compile_args)
        fresh = profile.ref_prog is not None and profile.supply_prog is None  # as _check_inputs
        seed = check_seed(checked_as) if fresh else 0
        with _stage(SUPPLY_PROG if profile.supply_prog is not None else RUN):
            inputs = make_inputs(kernel, profile, job.compile_args.out_idx, job.device, seed=seed)
        ref = None
        if profile.ref_prog is not None:
            with _stage(REF_PROG):
                ref = _reference(profile, inputs, kernel, job)
        _poison_allocator(kernel, job)
        copies = copy_inputs(inputs)
        with _stage(RUN):
            returned = as_list(kernel(*copies))
            _sync(job.device)
        error, _ = _check(kernel, profile, job, Run.after(returned, copies, inputs), ref)
        if error:
            return {"status": Status.MISMATCH, "reason": error}
    except AssertionError as exc:  # manual_check_prog's way of saying no
        return {"status": Status.MISMATCH, "reason": f"manual_check_prog: {exc}"}
    except BaseException as exc:  # noqa: BLE001 - TileLang's errors do not pickle: send data back
        if job.device.startswith("cuda") and _poisons_context(exc):
            os._exit(CUDA_FAULT_EXIT)
        failure = describe(exc, RUN)
        return {"status": Status.ERROR, "reason": reason(failure), "failure": failure}
    return {"status": Status.OK, "reason": None}


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
    _, profile, inputs, ref, _ = prepared[0]
    fns = {job.kernel_dir: (lambda k=kernel, ins=ins: k(*ins)) for job, (kernel, _, ins, _, _) in zip(jobs, prepared)}
    uses = {job.kernel_dir: ins for job, (_, _, ins, _, _) in zip(jobs, prepared)}
    # What each writes of its inputs (one call on copies): put back before each sample, since the
    # candidates and ref_prog take turns on the same inputs.
    written: dict[int, set[int]] = {}
    for kernel, _, ins, _, _ in prepared:
        with _stage(RUN):
            written.setdefault(id(ins), set()).update(run_on_copies(kernel, ins).changed)
    if with_ref and _timed_ref(profile):
        fns["ref"] = lambda: profile.ref_prog(*inputs)
        uses["ref"] = inputs
        written.setdefault(id(inputs), set()).update(ref.changed if ref is not None else ())
    per_round = max(1, profile.rep // rounds)
    warm = max(1, profile.warmup // rounds)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    host: dict[str, list[float]] = {name: [] for name in fns}
    with _timing_lock(job0.lock_path), contextlib.ExitStack() as stack:
        restore = {key: stack.enter_context(restoring(ins, written.get(id(ins), ())))
                   for key, ins in {id(ins): ins for ins in uses.values()}.items()}
        before = {name: restore[id(ins)] for name, ins in uses.items()}
        loops = {name: calibrate_loops(fn, job0.device, clock, profile.backend) for name, fn in fns.items()}
        for _ in range(rounds):
            for name, fn in fns.items():
                samples[name] += time_fn(fn, profile, job0.device, rep=per_round, warmup=warm, clock=clock,
                                         loops=loops[name], before=before[name])[0]
                host[name] += HOST_MS
    host_ms = {name: statistics.median(h) for name, h in host.items() if h}
    return {"samples": samples, "loops": loops, "host_ms": host_ms, "device_info": device_info(job0.device)}


def device_info(device: str) -> dict:
    """The device that measured, with its clocks when they can be read."""
    if not device.startswith("cuda"):
        from .key import _cpu_model

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
