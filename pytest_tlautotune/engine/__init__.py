"""The engine: from a request's candidates to a measured winner.

    tuner.py     Tuner.run: search -> pipeline -> confirm -> result
    pipeline.py  the compile/time event loop and its record book
    measure.py   timing jobs, the top-k confirmation, re-timing a stored winner
    search.py    which configs to measure next (exhaustive, random, guided)
    programs.py  what a program is: TileLang's decorators, configs, example inputs
    workers.py   the worker processes: the fork server, the compile pool, one timing worker per device
    compile_job.py  build, compile and save one candidate in a compile worker
    device_compile.py  CUDA device code through NVRTC, one shared precompiled header
    bench.py     check and time one kernel in a timing worker
    failures.py  who failed and where, as a record
    no_cuda_init.py, nvrtc_preload.py  what the fork server imports before TileLang

Nothing is imported here: the fork server imports ``engine.no_cuda_init`` before anything else.
"""
