"""The demo (python -m fusedopt.demo): plain-text --help, both optimizers aggregated, and throughput
figures printed next to something to compare them with."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import import_fusedopt

fo = import_fusedopt()
demo = pytest.importorskip("fusedopt.demo")


def test_help_is_plain_text():
    out = subprocess.run([sys.executable, "-m", "fusedopt.demo", "--help"], capture_output=True,
                         text=True, check=True, cwd="/").stdout
    assert "usage:" in out and "--quick" in out
    for markup in ("``", ":class:", ":meth:", ".. "):
        assert markup not in out


def test_bandwidth_rows_include_the_comparison(capsys):
    demo.bandwidth(1 << 16, 2)
    out = capsys.readouterr().out
    assert "fusedopt sgd_mom_update" in out and "fusedopt dcasgd_update" in out
    assert "numpy copy" in out
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "torch is not installed" in out
    else:
        assert "torch SGD" in out


def test_both_optimizers_aggregate(monkeypatch, capsys):
    seen = []

    def fake_train(name, opt, *args):
        seen.append((type(opt).__name__, opt.aggregate_num, opt.use_fused_step))
        return 0.0, 0

    monkeypatch.setattr(demo, "train", fake_train)
    monkeypatch.setattr(demo, "bandwidth", lambda n, reps: None)
    demo.main(["--quick"])
    assert seen == [("SGD", float("inf"), True), ("DCASGD", float("inf"), True)]
