"""benchmarks/gpu.py, the one command a GPU session runs, kept working: its --smoke mode runs every
agreement check at tiny sizes in the CUDA simulator and writes the table's JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_smoke_runs_every_check_in_the_simulator(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["device"] == "CUDA simulator" and res["smoke"] is True
    checks = {s["check"]: s for s in res["steps"]}
    assert set(checks) == {"hebbian epoch", "softhebb epoch", "conv epochs", "spiking transform, ensemble"}
    assert all(s["ok"] is True for s in checks.values()), checks
    assert checks["hebbian epoch"]["persistent_equals_per_batch"] is True
    assert checks["spiking transform, ensemble"]["identical_count_rows"] == 1.0
    assert checks["spiking transform, ensemble"]["ensemble_member_equals_alone"] is True
    assert "ok       hebbian epoch" in proc.stdout


def test_gpu_script_refuses_the_wrong_machine(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "no CUDA GPU here" in proc.stderr or "--smoke is for the CUDA simulator" in proc.stderr
    assert not (tmp_path / "gpu_results.json").exists()


def test_the_softhebb_reference_step_says_how_to_stage_the_reference_when_it_is_absent(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_script", ROOT / "benchmarks" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    monkeypatch.setenv("SOFTHEBB_DIR", str(tmp_path))  # no hebbconv.py there
    step = gpu.softhebb_reference(400)
    assert step["ok"] is None and step["step"] == "conv_softhebb.py --device cuda"
    assert f"no SoftHebb reference at {tmp_path}" in step["skipped"] and "stage_softhebb.py" in step["skipped"]
    (tmp_path / "hebbconv.py").write_text("")
    assert gpu.softhebb_reference(30) == {"step": "conv_softhebb.py --device cuda", "ok": None,
                                          "skipped": "budget spent"}
