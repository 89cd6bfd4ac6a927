"""The engine: one call's flow, from a test's program to a measured, stored winner.

    call.py      one autotune(...) call: request -> stored result or tuning -> save -> re-time -> row
    key.py       every key and identity (standard library only: the store hashes with it too)
    candidates.py  a request's configs built and keyed; builder.py: where they build
    tuner.py     Tuner.run: search -> pipeline -> confirm -> result
    pipeline.py  the compile/time event loop of one tuning, over its four parts:
    compiles.py  compiles in the compile workers, and where the GPU is visible when lowering needs it
    timings.py   timing jobs handed to the devices' timing workers, their verdicts read back
    record_book.py  one record per config: reused where it stands, stored, counted in the progress line
    reference_track.py  the reference config during a tuning: its kernel to the checks, the next on failure
    measure.py   timing jobs, the top-k confirmation, re-timing a stored winner
    search.py    which configs to measure next (exhaustive, random, guided)
    programs.py  what a program is: TileLang's decorators, configs, example inputs
    workers.py   the worker processes: the fork server, the compile pool, one timing worker per device
    compile_job.py  build, compile and save one candidate in a compile worker
    device_compile.py  CUDA device code through NVRTC, one shared precompiled header
    bench.py     check and time one kernel in a timing worker
    failures.py  who failed and where, as a record
    no_cuda_init.py  what the fork server imports before TileLang

Nothing is imported here: the fork server imports ``engine.no_cuda_init`` before anything else.
"""
