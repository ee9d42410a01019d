"""Exponential moving average of a model's weights (Polyak averaging).

WHY: with a few recordings per species the weights after any one epoch depend on the last
few hundred batches, and the epoch picked on a validation split of two recordings per
species is partly luck. The running average of the weights over the last few epochs is a
smoother model that usually generalises better than any single iterate, and the epoch that
validation picks matters less. Validation, test and the saved checkpoints use the average;
the optimiser keeps updating the live weights.

Float buffers (batch-norm statistics) are averaged the same way; integer buffers (batch
counters) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """``average = decay * average + (1 - decay) * live`` after every optimiser step.

    The effective decay ramps up as ``(1 + n) / (10 + n)`` over the first steps (capped at
    ``decay``), so the average is not dominated by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.steps = 0
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, live: nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        averaged = self.model.state_dict()
        for name, value in live.state_dict().items():
            target = averaged[name]
            if target.dtype.is_floating_point:
                target.mul_(decay).add_(value.detach(), alpha=1.0 - decay)
            else:
                target.copy_(value)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "model_state": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.model.load_state_dict(state["model_state"])
