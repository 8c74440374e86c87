"""Bilevel optimisation of DARTS: the architecture (alpha) step, first or second order.

DARTS (Liu et al., arXiv 1806.09055), ``architect.py`` of the official code, eq. 6-8:

* first order: grad_alpha L_val(w, alpha) -- the current weights are taken as optimal;
* second order: the gradient at one unrolled weight step
  ``w' = w - xi * (momentum * m + grad_w L_train(w, alpha) + wd * w)`` (m = SGD momentum buffer),
  ``grad_alpha L_val(w', alpha) - xi * (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps)``
  with ``w+- = w +- eps * grad_w' L_val(w', alpha)`` and ``eps = 0.01 / ||grad_w' L_val||``
  (the finite-difference Hessian-vector product, eq. 8).

Everything is computed in place on the one network: weights are overwritten with w', w+ and
w-, then restored from one saved copy, so no model is allocated per step (the authors'
code builds a new model every step). alpha is updated with Adam (lr 3e-4, betas (0.5, 0.999),
weight decay 1e-3). BatchNorm running statistics see the extra forward passes, as in the
authors' code; they only matter for eval-mode scoring.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

LossFn = Callable[[object], Tensor]  # batch -> scalar loss


class Architect:
    """Updates ``arch`` parameters; ``weights`` and ``w_optimizer`` (SGD) give the unrolled step."""

    def __init__(self, arch: list[nn.Parameter], weights: list[nn.Parameter], w_optimizer: torch.optim.SGD,
                 lr: float = 3e-4, betas: tuple[float, float] = (0.5, 0.999), weight_decay: float = 1e-3,
                 order: int = 1, hvp_scale: float = 0.01):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        self.arch, self.weights, self.w_optimizer, self.order = list(arch), list(weights), w_optimizer, order
        self.hvp_scale = hvp_scale  # eps = hvp_scale / ||v|| (DARTS: 0.01)
        self.optimizer = torch.optim.Adam(self.arch, lr=lr, betas=tuple(betas), weight_decay=weight_decay)

    def step(self, loss_fn: LossFn, train, val, xi: float) -> Tensor:
        """One alpha update; ``xi`` is the weights' current learning rate. Returns L_val (detached)."""
        grads, loss = (self.first_order(loss_fn, val) if self.order == 1
                       else self.second_order(loss_fn, train, val, xi))
        for p, g in zip(self.arch, grads):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def first_order(self, loss_fn: LossFn, val) -> tuple[list[Tensor], Tensor]:
        loss = loss_fn(val)
        # grads for alpha only: autograd skips the weight gradients (about a third of a backward)
        return _grad(loss, self.arch), loss.detach()

    def second_order(self, loss_fn: LossFn, train, val, xi: float) -> tuple[list[Tensor], Tensor]:
        backup = [w.detach().clone() for w in self.weights]  # the one copy: w, to restore
        try:
            with torch.no_grad():
                step = self._unrolled_step(loss_fn, train)
                torch._foreach_add_(self.weights, step, alpha=-xi)  # w <- w'
            loss = loss_fn(val)
            grads = _grad(loss, self.weights + self.arch)
            dalpha, v = grads[len(self.weights):], grads[:len(self.weights)]
            hvp = self._hessian_vector(loss_fn, train, backup, v)
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.weights, backup)
        return [da - xi * h for da, h in zip(dalpha, hvp)], loss.detach()

    def _unrolled_step(self, loss_fn: LossFn, train) -> list[Tensor]:
        """momentum * m + grad_w L_train + wd * w (the SGD step direction, without lr)."""
        group = self.w_optimizer.param_groups[0]
        with torch.enable_grad():
            grads = _grad(loss_fn(train), self.weights)
        step = [g.add(w, alpha=group["weight_decay"]) for g, w in zip(grads, self.weights)]
        for s, w in zip(step, self.weights):
            buf = self.w_optimizer.state.get(w, {}).get("momentum_buffer")
            if buf is not None:
                s.add_(buf, alpha=group["momentum"])
        return step

    def _hessian_vector(self, loss_fn: LossFn, train, w0: list[Tensor], v: list[Tensor]) -> list[Tensor]:
        """(grad_alpha L_train(w0 + eps v) - grad_alpha L_train(w0 - eps v)) / (2 eps), eps = hvp_scale / ||v||."""
        eps = self.hvp_scale / torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in v])).item()
        grads = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                torch._foreach_copy_(self.weights, w0)
                torch._foreach_add_(self.weights, v, alpha=sign * eps)
            grads.append(_grad(loss_fn(train), self.arch))
        return [(gp - gm) / (2 * eps) for gp, gm in zip(*grads)]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def _grad(loss: Tensor, params: list[Tensor]) -> list[Tensor]:
    """d loss / d params; zeros for a parameter the loss does not reach (e.g. a pruned op)."""
    return list(torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True))
