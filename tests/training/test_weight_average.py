"""training.ema_decay: the moving average of the weights is what is validated, tested, saved
and resumed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.training.helpers import compose_config, fast_overrides
from training.run import run_training
from training.trainer import Trainer
from training.weight_average import WeightAverage


def _weights(state: dict) -> dict:
    return {k: v for k, v in state.items() if v.dtype.is_floating_point}


def test_average_ramps_up_then_follows_the_live_weights() -> None:
    live = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in live.state_dict().items()}
    average = WeightAverage(live, decay=0.5)
    with torch.no_grad():
        for parameter in live.parameters():
            parameter.fill_(1.0)
    live[1].num_batches_tracked.fill_(7)
    average.update(live)
    ramp = 2 / 11  # (1 + n) / (10 + n) at the first step, below the 0.5 cap
    for name, value in _weights(average.model.state_dict()).items():
        expected = ramp * start[name] + (1 - ramp) * live.state_dict()[name]
        torch.testing.assert_close(value, expected)
    assert int(average.model[1].num_batches_tracked) == 7  # counters are copied
    for _ in range(200):
        average.update(live)
    torch.testing.assert_close(average.model[0].weight, live[0].weight)
    assert not any(p.requires_grad for p in average.model.parameters())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(live, decay=1.0)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 3)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.layer(audio)


def test_trainer_evaluates_the_average_not_the_live_weights() -> None:
    torch.manual_seed(0)
    model = _Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = Trainer(model, lambda logits, batch: nn.functional.cross_entropy(
        logits, batch["label"]), optimizer, None, torch.device("cpu"), ema_decay=0.9)
    audio, label = torch.randn(32, 4), torch.randint(0, 3, (32,))
    batches = [{"audio": audio[i:i + 8], "label": label[i:i + 8],
                "index": torch.arange(i, i + 8)} for i in range(0, 32, 8)]
    trainer.train_epoch(batches, epoch=1)
    assert trainer.average.steps == 4
    assert not torch.allclose(trainer.eval_model.layer.weight, model.layer.weight)
    result = trainer.evaluate(batches)
    with torch.no_grad():
        expected = torch.softmax(trainer.average.model(audio), dim=1).numpy()
    assert result.probabilities == pytest.approx(expected, abs=1e-6)


def test_run_saves_the_average_and_resume_continues_it(demo_corpus, tmp_path) -> None:
    overrides = [*fast_overrides(demo_corpus.bird_dir, tmp_path, epochs=1),
                 "training.ema_decay=0.9", "training.checkpoint_every=1"]
    run_dir = tmp_path / "logs" / "bird_classification" / "first"
    run_training(compose_config(overrides), run_dir)
    state = torch.load(run_dir / "last_state.pt", weights_only=True)
    saved = torch.load(run_dir / "checkpoints" / "epoch_001.pt", weights_only=True)
    average = state["weight_average"]
    steps_per_epoch = average["steps"]
    assert steps_per_epoch > 0
    for name, value in _weights(saved["state_dict"]).items():
        torch.testing.assert_close(value, average["model_state"][name])
    assert any(not torch.allclose(value, state["model_state"][name])
               for name, value in _weights(saved["state_dict"]).items())

    state["completed"] = False  # as if killed after epoch 1 of 2
    torch.save(state, run_dir / "last_state.pt")
    resumed = compose_config([*overrides, "training.epochs=2", "training.resume=true"])
    run_training(resumed, tmp_path / "ignored_new_dir")
    final = torch.load(run_dir / "last_state.pt", weights_only=True)
    assert final["weight_average"]["steps"] == 2 * steps_per_epoch  # continued, not restarted
    with pytest.raises(Exception, match="ema_decay"):
        run_training(compose_config([*overrides, "training.ema_decay=1.5"]), tmp_path / "bad")
