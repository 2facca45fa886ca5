"""The deterministic path's pinned settings: set before the libraries load, user values kept, recorded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workbench import reproducibility as repro


def _child(code: str, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture()
def bare_env(monkeypatch):
    """An environment without any pinned variable (as a fresh shell has)."""
    import os

    names = set(repro.pinned_settings(frozenset({"avx2"}))) | {repro.MARKER, "WORKBENCH_PROFILE", "WORKBENCH_PIN"}
    return {k: v for k, v in os.environ.items() if k not in names}


def test_import_pins_the_deterministic_settings_before_torch_loads(bare_env):
    code = ("import json, workbench, torch, os; from workbench.reproducibility import environment;"
            "e = environment(); print(json.dumps({'cap': torch.backends.cpu.get_cpu_capability(),"
            " 'threads': torch.get_num_threads(), 'pinned': e['pinned']}))")
    got = _child(code, bare_env)
    assert got["threads"] == repro.DETERMINISTIC_THREADS
    assert got["pinned"]["set_by_user"] == {} and got["pinned"]["loaded_before_pin"] == []
    assert got["pinned"]["effective"]["OMP_NUM_THREADS"] == str(repro.DETERMINISTIC_THREADS)
    if "avx2" in repro.cpu_flags():
        assert got["cap"] == "AVX2"  # capped even on AVX-512 machines
        assert got["pinned"]["effective"]["MKL_CBWR"] == "COMPATIBLE"


def test_a_users_setting_wins_and_is_recorded_as_theirs(bare_env):
    env = {**bare_env, "ATEN_CPU_CAPABILITY": "default"}
    code = ("import json, workbench, torch; from workbench.reproducibility import environment;"
            "print(json.dumps({'cap': torch.backends.cpu.get_cpu_capability(), 'pinned': environment()['pinned']}))")
    got = _child(code, env)
    assert got["cap"] == "DEFAULT"
    assert got["pinned"]["set_by_user"] == {"ATEN_CPU_CAPABILITY": "default"}


def test_children_inherit_the_pin_as_the_workbenchs_own(bare_env):
    code = ("import json, subprocess, sys, workbench;"
            "child = subprocess.run([sys.executable, '-c', 'import json, workbench;"
            " from workbench.reproducibility import environment; print(json.dumps(environment()))'],"
            " capture_output=True, text=True, check=True).stdout;"
            "print(json.dumps(json.loads(child)['pinned']))")
    got = _child(code, bare_env)
    assert got["set_by_user"] == {}  # inherited from a workbench parent, not the user's


def test_full_profile_and_opt_out_are_not_pinned(bare_env):
    code = "import json, os, workbench; print(json.dumps({k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_CBWR')}))"
    assert _child(code, {**bare_env, "WORKBENCH_PROFILE": "full"}) == {"OMP_NUM_THREADS": None, "MKL_CBWR": None}
    assert _child(code, {**bare_env, "WORKBENCH_PIN": "0"}) == {"OMP_NUM_THREADS": None, "MKL_CBWR": None}
    unpin = ("import json, os, workbench; from workbench.reproducibility import pin_process; pin_process('full');"
             "print(json.dumps({k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_CBWR')}))")
    assert _child(unpin, bare_env) == {"OMP_NUM_THREADS": None, "MKL_CBWR": None}


def test_environment_records_the_machine():
    env = repro.environment()
    assert env["cpu_count"] >= 1 and env["cpu_model"]
    assert set(env["isa_flags"]) <= set(repro.ISA_FLAGS)
    assert {"torch", "numpy", "scann"} <= set(env["packages"])
    assert env["torch_threads"] >= 1


def test_timings_are_split_from_metrics():
    kept, moved = repro.split_timings({"ndcg@10": 0.5, "build_s": 1.2, "sweep": [{"qps": 9, "recall@10": 1.0}],
                                       "timing_keys": ["chosen"], "chosen": {"leaves": 2}})
    assert kept == {"ndcg@10": 0.5, "sweep": [{"recall@10": 1.0}]}
    assert moved == {"build_s": 1.2, "sweep": [{"qps": 9}], "chosen": {"leaves": 2}, "timing_keys": ["chosen"]}
