"""Root conftest for the project's own tests and the examples."""

import os


def pytest_report_header(config):
    from pytest_tlautotune.plugin import cache_dir

    gpu = "CUDA examples run" if os.path.exists("/dev/nvidia0") else "no GPU: CUDA examples skip"
    return f"tlautotune cache: {cache_dir(config)} ({gpu})"
