"""Runtime part `families`: what the optimizer families beyond SGD and Adam
need in a parameter group, Muon's (Muon, AdamW) pair, and Lion.

Which parameters Muon steps: those whose rules (class or sub-role) give an
`lr.muon` rule (MUON_BLOCKS); every other one is AdamW's, with the spec's
Adam rules. Each group's LR factor is the spec's rule for the family that
steps it. Adafactor's eps2 (its floor on a parameter's RMS) moves with the
init std, as Adam's eps moves with the gradient (docs/checking.md).

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.rules import _family

# ---- RUNTIME (everything below is copied into each generated module) ----

ADAFACTOR_EPS2 = 1e-3  # torch.optim.Adafactor's floor on a parameter's RMS, at the base model


def _family_values(record, optimizer, eps):
    """A parameter group's family-specific entries: Adam's eps; Adafactor's
    (eps1, eps2), eps2 scaled with the init std; which optimizer of Muon's
    pair steps it. SGD, Lion and Muon take no eps."""
    family = _family(optimizer, record.block)
    values = {"family": family} if optimizer == "muon" else {}
    if family == "adam":
        values["eps"] = eps * record.eps_factor
    elif family == "adafactor":
        values["eps"] = (None, ADAFACTOR_EPS2 * record.eps_factor)
    return values


def _muon_pair(groups, lr, muon_kwargs, adamw_kwargs):
    """Muon over the Muon groups (torch's default "original" LR adjustment,
    sqrt(max(1, fan_out/fan_in)): width-independent at a fixed aspect ratio),
    AdamW over the others; either is None when it has no group."""
    families = [g.pop("family") for g in groups]
    muon = [g for g, family in zip(groups, families) if family == "muon"]
    adamw = [g for g, family in zip(groups, families) if family != "muon"]
    return (torch.optim.Muon(muon, lr=lr, **muon_kwargs) if muon else None,
            torch.optim.AdamW(adamw, lr=lr, **adamw_kwargs) if adamw else None)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): p -= lr * (sign(b1*m + (1-b1)*g) + wd*p), then
    m = b2*m + (1-b2)*g. betas=(0, 0) is sign-SGD."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1.0 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * beta1 + p.grad * (1.0 - beta1)), alpha=-group["lr"])
                m.mul_(beta2).add_(p.grad, alpha=1.0 - beta2)
        return loss
