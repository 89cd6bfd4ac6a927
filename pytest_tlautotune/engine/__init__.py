"""The engine: from a request's candidates to a measured winner.

    tuner.py     Tuner.run: search -> pipeline -> confirm -> result
    pipeline.py  the compile/time event loop and its record book
    measure.py   timing jobs, the top-k confirmation, re-timing a stored winner
    search.py    which configs to measure next (exhaustive, random, guided)
    programs.py  what a program is: TileLang's decorators, configs, example inputs
    workers.py   compile workers (a fork server with GPUs hidden) and timing workers
    bench.py     check and time one kernel in a timing worker
    failures.py  who failed and where, as a record
    hide_gpus.py imported first by the fork server: no GPU visible

Nothing is imported here: the fork server imports ``engine.hide_gpus`` before anything else.
"""
