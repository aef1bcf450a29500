import io
import math

import pytest
import torch

from e4e.errors import E4EError
from e4e.train.optim import Ranger, build_optimizer

B1, B2, EPS = 0.95, 0.999, 1e-5


def test_first_step_hand_computed():
    # Step 1 is un-adapted (rho_1 = 1 < 5): m = 0.05 g and the bias correction 1/(1-0.95) = 20 give p - lr g.
    p = torch.tensor([1.0, -2.0], requires_grad=True)
    w = torch.tensor([[0.5, 0.5]], requires_grad=True)  # 2-D: its gradient is centralised
    opt = Ranger([p, w], lr=0.1)
    (p @ torch.tensor([2.0, 1.0]) + (w * torch.tensor([[1.0, 3.0]])).sum()).backward()
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.8, -2.1]))
    # gradient (1, 3) minus its mean 2 -> (-1, 1)
    torch.testing.assert_close(w.detach(), torch.tensor([[0.6, 0.4]]))


def test_constant_gradient_through_lookahead_hand_computed():
    # With a constant gradient g, m_t = (1-b1^t) g and v_t = (1-b2^t) g^2. Steps 1-5 (rho_t < 5) each
    # move p by exactly lr g; step 6 (rho_6 > 5) is the rectified Adam step; then Lookahead (k=6,
    # alpha=0.5) puts p halfway between the start and the fast weights.
    lr, g, p0 = 0.01, 2.0, 1.0
    p = torch.tensor([p0], requires_grad=True)
    opt = Ranger([p], lr=lr)
    for _ in range(6):
        opt.zero_grad()
        (g * p).sum().backward()
        opt.step()
    rho_inf = 2 / (1 - B2) - 1
    rho6 = rho_inf - 2 * 6 * B2 ** 6 / (1 - B2 ** 6)
    assert rho6 > 5 and rho_inf - 2 * 5 * B2 ** 5 / (1 - B2 ** 5) < 5
    r6 = math.sqrt((1 - B2 ** 6) * (rho6 - 4) / (rho_inf - 4) * (rho6 - 2) / rho6 * rho_inf / (rho_inf - 2))
    m6, v6 = (1 - B1 ** 6) * g, (1 - B2 ** 6) * g * g
    fast = p0 - 5 * lr * g - lr * r6 / (1 - B1 ** 6) * m6 / (math.sqrt(v6) + EPS)
    assert float(p.detach()) == pytest.approx(p0 + 0.5 * (fast - p0), rel=1e-6)


def reference_ranger(params, grads_fn, steps, lr, alpha=0.5, k=6, thresh=5.0):
    """The Ranger rule, one parameter at a time, in float64 and plain arithmetic."""
    params = [p.detach().double().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    slow = [p.clone() for p in params]
    rho_inf = 2 / (1 - B2) - 1
    for t in range(1, steps + 1):
        grads = grads_fn([p.float() for p in params])
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g.double()
            if g.dim() > 1:
                g = g - g.mean(dim=tuple(range(1, g.dim())), keepdim=True)
            m[i] = B1 * m[i] + (1 - B1) * g
            v[i] = B2 * v[i] + (1 - B2) * g * g
            rho = rho_inf - 2 * t * B2 ** t / (1 - B2 ** t)
            if rho > thresh:
                r = math.sqrt((1 - B2 ** t) * (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * rho * (rho_inf - 2)))
                p -= lr * r / (1 - B1 ** t) * m[i] / (v[i].sqrt() + EPS)
            else:
                p -= lr / (1 - B1 ** t) * m[i]
            if t % k == 0:
                slow[i] += alpha * (p - slow[i])
                p.copy_(slow[i])
    return params


def tiny_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=g)
    target = torch.randn(16, 2, generator=g)
    w = torch.randn(2, 3, generator=g)
    b = torch.randn(2, generator=g)

    def loss_fn(w, b):
        return ((x @ w.t() + b - target) ** 2).mean()

    def grads_fn(ps):
        ps = [p.detach().requires_grad_() for p in ps]
        return torch.autograd.grad(loss_fn(*ps), ps)

    return (w, b), loss_fn, grads_fn


def test_matches_step_by_step_reference():
    (w0, b0), loss_fn, grads_fn = tiny_problem()
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = Ranger([w, b], lr=0.05)
    steps = 14  # crosses the rho_t > 5 switch (step 6) and two Lookahead syncs (6, 12)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(w, b).backward()
        opt.step()
    ref_w, ref_b = reference_ranger([w0, b0], grads_fn, steps, lr=0.05)
    torch.testing.assert_close(w.detach().double(), ref_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.detach().double(), ref_b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(w.detach(), w0)


def test_minimises_a_quadratic():
    target = torch.tensor([3.0, -1.0, 0.5, 2.0])
    p = torch.zeros(4, requires_grad=True)
    opt = Ranger([p], lr=0.05)
    start = float((target ** 2).sum())
    for _ in range(1000):
        opt.zero_grad()
        loss = ((p - target) ** 2).sum()
        loss.backward()
        opt.step()
    assert float(((p.detach() - target) ** 2).sum()) < 1e-8 * start


def test_state_dict_round_trip_is_bit_exact():
    (w0, b0), loss_fn, _ = tiny_problem()

    def run(w, b, opt, n):
        for _ in range(n):
            opt.zero_grad()
            loss_fn(w, b).backward()
            opt.step()

    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = Ranger([w, b], lr=0.05)
    run(w, b, opt, 4)
    buf = io.BytesIO()
    torch.save({"w": w.detach().clone(), "b": b.detach().clone(), "opt": opt.state_dict()}, buf)
    run(w, b, opt, 9)  # across the rho switch and the step-6 and step-12 Lookahead syncs

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    w2, b2 = saved["w"].requires_grad_(), saved["b"].requires_grad_()
    opt2 = Ranger([w2, b2], lr=1.0)  # settings come back from the state dict
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups[0]["lr"] == 0.05
    run(w2, b2, opt2, 9)
    assert torch.equal(w.detach(), w2.detach()) and torch.equal(b.detach(), b2.detach())
    assert opt.state[w]["step"] == opt2.state[w2]["step"] == 13
    assert torch.equal(opt.state[w]["slow_buffer"], opt2.state[w2]["slow_buffer"])


def test_official_state_dict_layout():
    p = torch.zeros(2, 2, requires_grad=True)
    opt = Ranger([p], lr=1e-4)
    p.sum().backward()
    opt.step()
    sd = opt.state_dict()
    # official training/ranger.py: defaults dict keys and per-parameter state names
    assert set(sd["param_groups"][0]) == {"lr", "alpha", "k", "step_counter", "betas", "N_sma_threshhold",
                                          "eps", "weight_decay", "params"}
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "slow_buffer"}
    g = sd["param_groups"][0]
    assert (g["alpha"], g["k"], g["N_sma_threshhold"], g["betas"], g["eps"], g["weight_decay"]) == \
        (0.5, 6, 5, (0.95, 0.999), 1e-5, 0)


def test_build_optimizer():
    p = [torch.zeros(3, requires_grad=True)]
    assert isinstance(build_optimizer("ranger", p, 1e-4), Ranger)
    adam = build_optimizer("adam", p, 1e-4)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 1e-4
    with pytest.raises(E4EError, match="sgd"):
        build_optimizer("sgd", p, 1e-4)


def test_foreach_equals_the_per_tensor_loop():
    """impl=fast's multi-tensor Ranger: the same parameters and state, bit for bit, as the loop; with
    tensors that skip steps (no gradient: a closed e4e offset), so step counts differ between tensors
    and the foreach path groups them by count; weight decay and conv-shaped gradients included."""
    torch.manual_seed(0)
    shapes = [(4, 3, 3, 3), (4,), (5, 4), (2, 2, 1, 1), (7,)]
    init = [torch.randn(s) for s in shapes]
    runs = []
    for foreach in (False, True):
        ps = [t.clone().requires_grad_() for t in init]
        opt = Ranger(ps, lr=0.03, weight_decay=0.01, foreach=foreach)
        g = torch.Generator().manual_seed(1)
        for step in range(15):  # crosses the rho switch and two Lookahead syncs
            opt.zero_grad(set_to_none=True)
            loss = sum((p * torch.randn(p.shape, generator=g)).sum() + (p ** 2).sum() for p in ps)
            loss.backward()
            if step < 5:
                ps[2].grad = None  # opened later: its step count lags the others'
            if step % 4 == 3:
                ps[4].grad = None
            opt.step()
        runs.append((ps, opt))
    (a, oa), (b, ob) = runs
    for pa, pb in zip(a, b):
        assert torch.equal(pa.detach(), pb.detach())
        for k in ("exp_avg", "exp_avg_sq", "slow_buffer"):
            assert torch.equal(oa.state[pa][k], ob.state[pb][k])
        assert oa.state[pa]["step"] == ob.state[pb]["step"]
    assert oa.state[a[2]]["step"] == 10 and oa.state[a[0]]["step"] == 15
    assert not torch.equal(a[0].detach(), init[0])
