"""The one training loop: train.py and train_distillation.py differ only in the loss plugged in.

A loss is any callable ``loss(logits, batch) -> scalar tensor``; the batch is the dict the
dataset yields (``audio``, ``label``, plus whatever a distillation dataset adds). A loss with
``needs_student_embedding = True`` also finds the model's projection in
``batch["student_embedding"]``. Windows with ``label == -1`` carry teacher targets only: they
count in the training loss but not in the training accuracy.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets.augmentation import mixup_batch
from training.distributed import DistEnv, gather_by_index, max_across_ranks, sum_across_ranks
from training.weight_average import WeightAverage

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, dict], torch.Tensor]


@dataclass
class EvalResult:
    loss: float
    y_true: np.ndarray
    y_pred: np.ndarray
    probabilities: np.ndarray
    # Mean cosine between the model's projection and BirdNET's embedding, when both exist.
    embedding_cosine: float | None = None


@dataclass
class FitState:
    """Everything needed to continue an interrupted run exactly where it stopped."""

    epoch: int = 0
    best_score: float = -float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


def monitor_score(row: dict, monitor: str) -> float:
    """Higher is better: a loss is negated so one comparison serves every metric.

    ``last`` scores an epoch by its number, so each epoch improves on the one before.
    """
    if monitor == "last":
        return float(row["epoch"])
    value = float(row[monitor])
    return -value if monitor.endswith("loss") else value


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        device: torch.device,
        grad_clip: float | None = None,
        mixup_alpha: float = 0.0,
        env: DistEnv | None = None,
        amp: bool = False,
        ema_decay: float = 0.0,
    ):
        self.env = env or DistEnv()
        self.core = model.to(device)  # the plain model: saving, summaries, state dicts
        self.model = self.core
        if self.env.enabled:
            ids = [device.index] if device.type == "cuda" else None
            # A projection head unused by the loss, or a class head unused in pre-training,
            # gets no gradient: DDP must be told to expect that.
            unused = (getattr(self.core, "projection", None) is not None
                      or hasattr(loss_fn, "needs_student_embedding"))
            self.model = nn.parallel.DistributedDataParallel(
                self.core, device_ids=ids, find_unused_parameters=unused)
        # Mixed precision only where it pays off and is supported: CUDA.
        self.amp = amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.grad_clip = grad_clip
        self.mixup_alpha = mixup_alpha
        # Validation, test and checkpoints use the weight average when there is one.
        self.average = WeightAverage(self.core, ema_decay) if ema_decay > 0 else None

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated, tested and saved: the average, if kept."""
        return self.average.model if self.average is not None else self.core

    def _to_device(self, batch: dict) -> dict:
        return {
            k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()
        }

    def train_epoch(self, loader: DataLoader, epoch: int) -> dict:
        """One pass; also measures how much of each step was spent waiting for data."""
        self.model.train()
        total_loss, correct, seen, labelled = 0.0, 0, 0, 0
        wait_s = 0.0
        started = time.perf_counter()
        batches = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False)
        iterator = iter(batches)
        while True:
            before = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            wait_s += time.perf_counter() - before
            batch = self._to_device(batch)
            with torch.autocast("cuda", enabled=self.amp):
                logits, loss = self._forward_loss(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"Loss became {loss.item()} at epoch {epoch}; lower optimizer.lr or check "
                    "the input audio."
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.average is not None:
                self.average.update(self.core)
            n = batch["audio"].shape[0]
            total_loss += loss.item() * n
            has_label = batch["label"] >= 0
            correct += int(((logits.argmax(1) == batch["label"]) & has_label).sum())
            labelled += int(has_label.sum())
            seen += n
            batches.set_postfix(loss=f"{total_loss / seen:.3f}")
        elapsed = time.perf_counter() - started
        # Sums over all ranks: the epoch's figures are those of the whole job.
        total_loss, correct, seen, labelled, wait_s = sum_across_ranks(
            [total_loss, correct, seen, labelled, wait_s], self.env
        )
        elapsed_all = max_across_ranks(elapsed, self.env)
        return {
            "train_loss": total_loss / max(1, seen),
            "train_accuracy": correct / max(1, labelled),
            "windows_per_s": seen / max(elapsed_all, 1e-9),
            "data_wait_fraction": wait_s / max(elapsed * self.env.world_size, 1e-9),
            "epoch_seconds": elapsed_all,
        }

    def _run_model(self, audio: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(logits, extra batch fields): the projection when the loss reads it."""
        if getattr(self.loss_fn, "needs_student_embedding", False):
            logits, embedding = self.model(audio, return_embedding=True)
            return logits, {"student_embedding": embedding}
        return self.model(audio), {}

    def _forward_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixup_alpha <= 0:
            logits, extra = self._run_model(batch["audio"])
            return logits, self.loss_fn(logits, {**batch, **extra})
        mixed, partner, lam = mixup_batch(batch, self.mixup_alpha)
        logits, extra = self._run_model(mixed["audio"])
        batch, partner = {**batch, **extra}, {**partner, **extra}
        main_loss = self.loss_fn(logits, batch)
        # An adaptive loss learns class statistics from the dominant labels only.
        freeze = getattr(self.loss_fn, "frozen_statistics", contextlib.nullcontext)
        with freeze():
            partner_loss = self.loss_fn(logits, partner)
        return logits, lam * main_loss + (1 - lam) * partner_loss

    @torch.no_grad()
    def evaluate(self, loader: DataLoader) -> EvalResult:
        """Hard-label cross-entropy and predictions, whatever the training loss is.

        Under torchrun each rank scores its share and the shares are gathered, so every rank
        returns the same full result.
        """
        model = self.eval_model
        model.eval()
        indices, losses, labels, probabilities = [], [], [], []
        cosine_sum, cosine_n = 0.0, 0
        project = getattr(model, "projection", None) is not None
        # The target the projection learns (standardised BirdNET embedding, or raw).
        target = getattr(self.loss_fn, "embedding_target", lambda teacher: teacher)
        for batch in loader:
            batch = self._to_device(batch)
            if project and "teacher_embedding" in batch:
                logits, embedding = model(batch["audio"], return_embedding=True)
                has = torch.as_tensor(batch["has_embedding"], device=embedding.device).bool()
                cosine = F.cosine_similarity(embedding.float(),
                                             target(batch["teacher_embedding"].float()), dim=1)
                cosine_sum += float(cosine[has].sum())
                cosine_n += int(has.sum())
                logits = logits.float()
            else:
                logits = model(batch["audio"]).float()
            losses.append(F.cross_entropy(logits, batch["label"], reduction="none").cpu().numpy())
            labels.append(batch["label"].cpu().numpy())
            probabilities.append(torch.softmax(logits, dim=1).cpu().numpy())
            indices.append(np.asarray(batch["index"]))
        if not labels:
            empty = (np.zeros(0, int), [np.zeros(0), np.zeros(0, int), np.zeros((0, 0))])
        else:
            empty = (np.concatenate(indices), [np.concatenate(losses), np.concatenate(labels),
                                               np.concatenate(probabilities)])
        _, (loss, y_true, probs) = gather_by_index(*empty, self.env)
        cosine_sum, cosine_n = sum_across_ranks([cosine_sum, cosine_n], self.env)
        cosine = cosine_sum / cosine_n if cosine_n else None
        if not len(y_true):
            return EvalResult(float("nan"), np.zeros(0, int), np.zeros(0, int), np.zeros((0, 0)),
                              cosine)
        return EvalResult(float(loss.mean()), y_true, probs.argmax(1), probs, cosine)

    def step_scheduler(self, monitored: float) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(monitored)
        else:
            self.scheduler.step()
