"""python -m fusedopt.distributed.experiment: the model's gradient, one-worker equivalences, and the
command line end to end with tiny settings (JSON schema, PNG written)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import import_fusedopt

fusedopt = import_fusedopt()
pytest.importorskip("sklearn")
from fusedopt.distributed import experiment as ex  # noqa: E402

ROW_FIELDS = {"method", "workers", "test_error_mean", "test_error_std", "final_loss_mean",
              "staleness_mean"}


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    params = ex.init_params(3, inputs=5)
    params = [p + 0.1 * rng.standard_normal(p.shape) for p in params]
    x, y = rng.standard_normal((7, 5)), rng.integers(0, 10, 7)
    loss, grads = ex.loss_and_grad(params, x, y)
    assert loss == pytest.approx(ex.evaluate(params, x, y)[0], rel=1e-12)
    h = 1e-6
    for p, g in zip(params, grads):
        for idx in [tuple(rng.integers(0, s) for s in p.shape) for _ in range(4)]:
            old = p[idx]
            p[idx] = old + h
            up = ex.loss_and_grad(params, x, y)[0]
            p[idx] = old - h
            down = ex.loss_and_grad(params, x, y)[0]
            p[idx] = old
            assert g[idx] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-8)


def test_data_split_is_stratified_and_standardised():
    data = ex.load_data()
    assert len(data.y_train) == 1347 and len(data.y_test) == 450
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-12)
    counts_tr, counts_te = np.bincount(data.y_train), np.bincount(data.y_test)
    np.testing.assert_allclose(counts_tr / counts_tr.sum(), counts_te / counts_te.sum(), atol=0.01)


def test_one_worker_methods_equal_sequential_sgd():
    """With one worker every asynchronous method is sequential SGD, bit for bit (the per-worker
    backup is the current weight), and SSGD averages one gradient; the MXNet form is not."""
    data = ex.load_data()
    runs = {m: ex.run_one(m, 1, 0, data, epochs=1) for m in ("sgd", "asgd", "dcasgd-c", "dcasgd-a",
                                                              "ssgd")}
    base = runs.pop("sgd")
    for method, r in runs.items():
        assert r["test_error"] == base["test_error"] and r["final_loss"] == base["final_loss"], method
    assert base["gradients"] == 42 and base["updates"] == 42 and base["staleness_mean"] == 0.0


def test_run_one_staleness_and_same_number_of_gradients():
    data = ex.load_data()
    a = ex.run_one("asgd", 4, 1, data, epochs=1)
    s = ex.run_one("ssgd", 4, 1, data, epochs=1)
    assert a["gradients"] == s["gradients"] == 42
    assert a["staleness_mean"] == pytest.approx((0 + 1 + 2 + 3 * 39) / 42)
    assert s["updates"] == 10 and s["staleness_mean"] == 0.0  # 42 = 10 rounds of 4 + 2 pending
    with pytest.raises(ValueError, match="sequential"):
        ex.run_one("sgd", 2, 0, data, epochs=1)
    with pytest.raises(ValueError, match="unknown method"):
        ex.run_one("adam", 2, 0, data, epochs=1)


def test_command_line_end_to_end(tmp_path):
    pytest.importorskip("matplotlib")
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(fusedopt.__file__)), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "fusedopt.distributed.experiment", "--quick", "--sweep", "0.04", "4",
         "--json", str(out_json), "--plot", str(out_png)],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "dcasgd-a" in proc.stdout  # the table
    doc = json.loads(out_json.read_text())
    cfg = doc["config"]
    assert cfg["workers"] == [1, 2] and cfg["seeds"] == [0] and cfg["epochs"] == 1
    assert cfg["lamda_sweep"] == [0.04, 4.0] and cfg["gradients"] == 42
    results = doc["results"]
    assert {(r["method"], r["workers"]) for r in results} == (
        {("sgd", 1)} | {(m, w) for m in ex.METHODS if m != "sgd" for w in (1, 2)})
    for r in results + doc["lamda_sweep"]:
        assert ROW_FIELDS <= set(r)
        assert 0.0 <= r["test_error_mean"] <= 100.0 and r["test_error_std"] == 0.0
        assert len(r["test_errors"]) == 1 and r["final_loss_mean"] > 0
    assert {(r["method"], r["lamda"]) for r in doc["lamda_sweep"] if r["workers"] == 2} == {
        (m, lam) for m in ex.CONSTANT_METHODS for lam in (0.04, 4.0)}
    assert [r for r in results if r["method"] == "asgd" and r["workers"] == 2][0][
        "staleness_mean"] == pytest.approx(41 / 42)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_optional_dependency_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails as if not installed
    with pytest.raises(SystemExit, match=r"fusedopt\[experiment\]"):
        ex.load_data()


def test_a_diverging_run_is_reported_not_warned(monkeypatch):
    data = ex.load_data()
    real = ex.init_params
    monkeypatch.setattr(ex, "init_params", lambda seed, inputs: [
        np.full_like(p, np.inf) for p in real(seed, inputs)])  # inf weights: NaN from the start
    r = ex.run_one("asgd", 2, 0, data, epochs=1)  # filterwarnings=error: no warning escapes
    assert np.isnan(r["final_loss"]) and r["test_error"] > 80.0 and r["diverged"]
    monkeypatch.undo()
    ok = ex.run_one("asgd", 2, 0, data, epochs=1, lr=0.1)
    assert not ok["diverged"]
    row = ex._summary("asgd", 2, None, [r, ok], [0, 1])
    assert row["diverged"] == 1
    doc = ex._finite_or_null({"a": [row["final_loss_mean"], 1.5], "b": float("inf")})
    assert doc == {"a": [None, 1.5], "b": None}
