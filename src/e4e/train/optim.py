"""Optimisers of the official e4e trainer: Ranger (its default, `optim_name` 'ranger') and Adam.

Ranger here reproduces the official training/ranger.py (lessw2020's Ranger, version 20.4.11): RAdam with
gradient centralisation, plus Lookahead kept per parameter. Parameter-group keys and per-parameter state
names (`step`, `exp_avg`, `exp_avg_sq`, `slow_buffer`) are the official ones, so an official optimizer
state dict loads and state_dict()/load_state_dict() round-trips exactly.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from e4e.errors import E4EError


class Ranger(Optimizer):
    """RAdam + Lookahead + gradient centralisation.

    Per step, for each parameter with a gradient g (gradients of tensors with more than one dimension
    are centralised first: g -= mean of g over all but dim 0):
        m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  t += 1
        rho_inf = 2/(1-b2) - 1;  rho_t = rho_inf - 2 t b2^t / (1-b2^t)
        if rho_t > N_sma_threshhold: p -= lr * r_t / (1-b1^t) * m / (sqrt(v) + eps),
            r_t = sqrt((1-b2^t) (rho_t-4)/(rho_inf-4) (rho_t-2)/rho_t rho_inf/(rho_inf-2))
        else:                        p -= lr / (1-b1^t) * m
    and every k-th step (Lookahead): slow += alpha (p - slow); p = slow. `slow` starts as p before the
    first step. weight_decay (0 in e4e) shrinks p by lr*weight_decay before the update.

    foreach=True (the trainer's impl="fast") does the same arithmetic with torch._foreach_* over every
    parameter that shares a step count: a handful of kernels per step instead of about six per tensor
    (an encoder has hundreds of tensors, so the per-tensor loop is launch-bound on a GPU). Gradient
    centralisation stays one mean per tensor. Both give identical results (tests/test_optim.py).
    """

    def __init__(self, params, lr: float = 1e-3, alpha: float = 0.5, k: int = 6, N_sma_threshhold: float = 5,
                 betas=(0.95, 0.999), eps: float = 1e-5, weight_decay: float = 0,
                 use_gc: bool = True, gc_conv_only: bool = False, foreach: bool = False):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"invalid slow update rate: {alpha}")
        if not k >= 1:
            raise ValueError(f"invalid lookahead steps: {k}")
        if not lr > 0:
            raise ValueError(f"invalid learning rate: {lr}")
        if not eps > 0:
            raise ValueError(f"invalid eps: {eps}")
        # Same group keys as the official class (step_counter is unused there too), so its saved
        # optimizer state dicts load here.
        defaults = dict(lr=lr, alpha=alpha, k=k, step_counter=0, betas=betas,
                        N_sma_threshhold=N_sma_threshhold, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.use_gc = use_gc
        # Centralise gradients of tensors with more dims than this: 1 = conv and linear weights.
        self.gc_min_dims = 3 if gc_conv_only else 1
        # not a group key: official state dicts have none, and load_state_dict takes the saved groups' keys
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.foreach:
            self._step_foreach()
            return loss
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Ranger does not support sparse gradients")
                grad = p.grad.float()
                p32 = p.float()  # p itself for float32 parameters
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p32)
                    state["exp_avg_sq"] = torch.zeros_like(p32)
                    state["slow_buffer"] = p.detach().clone()
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

                if self.use_gc and grad.dim() > self.gc_min_dims:
                    # out of place: the official version also rewrote p.grad, which nothing reads
                    grad = grad - grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)

                state["step"] += 1
                t = state["step"]
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)

                n_sma, step_size = _radam_step_size(t, beta1, beta2, group["N_sma_threshhold"])
                if group["weight_decay"] != 0:
                    p32.add_(p32, alpha=-group["weight_decay"] * lr)
                if n_sma > group["N_sma_threshhold"]:
                    denom = exp_avg_sq.sqrt().add_(eps)
                    p32.addcdiv_(exp_avg, denom, value=-step_size * lr)
                else:
                    p32.add_(exp_avg, alpha=-step_size * lr)
                if p32 is not p:
                    p.copy_(p32)

                if t % group["k"] == 0:
                    slow = state["slow_buffer"]
                    slow.add_(p - slow, alpha=group["alpha"])
                    p.copy_(slow)
        return loss


    def _step_foreach(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            by_step: dict[int, list] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Ranger does not support sparse gradients")
                if p.dtype != torch.float32 or p.grad.dtype != torch.float32:
                    raise RuntimeError("Ranger(foreach=True) needs float32 parameters and gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["slow_buffer"] = p.detach().clone()
                state["step"] += 1
                by_step.setdefault(state["step"], []).append(p)
            for t, params in by_step.items():
                states = [self.state[p] for p in params]
                grads = [p.grad for p in params]
                if self.use_gc:
                    grads = [g - g.mean(dim=tuple(range(1, g.dim())), keepdim=True) if g.dim() > self.gc_min_dims
                             else g for g in grads]
                exp_avg = [s["exp_avg"] for s in states]
                exp_avg_sq = [s["exp_avg_sq"] for s in states]
                torch._foreach_mul_(exp_avg_sq, beta2)
                torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
                torch._foreach_mul_(exp_avg, beta1)
                torch._foreach_add_(exp_avg, grads, alpha=1 - beta1)
                n_sma, step_size = _radam_step_size(t, beta1, beta2, group["N_sma_threshhold"])
                if group["weight_decay"] != 0:
                    torch._foreach_add_(params, params, alpha=-group["weight_decay"] * lr)
                if n_sma > group["N_sma_threshhold"]:
                    denom = torch._foreach_sqrt(exp_avg_sq)
                    torch._foreach_add_(denom, eps)
                    torch._foreach_addcdiv_(params, exp_avg, denom, value=-step_size * lr)
                else:
                    torch._foreach_add_(params, exp_avg, alpha=-step_size * lr)
                if t % group["k"] == 0:
                    slow = [s["slow_buffer"] for s in states]
                    torch._foreach_add_(slow, torch._foreach_sub(params, slow), alpha=group["alpha"])
                    torch._foreach_copy_(params, slow)


def _radam_step_size(t: int, beta1: float, beta2: float, threshold: float) -> tuple[float, float]:
    """RAdam's length of the SMA (rho_t) and bias-corrected step size, in Python floats as the official."""
    beta2_t = beta2 ** t
    n_sma_max = 2 / (1 - beta2) - 1
    n_sma = n_sma_max - 2 * t * beta2_t / (1 - beta2_t)
    if n_sma > threshold:
        step_size = math.sqrt((1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma
                              * n_sma_max / (n_sma_max - 2)) / (1 - beta1 ** t)
    else:
        step_size = 1.0 / (1 - beta1 ** t)
    return n_sma, step_size


OPTIMIZERS = ("ranger", "adam")


def build_optimizer(name: str, params, lr: float, foreach: bool = False) -> Optimizer:
    """The official trainer's choice: Ranger with its defaults, or torch Adam with its defaults.
    foreach=True: the same updates in multi-tensor kernels (Adam: torch's own foreach implementation)."""
    if name == "ranger":
        return Ranger(params, lr=lr, foreach=foreach)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, foreach=foreach or None)
    raise E4EError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
