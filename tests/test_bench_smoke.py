"""Smoke test of `python -m bench --quick --json PATH`: it runs to the end and reports sane figures.

Only the shape and sign of the figures are checked: benchmark numbers are reported, never asserted.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 120.0


@pytest.mark.timeout(150)
def test_quick_bench_exits_0_and_writes_positive_rates_and_finite_ratios(tmp_path: Path) -> None:
    json_path = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(json_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT_S,
    )
    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"

    report = json.loads(json_path.read_text())
    for comparison in ("deltas", "durability"):
        figures = report[comparison]
        assert figures["baseline_per_s"] > 0 and figures["host_per_s"] > 0, figures
        assert 0 < figures["ratio_pct"] < math.inf, figures
        assert figures["ratio_pct"] == pytest.approx(100 * figures["host_per_s"] / figures["baseline_per_s"])
        assert len(figures["baseline_runs"]) == len(figures["host_runs"]) == report["params"]["repeats"] == 1
    assert report["machine"]["cpu_count"] == os.cpu_count()
    service = report["service"]
    assert service["turns"] == 20 and 0 < service["embedded_p50_ms"] <= service["embedded_p90_ms"]
    assert 0 < service["service_p50_ms"] <= service["service_p90_ms"]
    assert service["added_p50_ms"] == pytest.approx(service["service_p50_ms"] - service["embedded_p50_ms"])

    table = completed.stdout
    assert "host/floor" in table and "host/raw" in table and "design target >= 50 %" in table
    assert f"{report['deltas']['ratio_pct']:.1f} %" in table
    assert f"the socket adds {service['added_p50_ms']:.2f} ms at p50" in table
