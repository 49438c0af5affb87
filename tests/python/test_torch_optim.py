"""fusedopt.torch.SGD / DCASGD as torch.optim optimizers, against the float64 oracle of MXNet's rule
(reference.py, reference_torch.py): param groups, None gradients, every kind of lr scheduler, state_dict
resume, GradScaler (scale folded, non-finite skip, unscale_ first), the autograd version counter,
channels_last, sparse embeddings, bfloat16 with float32 masters, autocast, DCASGD, torch.compile, and
equality with torch.optim.SGD where the two rules coincide.
"""
from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest

import reference as ref
import reference_torch as rt
from helpers import assert_close, import_fusedopt

torch = pytest.importorskip("torch")
fo = import_fusedopt()
import fusedopt.torch as fot  # noqa: E402

F32 = np.float32
SHAPES = [(7,), (3, 5), (2, 3, 3), (1,), (33,)]  # odd sizes: SIMD bodies and tails
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and fo.cuda.is_available() else [])


def np_of(t):
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()


def make_params(rng, dtype=torch.float32, shapes=SHAPES, device="cpu"):
    return [torch.nn.Parameter(torch.tensor(rng.standard_normal(s), dtype=torch.float64)
                               .to(dtype=dtype, device=device)) for s in shapes]


def rand_grads(rng, params, steps):
    """steps x params random gradients (as tensors of each parameter's dtype)."""
    return [[torch.tensor(rng.standard_normal(tuple(p.shape)), dtype=torch.float64)
             .to(dtype=p.dtype, device=p.device) for p in params] for _ in range(steps)]


def run(opt, params, grads, *, sched=None, record=None):
    """Sets the gradients of each step, calls opt.step(), steps the scheduler; records (lr, momentum)
    of group 0 seen by each step when ``record`` is a list."""
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = None if g is None else g.clone()
        if record is not None:
            record.append([(g["lr"], g.get("momentum", 0.0)) for g in opt.param_groups])
        opt.step()
        if sched is not None:
            sched.step()


# ------------------------------------------------------------------------------------- the rule
OPTIONS = [
    dict(momentum=0.0, weight_decay=0.0),
    dict(momentum=0.9, weight_decay=0.01),
    dict(momentum=0.5, weight_decay=0.1, rescale_grad=0.5, clip_gradient=0.3),
    dict(momentum=0.0, weight_decay=0.05, clip_gradient=1.0),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_sgd_matches_reference(rng, device, dtype, opts):
    params = make_params(rng, dtype, device=device)
    w0 = [np_of(p) for p in params]
    grads = rand_grads(rng, params, 4)
    opt = fot.SGD(params, lr=0.05, **opts)
    run(opt, params, grads)
    mu = opts.get("momentum", 0.0)
    kw = {k: opts[k] for k in ("rescale_grad", "clip_gradient") if k in opts}
    for k, p in enumerate(params):
        exp = ref.run_sgd(w0[k], [np_of(gs[k]) for gs in grads], lr=0.05, momentum=mu,
                          wd=opts["weight_decay"], **kw)
        assert_close(np_of(p), exp.weight)
        if mu:
            # MXNet's buffer holds lr: m = mu*m - lr*r
            assert_close(np_of(opt.state[p]["mom"]), exp.mom, role="state")
        else:
            assert "mom" not in opt.state[p]


def test_param_groups_own_hyperparameters(rng):
    params = make_params(rng)
    w0 = [np_of(p) for p in params]
    groups = [
        {"params": params[:2]},
        {"params": params[2:4], "lr": 0.2, "momentum": 0.5, "weight_decay": 0.1},
        {"params": params[4:], "lr": 0.01, "clip_gradient": 0.2, "rescale_grad": 2.0},
    ]
    opt = fot.SGD(groups, lr=0.05, momentum=0.9)
    grads = rand_grads(rng, params, 3)
    run(opt, params, grads)
    hp = [dict(lr=0.05, momentum=0.9)] * 2 + [dict(lr=0.2, momentum=0.5, wd=0.1)] * 2 + \
         [dict(lr=0.01, momentum=0.9, clip_gradient=0.2, rescale_grad=2.0)]
    for k, p in enumerate(params):
        exp = ref.run_sgd(w0[k], [np_of(gs[k]) for gs in grads], **hp[k])
        assert_close(np_of(p), exp.weight)


def test_none_grads_skipped(rng):
    params = make_params(rng)
    w0 = [np_of(p) for p in params]
    grads = rand_grads(rng, params, 4)
    grads[1][0] = None  # parameter 0 has no gradient at step 1
    grads[2][3] = None
    for k in range(len(params)):
        grads[0][k] = None if k == 2 else grads[0][k]
    opt = fot.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    run(opt, params, grads)
    for k, p in enumerate(params):
        gk = [None if gs[k] is None else np_of(gs[k]) for gs in grads]
        exp_w, exp_m = rt.sgd_steps(w0[k], gk, lrs=[0.1] * 4, momenta=[0.9] * 4, wd=0.01)
        assert_close(np_of(p), exp_w)
        assert_close(np_of(opt.state[p]["mom"]), exp_m, role="state")


def test_all_grads_none_is_a_noop(rng):
    params = make_params(rng)
    opt = fot.SGD(params, lr=0.1, momentum=0.9)
    before = [np_of(p) for p in params]
    versions = [p._version for p in params]
    opt.zero_grad()
    opt.step()
    for p, b in zip(params, before):
        np.testing.assert_array_equal(np_of(p), b)
    assert [p._version for p in params] == versions


def test_zero_grad_and_closure(rng):
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = fot.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(14.0)
    np.testing.assert_allclose(np_of(p), ref.sgd_update(np.array([1.0, -2, 3], F32),
                                                        np.array([2.0, -4, 6], F32), lr=0.1),
                               rtol=1e-6)
    opt.zero_grad()
    assert p.grad is None


# ---------------------------------------------------------------------------------- schedulers
SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0 / (1 + e)),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5),
    "MultiStepLR": lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[1, 3], gamma=0.3),
    "LinearLR": lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=4),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.2, total_steps=8),
    "OneCycleLR-nomom": lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.2, total_steps=8, cycle_momentum=False),
    "CyclicLR": lambda o: torch.optim.lr_scheduler.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=2),
}


@pytest.mark.parametrize("name", list(SCHEDULERS) + ["ReduceLROnPlateau"])
def test_lr_schedulers(rng, name):
    params = make_params(rng, shapes=[(5,), (2, 3)])
    w0 = [np_of(p) for p in params]
    opt = fot.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    steps = 7
    grads = rand_grads(rng, params, steps)
    record = []
    if name == "ReduceLROnPlateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g.clone()
            record.append([(g["lr"], g["momentum"]) for g in opt.param_groups])
            opt.step()
            sched.step(1.0)  # a plateau: the lr is halved after every epoch past the first
    else:
        sched = SCHEDULERS[name](opt)
        run(opt, params, grads, sched=sched, record=record)
    lrs = [r[0][0] for r in record]
    moms = [r[0][1] for r in record]
    assert len(set(lrs)) > 1, "the scheduler must have changed the lr"
    if name == "OneCycleLR":
        assert len(set(moms)) > 1, "OneCycleLR cycles the momentum"
    for k, p in enumerate(params):
        exp_w, exp_m = rt.sgd_steps(w0[k], [np_of(gs[k]) for gs in grads], lrs=lrs, momenta=moms,
                                    wd=0.01)
        assert_close(np_of(p), exp_w)
        assert_close(np_of(opt.state[p]["mom"]), exp_m, role="state")


def test_onecycle_creates_momentum_buffers_when_needed(rng):
    """momentum=0 at construction, then OneCycleLR sets it: the buffers appear at the next step."""
    params = make_params(rng, shapes=[(4,)])
    opt = fot.SGD(params, lr=0.1)
    opt.param_groups[0]["momentum"] = 0.0
    params[0].grad = torch.ones(4)
    opt.step()
    assert "mom" not in opt.state[params[0]]
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=4)
    assert opt.param_groups[0]["momentum"] > 0
    opt.step()
    assert "mom" in opt.state[params[0]]


# --------------------------------------------------------------------------- torch.optim.SGD
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_equals_torch_sgd_where_rules_coincide(rng, momentum, wd):
    """Constant lr: MXNet's buffer is -lr times torch's, so the weights coincide (to rounding);
    without momentum they coincide under any lr schedule (checked with StepLR)."""
    params = make_params(rng)
    tparams = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = fot.SGD(params, lr=0.05, momentum=momentum, weight_decay=wd)
    theirs = torch.optim.SGD(tparams, lr=0.05, momentum=momentum, weight_decay=wd)
    scheds = []
    if momentum == 0:
        scheds = [torch.optim.lr_scheduler.StepLR(o, 2, 0.5) for o in (ours, theirs)]
    grads = rand_grads(rng, params, 6)
    for gs in grads:
        for a, b, g in zip(params, tparams, gs):
            a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
        for s in scheds:
            s.step()
    for a, b in zip(params, tparams):
        np.testing.assert_allclose(np_of(a), np_of(b), rtol=1e-5, atol=1e-6)
    if momentum:
        for a, b in zip(params, tparams):
            np.testing.assert_allclose(np_of(ours.state[a]["mom"]),
                                       -0.05 * np_of(theirs.state[b]["momentum_buffer"]),
                                       rtol=1e-5, atol=1e-6)


def test_differs_from_torch_sgd_when_lr_changes_with_momentum(rng):
    """With momentum and a changing lr the rules differ (torch rescales the old gradients in its
    buffer by the new lr); ours follows MXNet's."""
    w0 = rng.standard_normal(6).astype(F32)
    grads = [rng.standard_normal(6).astype(F32) for _ in range(4)]
    lrs = [0.1, 0.1, 0.01, 0.01]
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = fot.SGD([p], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.1)
    run(opt, [p], [[torch.tensor(g)] for g in grads], sched=sched)
    mx_w, _ = rt.sgd_steps(w0, grads, lrs=lrs, momenta=[0.9] * 4)
    torch_w = rt.torch_sgd_steps(w0, grads, lrs=lrs, momentum=0.9)
    assert_close(np_of(p), mx_w)
    assert np.abs(mx_w.astype(np.float64) - torch_w).max() > 1e-3


# ---------------------------------------------------------------------------------- state_dict
def _train(rng_seed, opt_factory, steps, params, grads, sched_factory=None, start=0, state=None):
    opt = opt_factory(params)
    sched = sched_factory(opt) if sched_factory else None
    if state is not None:
        opt.load_state_dict(state["opt"])
        if sched is not None:
            sched.load_state_dict(state["sched"])
    run(opt, params, grads[start:start + steps], sched=sched)
    return opt, sched


FACTORIES = {
    "sgd-mom": lambda ps: fot.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "sgd-bf16-mp": lambda ps: fot.SGD(ps, lr=0.1, momentum=0.9, multi_precision=True),
    "dcasgd-mom": lambda ps: fot.DCASGD(ps, lr=0.1, momentum=0.9, lamda=0.5, weight_decay=0.01),
    "dcasgd-bf16-mp": lambda ps: fot.DCASGD(ps, lr=0.1, lamda=0.5, multi_precision=True),
    "dcasgd-adaptive-bf16-mp": lambda ps: fot.DCASGD(ps, lr=0.1, momentum=0.9, lamda=2.0,
                                                     adaptive=True, multi_precision=True),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_dict_resume_equals_uninterrupted(rng, name):
    dtype = torch.bfloat16 if "bf16" in name else torch.float32
    params = make_params(rng, dtype)
    init = [p.detach().clone() for p in params]
    grads = rand_grads(rng, params, 6)
    sched_f = lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5)  # noqa: E731
    whole = [torch.nn.Parameter(t.clone()) for t in init]
    opt_a, _ = _train(0, FACTORIES[name], 6, whole, grads, sched_f)
    half = [torch.nn.Parameter(t.clone()) for t in init]
    opt_b, sched_b = _train(0, FACTORIES[name], 3, half, grads, sched_f)
    buf = io.BytesIO()
    torch.save({"opt": opt_b.state_dict(), "sched": sched_b.state_dict(),
                "model": [p.detach() for p in half]}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = [torch.nn.Parameter(t.clone()) for t in ckpt["model"]]
    opt_c, _ = _train(0, FACTORIES[name], 3, resumed, grads, sched_f, start=3, state=ckpt)
    for a, c in zip(whole, resumed):
        assert torch.equal(a, c)
    for a, c in zip(whole, resumed):
        sa, sc = opt_a.state[a], opt_c.state[c]
        assert sorted(sa) == sorted(sc)
        for key in sa:
            assert sa[key].dtype == sc[key].dtype
            assert torch.equal(sa[key], sc[key]), key
    if "mp" in name:
        assert opt_c.state[resumed[0]]["weight32"].dtype == torch.float32


def test_load_state_dict_rejects_foreign_and_bad_states(rng):
    params = make_params(rng, shapes=[(3,), (4,)])
    torch_opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = torch.ones_like(p)
    torch_opt.step()
    opt = fot.SGD(params, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="momentum_buffer"):
        opt.load_state_dict(torch_opt.state_dict())
    good = fot.SGD(params, lr=0.1, momentum=0.9)
    good.step()
    sd = good.state_dict()
    sd["state"][1]["mom"] = torch.zeros(5)
    lr_before = opt.param_groups[0]["lr"]
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(sd)
    assert len(opt.state) == 0 and opt.param_groups[0]["lr"] == lr_before


# ---------------------------------------------------------------------------------- GradScaler
def _scaler_model(rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


@pytest.mark.parametrize("unscale_first", [False, True])
def test_grad_scaler_folds_scale(rng, unscale_first):
    """scaler.step(opt) with gradients scaled by 2**12 gives bitwise the weights of an unscaled run
    (the inverse scale, a power of two, is folded into rescale_grad)."""
    model = _scaler_model(rng)
    plain = copy.deepcopy(model)
    x = torch.tensor(rng.standard_normal((4, 5)), dtype=torch.float32)
    opt = fot.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, clip_gradient=0.5)
    opt_plain = fot.SGD(plain.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01,
                        clip_gradient=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=1000)
    for _ in range(3):
        opt.zero_grad()
        scaler.scale(model(x).sum()).backward()
        if unscale_first:
            scaler.unscale_(opt)
        scaled = [p.grad.clone() for p in model.parameters()]
        scaler.step(opt)
        scaler.update()
        for p, g in zip(model.parameters(), scaled):  # the gradient is never modified by the step
            assert torch.equal(p.grad, g)
        opt_plain.zero_grad()
        plain(x).sum().backward()
        opt_plain.step()
    for a, b in zip(model.parameters(), plain.parameters()):
        assert torch.equal(a, b)
    assert not hasattr(opt, "grad_scale") and not hasattr(opt, "found_inf")


@pytest.mark.parametrize("name", ["sgd", "sgd-nomom", "sgd-bf16-mp", "dcasgd", "dcasgd-adaptive",
                                  "sgd-sparse", "sgd-traced"])
def test_grad_scaler_device_path_on_cpu(rng, monkeypatch, name):
    """The CUDA path (GradScaler's tensors handed to the kernels, which read them) run on the CPU,
    where the kernels read host memory: bitwise the host path (the same rescale_grad * (1 / scale),
    with a scale that is not a power of two), and with found_inf set nothing is written."""
    device_path = {"on": False}
    monkeypatch.setattr(fot, "_read_on_device", lambda t: device_path["on"] and t is not None)
    handed = []  # per kernel call: were the tensors handed to the kernels?
    real_scale_for = fot._scale_for

    def spy(hyper, device):
        out = real_scale_for(hyper, device)
        handed.append(bool(out[1]))
        return out

    monkeypatch.setattr(fot, "_scale_for", spy)
    dtype = torch.bfloat16 if "bf16" in name else torch.float32
    params = make_params(rng, dtype)
    if "sparse" in name:
        params.append(torch.nn.Parameter(torch.tensor(rng.standard_normal((10, 4)),
                                                      dtype=torch.float32)))
    twins = [p.detach().clone().requires_grad_() for p in params]

    def make(ps):
        if name.startswith("dcasgd"):
            return fot.DCASGD(ps, lr=0.1, momentum=0.9, lamda=0.5, clip_gradient=0.7,
                              adaptive="adaptive" in name)
        return fot.SGD(ps, lr=0.1, momentum=0.0 if "nomom" in name else 0.9, weight_decay=0.01,
                       clip_gradient=0.7, multi_precision="mp" in name)

    opt, opt_host = make(params), make(twins)
    scale = torch.full((), 3.0)
    for _ in range(3):
        for p, q in zip(params, twins):
            if p.dim() == 2 and p.shape == (10, 4):
                g = torch.sparse_coo_tensor(torch.tensor([[1, 3, 7]]),
                                            torch.tensor(rng.standard_normal((3, 4)),
                                                         dtype=torch.float32), (10, 4),
                                            check_invariants=True)
            else:
                g = torch.tensor(rng.standard_normal(tuple(p.shape)), dtype=torch.float32).to(dtype)
            p.grad, q.grad = g.clone(), g.clone()
        for o, on in ((opt, True), (opt_host, False)):
            device_path["on"] = on
            o.grad_scale, o.found_inf = scale, torch.zeros(())
            if on and "traced" in name:
                o._traced_step(None)  # the torch.compile custom op, run eagerly
            else:
                o.step()
            del o.grad_scale, o.found_inf
    assert any(handed) and not all(handed)  # the device path on one optimizer, not the other
    for a, b in zip(params, twins):
        assert torch.equal(a, b)
        for k in opt_host.state[b]:
            assert torch.equal(opt.state[a][k], opt_host.state[b][k]), k
    device_path["on"] = True
    snapshot = [p.detach().clone() for p in params]
    states = [{k: v.clone() for k, v in opt.state[p].items()} for p in params]
    opt.grad_scale, opt.found_inf = scale, torch.ones(())
    opt._traced_step(None) if "traced" in name else opt.step()
    for p, s, st in zip(params, snapshot, states):
        assert torch.equal(p, s)
        for k in st:
            assert torch.equal(opt.state[p][k], st[k]), k


needs_cuda = pytest.mark.skipif("cuda" not in DEVICES, reason="needs a CUDA device and fusedopt CUDA")


@needs_cuda
@pytest.mark.parametrize("name", ["sgd", "sgd-bf16-mp", "dcasgd"])
def test_grad_scaler_cuda_scale_read_on_device(rng, name):
    """On CUDA, GradScaler's grad_scale / found_inf go to the kernels (read in device code): a step
    needs no host synchronisation (torch's sync debug mode raises on one), equals bitwise an
    unscaled run (power-of-two scale), and a step with found_inf set writes nothing."""
    dtype = torch.bfloat16 if "bf16" in name else torch.float32
    params = make_params(rng, dtype, device="cuda")
    plain = [p.detach().clone().requires_grad_() for p in params]

    def make(ps):
        if name == "dcasgd":
            return fot.DCASGD(ps, lr=0.1, momentum=0.9, lamda=0.5, clip_gradient=0.7)
        return fot.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01, clip_gradient=0.7,
                       multi_precision="mp" in name)

    opt, opt_plain = make(params), make(plain)
    scale = torch.full((), 2.0 ** 10, device="cuda")
    found = torch.zeros((), device="cuda")
    for step in range(3):
        grads = [torch.tensor(rng.standard_normal(tuple(p.shape)), dtype=torch.float32)
                 .to(dtype=dtype, device="cuda") for p in params]
        for p, q, g in zip(params, plain, grads):
            p.grad = (g.float() * 2.0 ** 10).to(dtype)
            q.grad = g.clone()
        opt.grad_scale, opt.found_inf = scale, found  # what scaler.step(opt) sets
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        del opt.grad_scale, opt.found_inf
        opt_plain.step()
    for a, b in zip(params, plain):
        assert torch.equal(a, b)
    states = [{k: v.clone() for k, v in opt.state[p].items()} for p in params]
    snapshot = [p.detach().clone() for p in params]
    opt.grad_scale, opt.found_inf = scale, torch.ones((), device="cuda")
    opt.step()
    torch.cuda.synchronize()
    for p, s, st in zip(params, snapshot, states):
        assert torch.equal(p, s)
        for k in st:
            assert torch.equal(opt.state[p][k], st[k]), k


@needs_cuda
def test_grad_scaler_cuda_scaler_step(rng):
    """scaler.step(opt) on CUDA: bitwise the unscaled run, the non-finite step skipped."""
    torch.manual_seed(int(rng.integers(1 << 30)))
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).cuda()
    plain = copy.deepcopy(model)
    x = torch.tensor(rng.standard_normal((4, 5)), dtype=torch.float32, device="cuda")
    opt = fot.SGD(model.parameters(), lr=0.1, momentum=0.9, clip_gradient=0.5)
    opt_plain = fot.SGD(plain.parameters(), lr=0.1, momentum=0.9, clip_gradient=0.5)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 12, growth_interval=1000)
    for _ in range(3):
        opt.zero_grad()
        scaler.scale(model(x).sum()).backward()
        scaler.step(opt)
        scaler.update()
        opt_plain.zero_grad()
        plain(x).sum().backward()
        opt_plain.step()
    for a, b in zip(model.parameters(), plain.parameters()):
        assert torch.equal(a, b)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    scaler.scale(model(x).sum() * float("inf")).backward()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 11
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


@pytest.mark.parametrize("name", ["sgd", "sgd-bf16-mp", "dcasgd"])
def test_grad_scaler_skips_nonfinite_step_entirely(rng, name):
    if name == "dcasgd":
        params = make_params(rng)
        opt = fot.DCASGD(params, lr=0.1, momentum=0.9, lamda=0.5)
    else:
        params = make_params(rng, torch.bfloat16 if "bf16" in name else torch.float32)
        opt = fot.SGD(params, lr=0.1, momentum=0.9, multi_precision="mp" in name)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.ones(()))  # (initialises the scale, as scaling the loss does)
    for p in params:  # one ordinary step first: non-zero momentum and prev != weight
        p.grad = torch.ones_like(p)
    scaler.step(opt)
    scaler.update()
    snapshot = [p.detach().clone() for p in params]
    states = [{k: v.clone() for k, v in opt.state[p].items()} for p in params]
    versions = [p._version for p in params]
    scaler.scale(torch.ones(()))
    for p in params:
        p.grad = torch.ones_like(p)
    params[1].grad[0] = float("inf")
    params[3].grad[0] = float("nan")
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 512.0
    for p, s, st, v in zip(params, snapshot, states, versions):
        assert torch.equal(p, s)
        assert p._version == v
        for k in st:
            assert torch.equal(opt.state[p][k], st[k]), k


# ------------------------------------------------------------------------- autograd versions
def test_version_counter_advanced_like_torch_optim():
    for make in (lambda ps: torch.optim.SGD(ps, lr=0.1), lambda ps: fot.SGD(ps, lr=0.1),
                 lambda ps: fot.DCASGD(ps, lr=0.1)):
        w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
        opt = make([w])
        loss = (w * w).sum()  # backward needs the old w
        w.grad = torch.ones(3)
        v = w._version
        opt.step()
        assert w._version > v
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


@pytest.mark.parametrize("make", [fot.SGD, fot.DCASGD], ids=["SGD", "DCASGD"])
def test_step_hooks_and_profiler_range_as_torch_optim(make):
    """step() skips torch's wrapper only when nothing observes it: per-optimizer and global pre/post
    hooks run once per step, in torch's order, a pre-hook may replace the arguments (here, the
    closure), and the profiler records the step's range under torch's name."""
    from torch.optim import optimizer as torch_optimizer

    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    w.grad = torch.ones(3)
    opt = make([w], lr=0.1)
    assert type(opt).step is fot._MXNetOptimizer.step  # torch did not wrap it a second time
    seen = []
    closure_calls = []

    def closure():
        closure_calls.append(1)
        return torch.tensor(7.0)

    handles = [
        torch_optimizer.register_optimizer_step_pre_hook(lambda o, a, k: seen.append("global pre")),
        # (torch hands the hooks the arguments with the optimizer first)
        opt.register_step_pre_hook(lambda o, a, k: (seen.append("pre"), ((o, closure), {}))[1]),
        opt.register_step_post_hook(lambda o, a, k: seen.append(("post", len(a)))),
        torch_optimizer.register_optimizer_step_post_hook(lambda o, a, k: seen.append("global post")),
    ]
    before = w.detach().clone()
    assert opt.step() == 7.0  # the pre-hook's closure was called
    assert seen == ["global pre", "pre", ("post", 2), "global post"] and closure_calls == [1]
    assert not torch.equal(w.detach(), before)
    for h in handles:
        h.remove()
    seen.clear()
    opt.step()
    assert seen == []

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    names = [e.name for e in prof.events()]
    assert f"Optimizer.step#{make.__name__}.step" in names, names
    assert make([w], lr=0.1).step(closure) == 7.0


# ------------------------------------------------------------------------------- channels_last
@pytest.mark.parametrize("rule", ["sgd", "dcasgd"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_channels_last_parameters(rng, momentum, rule):
    conv = torch.nn.Conv2d(3, 5, 3).to(memory_format=torch.channels_last)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    w0 = np_of(conv.weight)
    x = torch.tensor(rng.standard_normal((2, 3, 6, 6)), dtype=torch.float32).to(
        memory_format=torch.channels_last)
    if rule == "sgd":
        opt = fot.SGD(conv.parameters(), lr=0.1, momentum=momentum, weight_decay=0.01)
    else:
        opt = fot.DCASGD(conv.parameters(), lr=0.1, momentum=momentum, lamda=0.5, weight_decay=0.01)
    grads = []
    ptr, stride = conv.weight.data_ptr(), conv.weight.stride()
    for _ in range(3):
        opt.zero_grad()
        conv(x).tanh().sum().backward()
        assert conv.weight.grad.stride() == stride
        grads.append(np_of(conv.weight.grad))
        opt.step()
    assert conv.weight.data_ptr() == ptr and conv.weight.stride() == stride  # in place
    if rule == "sgd":
        exp = ref.run_sgd(w0, grads, lr=0.1, momentum=momentum, wd=0.01)
    else:
        exp = ref.run_dcasgd(w0, grads, lr=0.1, momentum=momentum, lamda=0.5, wd=0.01)
        assert_close(np_of(opt.state[conv.weight]["prev"]), exp.prev, role="state")
    assert_close(np_of(conv.weight), exp.weight)
    for st in opt.state[conv.weight].values():
        assert st.stride() == stride


@pytest.mark.needs_ml_dtypes
def test_channels_last_bf16_with_masters(rng):
    w = torch.nn.Parameter(torch.randn(4, 3, 3, 3).to(torch.bfloat16, memory_format=torch.channels_last))
    w0 = np_of(w)
    opt = fot.SGD([w], lr=0.1, momentum=0.9, multi_precision=True)
    grads = []
    for _ in range(2):
        w.grad = torch.randn(4, 3, 3, 3).to(torch.bfloat16, memory_format=torch.channels_last)
        grads.append(np_of(w.grad))
        opt.step()
    exp = ref.run_sgd(w0, grads, lr=0.1, momentum=0.9, multi_precision=True)
    assert_close(np_of(w), exp.weight, multi_precision=True)
    assert_close(np_of(opt.state[w]["weight32"]), exp.weight32, role="master", multi_precision=True)
    assert opt.state[w]["weight32"].stride() == w.stride()


def test_channels_last_weight_with_other_grad_layout_refused(rng):
    w = torch.nn.Parameter(torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last))
    w.grad = torch.randn(2, 3, 4, 4)  # contiguous: different strides
    opt = fot.SGD([w], lr=0.1, momentum=0.9)
    before = w.detach().clone()
    with pytest.raises(ValueError, match="grad"):
        opt.step()
    assert torch.equal(w, before)


# ----------------------------------------------------------------------------- sparse embedding
@pytest.mark.parametrize("lazy", [True, False])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sparse_embedding(rng, lazy, momentum):
    emb = torch.nn.Embedding(11, 4, sparse=True)
    w0 = np_of(emb.weight)
    opt = fot.SGD(emb.parameters(), lr=0.1, momentum=momentum, weight_decay=0.05,
                  lazy_update=lazy)
    rsp = []
    for step in range(3):
        idx = torch.tensor(rng.integers(0, 11, size=6))  # repeated rows: the gradient needs coalescing
        opt.zero_grad()
        out = emb(idx)
        coef = torch.tensor(rng.standard_normal(out.shape), dtype=torch.float32)
        (out * coef).sum().backward()
        g = emb.weight.grad
        assert g.is_sparse
        g_before = (g._indices().clone(), g._values().clone())
        rsp.append(rt.coalesce_rows(idx.numpy(), coef.numpy(), 11))
        opt.step()
        assert torch.equal(g._indices(), g_before[0]) and torch.equal(g._values(), g_before[1])
        assert emb.weight.grad.is_sparse  # not densified
    exp = ref.run_sgd(w0, rsp, lr=0.1, momentum=momentum, wd=0.05, lazy_update=lazy)
    assert_close(np_of(emb.weight), exp.weight)
    if momentum:
        assert_close(np_of(opt.state[emb.weight]["mom"]), exp.mom, role="state")


def test_sparse_and_dense_in_one_model(rng):
    emb = torch.nn.Embedding(9, 3, sparse=True)
    lin = torch.nn.Linear(3, 2)
    params = list(emb.parameters()) + list(lin.parameters())
    w0 = [np_of(p) for p in params]
    opt = fot.SGD(params, lr=0.1, momentum=0.9, lazy_update=True)
    idx = torch.tensor([1, 4, 4, 8])
    opt.zero_grad()
    lin(emb(idx)).sum().backward()
    grads = [emb.weight.grad, lin.weight.grad.clone(), lin.bias.grad.clone()]
    opt.step()
    g0 = grads[0].coalesce()
    rsp = ref.RowSparseGrad(g0.values().numpy(), g0.indices()[0].numpy(), (9, 3))
    exp = [ref.run_sgd(w0[0], [rsp], lr=0.1, momentum=0.9, lazy_update=True)] + [
        ref.run_sgd(w0[k], [np_of(grads[k])], lr=0.1, momentum=0.9) for k in (1, 2)]
    for p, e in zip(params, exp):
        assert_close(np_of(p), e.weight)


def test_sparse_with_multi_precision_refused_before_writing():
    emb = torch.nn.Embedding(5, 2, sparse=True).to(torch.bfloat16)
    lin = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    opt = fot.SGD([lin, emb.weight], lr=0.1, multi_precision=True)
    emb(torch.tensor([1, 2])).float().sum().backward()
    lin.grad = torch.ones(3, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="sparse"):
        opt.step()
    assert torch.equal(lin, torch.ones(3, dtype=torch.bfloat16))


# ------------------------------------------------------------------------ low precision
@pytest.mark.needs_ml_dtypes
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_multi_precision_masters(rng, dtype, momentum):
    params = make_params(rng, dtype)
    w0 = [np_of(p) for p in params]
    grads = rand_grads(rng, params, 4)
    opt = fot.SGD(params, lr=0.05, momentum=momentum, weight_decay=0.01, multi_precision=True)
    run(opt, params, grads)
    for k, p in enumerate(params):
        st = opt.state[p]
        assert st["weight32"].dtype == torch.float32
        exp = ref.run_sgd(w0[k], [np_of(gs[k]) for gs in grads], lr=0.05, momentum=momentum,
                          wd=0.01, multi_precision=True)
        assert_close(np_of(p), exp.weight, multi_precision=True)
        assert_close(np_of(st["weight32"]), exp.weight32, role="master", multi_precision=True)
        if momentum:
            assert st["mom"].dtype == torch.float32
            assert_close(np_of(st["mom"]), exp.mom, role="state", multi_precision=True)


def test_low_precision_without_masters_warns(rng):
    params = make_params(rng, torch.bfloat16, shapes=[(3,)])
    params[0].grad = torch.ones(3, dtype=torch.bfloat16)
    opt = fot.SGD(params, lr=0.1)
    with pytest.warns(UserWarning, match="multi_precision=True"):
        opt.step()


def test_autocast_training_and_bf16_model_with_masters(rng):
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = (x[:, :1] * 2 - x[:, 1:2]).tanh()
    for model_dtype, mp in ((torch.float32, False), (torch.bfloat16, True)):
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                    torch.nn.Linear(16, 1)).to(model_dtype)
        opt = fot.SGD(model.parameters(), lr=0.1, momentum=0.9, multi_precision=mp)
        losses = []
        for _ in range(30):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.mse_loss(model(x.to(model_dtype)).float(), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert math.isfinite(losses[-1]) and losses[-1] < 0.5 * losses[0]
        if mp:
            for p in model.parameters():
                assert p.dtype == torch.bfloat16
                assert torch.equal(opt.state[p]["weight32"].to(torch.bfloat16), p)


# --------------------------------------------------------------------------------------- DCASGD
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_dcasgd_matches_reference(rng, momentum, dtype):
    params = make_params(rng, dtype)
    w0 = [np_of(p) for p in params]
    grads = rand_grads(rng, params, 4)
    opt = fot.DCASGD([{"params": params[:3]}, {"params": params[3:], "lr": 0.02, "lamda": 1.0}],
                     lr=0.05, momentum=momentum, lamda=0.5, weight_decay=0.01, clip_gradient=2.0)
    run(opt, params, grads)
    for k, p in enumerate(params):
        lr, lam = (0.05, 0.5) if k < 3 else (0.02, 1.0)
        exp = ref.run_dcasgd(w0[k], [np_of(gs[k]) for gs in grads], lr=lr, momentum=momentum,
                             lamda=lam, wd=0.01, clip_gradient=2.0)
        assert_close(np_of(p), exp.weight)
        assert_close(np_of(opt.state[p]["prev"]), exp.prev, role="state")
        if momentum:
            assert_close(np_of(opt.state[p]["mom"]), exp.mom, role="state")


@pytest.mark.needs_ml_dtypes
def test_dcasgd_multi_precision(rng):
    params = make_params(rng, torch.bfloat16)
    w0 = [np_of(p) for p in params]
    grads = rand_grads(rng, params, 3)
    opt = fot.DCASGD(params, lr=0.05, momentum=0.9, lamda=0.5, multi_precision=True)
    run(opt, params, grads)
    for k, p in enumerate(params):
        exp = ref.run_dcasgd(w0[k], [np_of(gs[k]) for gs in grads], lr=0.05, momentum=0.9,
                             lamda=0.5, multi_precision=True)
        assert_close(np_of(p), exp.weight, multi_precision=True)
        assert_close(np_of(opt.state[p]["weight32"]), exp.weight32, role="master",
                     multi_precision=True)
        assert_close(np_of(opt.state[p]["prev"]), exp.prev, role="state", multi_precision=True)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_dcasgd_adaptive(rng, momentum):
    params = make_params(rng, shapes=[(5,), (3, 3)])
    w0 = [np_of(p) for p in params]
    grads = rand_grads(rng, params, 3)
    opt = fot.DCASGD(params, lr=0.05, momentum=momentum, lamda=2.0, adaptive=True,
                     ms_decay=0.9, eps=1e-6)
    run(opt, params, grads)
    for k, p in enumerate(params):
        w = w0[k].astype(np.float64)
        m = np.zeros_like(w) if momentum else None
        prev, ms = w.copy(), np.zeros_like(w)
        for gs in grads:
            w, m, prev, ms = rt.dcasgd_adaptive_update(
                ref.round_to(w, F32), np_of(gs[k]), m, ref.round_to(prev, F32), ms, lr=0.05,
                momentum=momentum, lamda=2.0, ms_decay=0.9, eps=1e-6)
            ms = ms.astype(F32)
        assert_close(np_of(p), ref.round_to(w, F32))
        assert_close(np_of(opt.state[p]["mean_square"]), ms.astype(F32), role="state")


def test_dcasgd_adaptive_mixed_dtypes_one_group(rng):
    """float32 and float64 parameters in one group: two kernel calls, validated before writing."""
    params = make_params(rng, torch.float32, shapes=[(4,)]) + make_params(rng, torch.float64, shapes=[(3,)])
    w0 = [np_of(p) for p in params]
    grads = rand_grads(rng, params, 2)
    opt = fot.DCASGD(params, lr=0.05, lamda=2.0, adaptive=True)
    run(opt, params, grads)
    for k, p in enumerate(params):
        dt = w0[k].dtype
        w, m, prev, ms = w0[k].astype(np.float64), None, w0[k].astype(np.float64), np.zeros(w0[k].shape)
        for gs in grads:
            w, m, prev, ms = rt.dcasgd_adaptive_update(ref.round_to(w, dt), np_of(gs[k]), m,
                                                       ref.round_to(prev, dt), ms, lr=0.05, lamda=2.0)
            ms = ms.astype(dt)
        assert_close(np_of(p), ref.round_to(w, dt))
        assert opt.state[p]["mean_square"].dtype == p.dtype
    params[1].grad = torch.ones(6, dtype=torch.float64)[::2]  # refused by the second call
    params[0].grad = torch.ones(4)
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError):
        opt.step()
    for p, b in zip(params, before):
        assert torch.equal(p, b)


def test_dcasgd_sparse_refused(rng):
    emb = torch.nn.Embedding(4, 2, sparse=True)
    opt = fot.DCASGD(emb.parameters(), lr=0.1)
    emb(torch.tensor([1])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(TypeError, match="sparse"):
        opt.step()
    assert torch.equal(emb.weight, before)


# ------------------------------------------------------------------------------- plans / groups
def test_add_param_group_and_group_edits(rng):
    params = make_params(rng, shapes=[(3,), (4,), (5,)])
    w0 = [np_of(p) for p in params]
    opt = fot.SGD(params[:1], lr=0.1, momentum=0.9)
    grads = rand_grads(rng, params, 3)
    run(opt, params[:1], [gs[:1] for gs in grads[:1]])
    opt.add_param_group({"params": params[1:2], "lr": 0.01})
    run(opt, params[:2], [gs[:2] for gs in grads[1:2]])
    opt.param_groups[1]["params"].append(params[2])  # edited in place: the cached plan is rebuilt
    run(opt, params, grads[2:])
    extra = torch.nn.Parameter(torch.zeros(4))
    opt.param_groups[1]["params"][0] = extra  # replaced in place (same length): rebuilt too
    extra.grad = torch.ones(4)
    params[1].grad = torch.ones(4)
    params[0].grad = params[2].grad = None
    opt.step()
    assert_close(np_of(extra), np.full(4, -0.01, F32))
    exp = [ref.run_sgd(w0[0], [np_of(g[0]) for g in grads], lr=0.1, momentum=0.9),
           ref.run_sgd(w0[1], [np_of(g[1]) for g in grads[1:]], lr=0.01, momentum=0.9),
           ref.run_sgd(w0[2], [np_of(grads[2][2])], lr=0.01, momentum=0.9)]
    for p, e in zip(params, exp):
        assert_close(np_of(p), e.weight)


def test_mixed_dtypes_in_one_group(rng):
    params = make_params(rng, torch.float32, shapes=[(3,), (4,)]) + \
        make_params(rng, torch.float64, shapes=[(5,)])
    w0 = [np_of(p) for p in params]
    grads = rand_grads(rng, params, 2)
    opt = fot.SGD(params, lr=0.1, momentum=0.9)
    run(opt, params, grads)
    for k, p in enumerate(params):
        assert_close(np_of(p), ref.run_sgd(w0[k], [np_of(g[k]) for g in grads], lr=0.1,
                                           momentum=0.9).weight)


# ----------------------------------------------------------------------------------- bad input
def test_bad_hyperparameters_named():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="lr"):
        fot.SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match="momentum"):
        fot.SGD([p], momentum=float("nan"))
    with pytest.raises(ValueError, match="clip_gradient"):
        fot.SGD([p], clip_gradient=0.0)
    with pytest.raises(TypeError, match="lr"):
        fot.SGD([p], lr="0.1")
    with pytest.raises(ValueError, match="multi_precision"):
        fot.SGD([p], lazy_update=True, multi_precision=True)
    opt = fot.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "weight_decay": -1})
    assert len(opt.param_groups) == 1


def test_bad_group_or_grad_writes_nothing():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(4))
    opt = fot.SGD([{"params": [a]}, {"params": [b]}], lr=0.1, momentum=0.9)
    a.grad, b.grad = torch.ones(3), torch.ones(4)
    opt.param_groups[1]["lr"] = -1.0  # what a buggy scheduler could do
    with pytest.raises(ValueError, match="lr"):
        opt.step()
    opt.param_groups[1]["lr"] = 0.1
    b.grad = torch.ones(8)[::2]  # not dense: refused by the second kernel call
    with pytest.raises(ValueError):
        opt.step()
    assert torch.equal(a, torch.ones(3)) and torch.equal(b, torch.ones(4))
    b.grad = torch.ones(4)
    opt.step()
    assert not torch.equal(a, torch.ones(3))


def test_integer_parameter_refused():
    with pytest.raises(TypeError, match="dtype"):
        opt = fot.SGD([torch.zeros(3, dtype=torch.int32)], lr=0.1)
        opt.step()


# ------------------------------------------------------------------------------- torch.compile
# Dynamo itself warns while tracing zero_grad (torch.optim.SGD's step warns the same way).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_torch_compile_training_step(rng):
    """A compiled function doing zero_grad / forward / backward / opt.step() equals eager."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    eager = copy.deepcopy(model)
    x = torch.randn(8, 4)
    opt = fot.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_e = fot.SGD(eager.parameters(), lr=0.1, momentum=0.9)

    def train_step(m, o):
        o.zero_grad()
        loss = m(x).square().mean()
        loss.backward()
        o.step()
        return loss

    compiled = torch.compile(train_step, backend="eager")
    for _ in range(2):
        compiled(model, opt)
        train_step(eager, opt_e)
    for a, b in zip(model.parameters(), eager.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["sgd", "dcasgd-bf16-mp"])
def test_torch_compile_step_fullgraph(rng, name):
    """torch.compile(opt.step, fullgraph=True): the update is a torch.library custom op
    (fusedopt::mxnet_step_), traced without graph breaks; bitwise equal to the eager step, states
    created inside the compiled step, the version counter advanced."""
    make = {"sgd": lambda ps: fot.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01, clip_gradient=1.0),
            "dcasgd-bf16-mp": lambda ps: fot.DCASGD(ps, lr=0.1, momentum=0.9, lamda=0.5,
                                                    multi_precision=True)}[name]
    dtype = torch.bfloat16 if "bf16" in name else torch.float32
    params = make_params(rng, dtype, shapes=[(3, 4), (5,)])
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt, opt_e = make(params), make(twins)
    step = torch.compile(opt.step, fullgraph=True, backend="aot_eager")
    for gs in rand_grads(rng, params, 3):
        versions = [p._version for p in params]
        for a, b, g in zip(params, twins, gs):
            a.grad, b.grad = g.clone(), g.clone()
        step()
        opt_e.step()
        assert all(p._version > v for p, v in zip(params, versions))
    for a, b in zip(params, twins):
        assert torch.equal(a, b)
        for key in opt_e.state[b]:
            assert torch.equal(opt.state[a][key], opt_e.state[b][key]), key


def test_import_fusedopt_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, fusedopt; assert 'torch' not in sys.modules and 'fusedopt.torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**__import__("os").environ})


def test_deepcopy_and_pickle_keep_working(rng):
    import pickle

    params = make_params(rng, shapes=[(3,), (4,)])
    opt = fot.SGD(params, lr=0.1, momentum=0.9)
    grads = rand_grads(rng, params, 2)
    run(opt, params, grads[:1])
    clone = copy.deepcopy({"p": params, "opt": opt})
    restored = pickle.loads(pickle.dumps({"p": params, "opt": opt}))
    run(opt, params, grads[1:])
    for other in (clone, restored):
        run(other["opt"], other["p"], grads[1:])
        for a, b in zip(params, other["p"]):
            assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_torch_compile_sparse_embedding_falls_back_to_eager(rng):
    emb = torch.nn.Embedding(6, 3, sparse=True)
    twin = copy.deepcopy(emb)
    opt = fot.SGD(emb.parameters(), lr=0.1, momentum=0.9)
    opt_e = fot.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    step = torch.compile(opt.step, backend="eager")  # a graph break at the eager step
    idx = torch.tensor([1, 3, 1])
    for _ in range(2):
        for m, s in ((emb, step), (twin, opt_e.step)):
            m.zero_grad()
            m(idx).sum().backward()
            s()
    assert torch.equal(emb.weight, twin.weight)


def test_state_made_at_first_gradient(rng):
    """As torch.optim: a parameter gets its state at its first gradient (DCASGD's prev is the weight
    then, so its first update equals SGD's); one that never has a gradient has no state."""
    params = make_params(rng, shapes=[(3,), (4,), (5,)])
    opt = fot.DCASGD(params, lr=0.1, momentum=0.9, lamda=0.5)
    grads = rand_grads(rng, params, 3)
    run(opt, params, [[grads[0][0], None, None]])
    assert params[1] not in opt.state and params[2] not in opt.state
    with torch.no_grad():
        params[1].mul_(2.0)  # edited before its first update: prev must be this value
    w1 = np_of(params[1])
    run(opt, params, [[grads[1][0], grads[1][1], None], [grads[2][0], grads[2][1], None]])
    exp = ref.run_dcasgd(w1, [np_of(grads[1][1]), np_of(grads[2][1])], lr=0.1, momentum=0.9,
                         lamda=0.5)
    assert_close(np_of(params[1]), exp.weight)
    assert params[2] not in opt.state
    assert sorted(opt.state_dict()["state"]) == [0, 1]


def test_readme_training_loop_runs(tmp_path, monkeypatch):
    """The training loop of the README's PyTorch section, executed as written."""
    import os
    import re

    readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## PyTorch: `fusedopt.torch`"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102
    assert (tmp_path / "ckpt.pt").exists()
