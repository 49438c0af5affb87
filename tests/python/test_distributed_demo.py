"""The asynchronous-workers part of ``python -m fusedopt.demo`` without Ray: it runs the same methods on
the in-process simulator and says so. (With Ray it is tested in test_ray_server.py.)"""
from __future__ import annotations

import importlib.util

import pytest

from helpers import import_fusedopt

fusedopt = import_fusedopt()
pytest.importorskip("sklearn", reason="the digits data needs scikit-learn")
from fusedopt.distributed import demo  # noqa: E402


def test_without_ray_the_demo_uses_the_simulator_and_says_so(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "ray" else real(name, *a, **k))
    demo.main_section(quick=True)
    out = capsys.readouterr().out
    assert "simulator: Ray is not installed" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for method in demo.METHODS:
        row = lines[method]
        assert 0.0 <= float(row[1].rstrip("%")) <= 100.0        # test error
        assert float(row[2]) >= 0.0 and float(row[3]) > 0.0     # staleness, updates/s
    # asynchronous methods see stale gradients, synchronous SGD none
    assert float(lines["asgd"][2]) > 0.0 and float(lines["ssgd"][2]) == 0.0


def test_importing_fusedopt_and_fusedopt_distributed_does_not_import_ray():
    import subprocess
    import sys

    code = ("import sys, fusedopt, fusedopt.distributed, fusedopt.distributed.demo; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
