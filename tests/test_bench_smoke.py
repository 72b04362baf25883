"""bench/e2e.py end to end on the tiny models: every model section runs through a real server and
lands in the JSON (the full-size run is `nox -s bench`; this only checks the script's plumbing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_e2e_bench_tiny_measures_every_model(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, str(ROOT / "bench" / "e2e.py"), "--size", "tiny", "--backends", "torch", "--durations", "1",
        "--concurrency", "2", "--models", "spark,orpheus,mega", "--cache", str(tmp_path / "cache"), "--json", str(out),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    spark, orpheus, mega = report["results"], report["orpheus"]["results"], report["mega"]["results"]
    for rows in (spark, orpheus, mega):
        assert [r["backend"] for r in rows] == ["torch"]
        assert rows[0]["status"] == "ok", rows[0]["status"]
        assert rows[0]["load_s"] > 0 and rows[0]["peak_rss_gb"] > 0
    # JSON keys are strings: seconds of audio -> RTF, concurrency -> audio s per wall s.
    assert spark[0]["rtf"]["1"] > 0 and spark[0]["aggregate"]["2"] > 0
    assert orpheus[0]["rtf"]["1"] > 0 and orpheus[0]["aggregate"]["2"] > 0 and orpheus[0]["first_audio_s"] > 0
    assert mega[0]["rtf"]["speak"] > 0 and mega[0]["rtf"]["clone"] > 0 and mega[0]["aggregate"]["2"] > 0
    assert "TINY test model" in run.stdout


def _gpu_script(mode: str, tmp_path, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "VENV": str(tmp_path / "venv")}
    return subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), mode], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_gpu_script_dry_run_checks_every_step(tmp_path):
    """bench/gpu.sh --dry-run: every e2e flag it uses exists, and each run is planned with the GPU flags."""
    run = _gpu_script("--dry-run", tmp_path, 120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "accepts every flag used here" in run.stdout
    for step in ("spark-vllm", "spark-torch", "orpheus-torch", "mega-torch"):
        assert f"] {step}: " in run.stdout
    assert "--cache_implementation\\ static" in run.stdout and "--concurrency 1\\,16\\,64" in run.stdout
    assert not (tmp_path / "out" / "spark-torch.json").exists()  # a dry run measures nothing


@pytest.mark.slow
def test_gpu_script_cpu_path_runs_the_same_bench_tiny(tmp_path):
    """bench/gpu.sh --cpu: the GPU script's own invocations on the tiny models, summary included."""
    run = _gpu_script("--cpu", tmp_path, 600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for name in ("spark-torch", "orpheus-torch", "mega-torch"):
        report = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        section = report["results"] if name.startswith("spark") else report[name.split("-")[0]]["results"]
        assert section[0]["status"] == "ok", section[0]["status"]
    summary = run.stdout.split("summary (from")[1]
    assert "x RT c=2" in summary and "spark-torch" in summary and "mega-torch" in summary


@pytest.mark.slow
def test_realtime_bench_tiny_measures_every_engine(tmp_path):
    """bench/realtime.py --tiny: each engine's server, 1 and 2 contexts over the Cartesia WebSocket, first
    audio, starvation and cancel measured, all in the JSON (the full-size run: `python bench/realtime.py`)."""
    out = tmp_path / "realtime.json"
    cmd = [
        sys.executable, str(ROOT / "bench" / "realtime.py"), "--tiny", "--contexts", "1,2",
        "--cache", str(tmp_path / "cache"), "--json", str(out),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert [(r["engine"], r["backend"], r["status"]) for r in rows] == [
        ("spark", "torch", "ok"),
        ("orpheus", "torch", "ok"),
        ("mega", "torch", "ok"),
    ]
    for row in rows:
        assert [level["contexts"] for level in row["levels"]] == [1, 2]
        for level in row["levels"]:
            assert not level["errors"], level["errors"]
            assert 0 < level["first_audio_p50_s"] <= level["first_audio_p95_s"]
            assert level["max_gap_s"] >= 0 and level["stall_s"] >= 0 and level["audio_s"] > 1
            assert 0 <= level["cancel_freed_s"] < 5
    assert "TINY test models" in run.stdout and "1st p50 s" in run.stdout


def test_realtime_bench_help():
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "realtime.py"), "--help"], capture_output=True, text=True
    )
    assert run.returncode == 0 and "--contexts" in run.stdout and "--tiny" in run.stdout
