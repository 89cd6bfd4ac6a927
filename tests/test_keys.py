"""Cache keys are stable: the same plain data gives the same digests in every release.

The digests below are pinned: a change that alters one makes every existing cache and shared
store miss, so bump ``key.FORMAT_VERSION`` on purpose, never by accident.
"""

from pytest_tlautotune.engine import key

MACHINE = {"device_kind": "cpu", "device": "fixed cpu", "python": "3.11.0", "torch": "2", "tilelang": "0.1.15",
           "plugin": "0", "format": 2, "env": {}, "machine": "x86_64", "cores": 2}
COMPILE = {"out_idx": [-1], "execution_backend": "cython", "target": "c", "target_host": None, "verbose": False,
           "pass_configs": {}}
PROFILE = {"warmup": 25, "rep": 7, "timeout": 30, "backend": "event", "supply_type": "TensorSupplyType.Auto",
           "ref_prog": None, "supply_prog": None, "rtol": 0.01, "atol": 0.01, "max_mismatched_ratio": 0.01,
           "skip_check": False, "manual_check_prog": None, "cache_input_tensors": True}
# Every tuner setting: only those in key.TUNER_KEY_FIELDS enter a key.
TUNER = {"strategy": "exhaustive", "max_trials": None, "max_tuning_s": None, "seed": 0, "top_k": 3,
         "early_stop_factor": 3.0, "compile_timeout": 300.0, "configs": None, "max_regression": None}
CONFIGS = [{"bm": 16}, {"bm": 7}]
BUILD_ERROR = {"stage": "build", "type": "build_error", "message": "m"}
CKEY = "7f821900c517f27aa3d4cd0c690c83f50612f27bc040dbae0251a202d90032fd"


def test_candidate_key_is_unchanged():
    assert key.candidate_key("a" * 64, COMPILE, PROFILE, MACHINE) == CKEY


def test_entry_key_is_unchanged():
    got = key.entry_key([(CKEY, None), (None, BUILD_ERROR)], CONFIGS, COMPILE, PROFILE, TUNER, MACHINE)
    assert got == "277b6e78419aeb4486c3ab772d7420fb2efef9417ee53386528b25903933c239"


def test_fast_key_is_unchanged():
    args = key.args_identity((64, 64), {"dtype": "float32"})
    got = key.fast_key(key.program_identity(None), args, CONFIGS, COMPILE, PROFILE, TUNER, MACHINE)
    assert got == "460356c43ad6ac8db734919ebcf06a53459ad702ee5f9516b2a411f446488e0c"


def test_budget_key_is_unchanged():
    identity = {"program": {"name": "kernels.gemm", "source_sha256": "e" * 64}, "args": key.args_identity((64, 64), {})}
    got = key.budget_key(identity, CONFIGS, COMPILE, PROFILE, TUNER, MACHINE)
    assert got == "abf547cc09180cf4c41ad8bace93b4869f5ed13ee074582b71eae23ea33734e3"
    # Not an IR key: a budgeted entry and a fully built one never share a key.
    assert got != key.entry_key([(CKEY, None)], CONFIGS, COMPILE, PROFILE, TUNER, MACHINE)


def test_worker_and_input_keys_are_unchanged():
    assert key.spec_id(b"blob") == "fa2c8cc4f28176bbeed4b736df569a34c79cd3723e9ec42f9674b4d46ac6b8b8"
    assert key.inputs_key("t.py::x", "gemm", PROFILE) == (
        "9c5ef6c53ede57ad1a328b0ec9969e4ce50671ae63eb33ba3491a351bed138d2")
    assert key.remeasure_key("t.py::x", "gemm") == "e7fd30d2d7b3441ecafe11dcca0c6fca6e1aaa767e2719f5f75b5e5d64d1a4db"


def test_settings_outside_the_key_do_not_change_it():
    other = {**TUNER, "early_stop_factor": 0, "compile_timeout": 1.0, "max_regression": 5}
    assert key.entry_key([(CKEY, None)], CONFIGS, COMPILE, PROFILE, other, MACHINE) == \
        key.entry_key([(CKEY, None)], CONFIGS, COMPILE, PROFILE, TUNER, MACHINE)
    assert key.entry_key([(CKEY, None)], CONFIGS, COMPILE, PROFILE, {**TUNER, "seed": 1}, MACHINE) != \
        key.entry_key([(CKEY, None)], CONFIGS, COMPILE, PROFILE, TUNER, MACHINE)
