"""A whole training run from a composed config: data, model, loop, outputs, resume.

``train.py`` calls :func:`run_training` with cross-entropy; ``train_distillation.py`` calls it
with a distillation loss. Outputs land in the Hydra run directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from common.errors import ConfigError
from common.file_io import save_table_atomic, write_atomic, write_json_atomic
from common.runtime import resolve_device, seed_everything
from common.skipped_files import write_skipped_files
from datasets.dataset_factory import DataBundle, build_data
from datasets.split_manifest import MANIFEST_FILENAME, manifest_to_records, save_manifest
from distillation.losses.hard import CrossEntropyLoss
from model_checkpoint import check_class_names, load_checkpoint, save_checkpoint
from models import build_model, model_summary
from modules import SpecAugment
from training.config_checks import check_resume_state, check_training_config
from training.distributed import (
    DistEnv,
    barrier,
    cleanup,
    from_rank0,
    init_distributed,
    local_device,
)
from training.metrics import classification_metrics
from training.plots import plot_confusion_matrix, plot_training_history
from training.pretrain import check_stage, load_pretrained
from training.resume_state import capture_rng_state, continue_log_in, restore_rng_state
from training.trainer import EvalResult, FitState, LossFn, Trainer, monitor_score
from training.weight_average import WeightAverage

log = logging.getLogger(__name__)

STATE_FILENAME = "last_state.pt"
BEST_FILENAME = "best_model.pt"
# Model config keys that configure the run rather than the network.
NON_ARCHITECTURE_KEYS = {"name", "n_classes", "frontend_lr", "pretrained"}

LossFactory = Callable[[DictConfig, DataBundle], LossFn]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects container / taskset limits
    except AttributeError:
        return os.cpu_count() or 1


def configure_threads(cfg: DictConfig) -> int:
    """Intra-op threads: the configured number, else the cores the loader workers leave free.

    More threads than free cores is far worse than too few: OpenMP threads spin-wait for a
    busy core, and a step can become 10-20x slower.
    """
    # torchrun starts LOCAL_WORLD_SIZE processes on this machine: they share its cores.
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    free = available_cores() // local_processes - int(cfg.dataset.num_workers)
    threads = cfg.training.num_threads or max(1, free)
    torch.set_num_threads(int(threads))
    return int(threads)


def model_arguments(cfg: DictConfig, n_classes: int) -> dict:
    """Constructor arguments of the configured model (stored in the checkpoint)."""
    declared = cfg.model.get("n_classes")
    if declared is not None and int(declared) != n_classes:
        raise ConfigError(
            f"model.n_classes={declared} but the class list has {n_classes - 1} species + "
            f"no_birds = {n_classes}; set model.n_classes={n_classes} or null (derived)."
        )
    kwargs = {
        k: v
        for k, v in OmegaConf.to_container(cfg.model, resolve=True).items()
        if k not in NON_ARCHITECTURE_KEYS
    }
    kwargs.update(
        n_classes=n_classes,
        sample_rate=int(cfg.dataset.target_sr),
        clip_duration=float(cfg.dataset.clip_duration),
    )
    return kwargs


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam or AdamW; a learnable front-end may get its own learning rate."""
    opt = cfg.optimizer
    frontend_params = list(model.frontend.parameters()) if hasattr(model, "frontend") else []
    frontend_ids = {id(p) for p in frontend_params}
    rest = [p for p in model.parameters() if id(p) not in frontend_ids]
    groups = [{"params": rest}]
    trainable_frontend = [p for p in frontend_params if p.requires_grad]
    if trainable_frontend:
        lr = cfg.model.get("frontend_lr")
        groups.append({"params": trainable_frontend, "lr": float(lr if lr else opt.lr)})
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    kind = str(opt.type).lower()
    if kind not in kinds:
        raise ConfigError(f"optimizer.type={opt.type} is not one of Adam, AdamW")
    return kinds[kind](groups, lr=float(opt.lr), weight_decay=float(opt.weight_decay))


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    kind = str(cfg.training.scheduler).lower()
    if kind == "none":
        return None
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, int(cfg.training.epochs)), eta_min=float(cfg.training.min_lr)
        )
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=max(1, int(cfg.training.patience) // 3)
        )
    raise ConfigError(f"training.scheduler={kind} is not one of cosine, plateau, none")


def make_loaders(cfg: DictConfig, data: DataBundle,
                 env: DistEnv | None = None) -> dict[str, DataLoader]:
    """Under torchrun each rank gets a DistributedSampler share of every split, and
    ``training.batch_size`` stays the global batch (divided between the ranks)."""
    env = env or DistEnv()
    workers = int(cfg.dataset.num_workers)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    batch_size = max(1, int(cfg.training.batch_size) // env.world_size)
    loaders = {}
    for split, dataset in data.datasets.items():
        sampler = None
        weights = getattr(dataset, "sampling_weights", None) if split == "train" else None
        if env.enabled:
            if weights is not None:
                log.warning("distillation.labelled_share is not applied under torchrun: each "
                            "rank draws every window equally often")
            sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank,
                                         shuffle=split == "train", seed=int(cfg.seed))
        elif weights is not None:
            # Drawn with replacement from the loader's own generator, so a resumed epoch
            # draws the same windows (its state is saved with the checkpoint).
            sampler = WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True,
                                            generator=generator)
        loaders[split] = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=split == "train" and sampler is None,
            sampler=sampler,
            num_workers=workers,
            # Persistent workers would carry their random streams across epochs; fresh ones
            # are seeded from the generator each epoch, so a resumed epoch is identical.
            persistent_workers=workers > 0 and split != "train",
            generator=generator if split == "train" and not env.enabled else None,
            drop_last=False,
        )
    return loaders


def latest_unfinished(root: Path, state_name: str,
                      unfinished: Callable[[Path], bool]) -> Path | None:
    """The newest ``root/*/state_name`` for which ``unfinished`` holds (training runs and
    evaluations both resume "the latest unfinished run of the experiment")."""
    states = sorted(root.glob(f"*/{state_name}"), key=lambda p: p.stat().st_mtime)
    return next((p for p in reversed(states) if unfinished(p)), None)


def find_resume_state(cfg: DictConfig) -> Path | None:
    """``training.resume``: false, true (latest unfinished run of this experiment) or a path."""
    resume = cfg.training.resume
    if resume in (None, False, "false"):
        return None
    if resume is True or resume == "true":
        root = Path(cfg.paths.log_dir) / str(cfg.experiment_name)
        path = latest_unfinished(
            root, STATE_FILENAME,
            lambda p: not torch.load(p, weights_only=True).get("completed", False))
        if path is not None:
            return path
        log.warning("training.resume=true but no unfinished run under %s; starting fresh", root)
        return None
    path = Path(str(resume))
    path = path / STATE_FILENAME if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"training.resume={resume}: no {STATE_FILENAME} found there")
    return path


def _atomic_torch_save(obj: dict, path: Path) -> None:
    write_atomic(path, lambda handle: torch.save(obj, handle))


def _write_csv(rows: list[dict], path: Path, fieldnames: list[str] | None = None) -> None:
    save_table_atomic(pd.DataFrame(rows, columns=fieldnames), path)


def run_training(
    cfg: DictConfig,
    run_dir: str | Path,
    loss_factory: LossFactory | None = None,
) -> dict:
    """Train, select the best epoch on validation, test it, write every output; return results."""
    check_training_config(cfg)  # every config problem, at once, before any audio is touched
    device = resolve_device(str(cfg.training.device))
    env = init_distributed(device)
    device = local_device(device, env)
    run_dir = Path(from_rank0(str(run_dir), env))
    resume_path = find_resume_state(cfg)
    saved = None
    if resume_path is not None:
        # An interrupted run continues in its own folder, with its own split manifest and log.
        saved = torch.load(resume_path, weights_only=True, map_location="cpu")
        check_resume_state(saved, str(cfg.model.name),
                           model_arguments(cfg, len(cfg.dataset.allowed_bird_classes) + 1))
        continue_log_in(resume_path.parent, run_dir)
        run_dir = resume_path.parent
        log.info("Resuming the run in %s", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(int(cfg.seed))
    threads = configure_threads(cfg)

    check_stage(cfg, uses_teacher=loss_factory is not None)  # before decoding any audio
    manifest_path = run_dir / MANIFEST_FILENAME if resume_path is not None else None
    if not env.is_main:
        barrier(env)  # rank 0 decodes and fills the audio cache first; the others reuse it
    data = build_data(cfg, manifest_path=manifest_path)
    if env.is_main:
        barrier(env)
        save_manifest(data.manifest, run_dir / MANIFEST_FILENAME)
        write_skipped_files(data.skipped, run_dir / "skipped_files.csv")
    if data.skipped:
        log.warning("%d files skipped; see %s", len(data.skipped), run_dir / "skipped_files.csv")
    check_validation_split(cfg, len(data.datasets["val"]))

    n_classes = len(data.class_names)
    arguments = model_arguments(cfg, n_classes)
    model_name = str(cfg.model.name)
    model = build_model(model_name, **arguments)
    if cfg.model.get("pretrained") and resume_path is None:
        load_pretrained(model, str(cfg.model.pretrained), model_name, data.class_names,
                        {"sample_rate": int(cfg.dataset.target_sr),
                         "clip_duration": float(cfg.dataset.clip_duration)})
    augment = cfg.dataset.augmentation
    if augment.enabled and (augment.time_mask_param or augment.freq_mask_param):
        model.feature_augment = SpecAugment(
            int(augment.time_mask_param), int(augment.freq_mask_param)
        )
    summary = model_summary(model, int(cfg.dataset.target_sr), float(cfg.dataset.clip_duration))
    log.info("Model %s: %s; %d torch threads, %d loader workers", model_name, summary, threads,
             int(cfg.dataset.num_workers))

    # A loss factory may also wrap the datasets (distillation attaches teacher logits).
    loss_fn = loss_factory(cfg, data) if loss_factory else CrossEntropyLoss()
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn = loss_fn.to(device)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    mixup = float(augment.mixup_alpha) if augment.enabled else 0.0
    trainer = Trainer(model, loss_fn, optimizer, scheduler, device, cfg.training.grad_clip, mixup,
                      env=env, amp=bool(cfg.training.amp),
                      ema_decay=float(cfg.training.get("ema_decay") or 0.0))
    loaders = make_loaders(cfg, data, env)

    state = FitState()
    if saved is not None:
        check_class_names(saved.get("class_names", []), data.class_names)
        model.load_state_dict(saved["model_state"])
        optimizer.load_state_dict(saved["optimizer_state"])
        if scheduler is not None and saved.get("scheduler_state"):
            scheduler.load_state_dict(saved["scheduler_state"])
        state = FitState(**saved["fit_state"])
        if trainer.average is not None:
            if saved.get("weight_average"):
                trainer.average.load_state_dict(saved["weight_average"])
            else:  # the interrupted run kept no average: start one from its weights
                trainer.average = WeightAverage(trainer.core, trainer.average.decay)
        restore_rng_state(saved, loaders["train"].generator)
        log.info("Resumed after epoch %d (best %s at epoch %d)",
                 state.epoch, cfg.training.monitor, state.best_epoch)

    config_dict = OmegaConf.to_container(cfg, resolve=True)
    audio = {"sample_rate": int(cfg.dataset.target_sr),
             "clip_duration": float(cfg.dataset.clip_duration)}
    manifest_records = manifest_to_records(data.manifest)

    def save_model(path: Path, epoch: int, metrics: dict) -> None:
        # The SpecAugment module has no parameters: the checkpoint rebuilds a plain model.
        if not env.is_main:
            return  # only rank 0 writes
        save_checkpoint(
            path, trainer.eval_model, model_name=model_name, model_kwargs=arguments,
            class_names=data.class_names, audio=audio, metrics=metrics, config=config_dict,
            split_manifest=manifest_records, epoch=epoch,
        )

    # Saved with the state: a resumed run checks it rebuilds the same model, and continues
    # the same random streams (shuffle order, augmentation) as an uninterrupted run.
    run_identity = {"model_name": model_name, "model_kwargs": arguments,
                    "rng": lambda: capture_rng_state(loaders["train"].generator)}
    monitor = str(cfg.training.monitor)
    patience = int(cfg.training.patience)
    min_delta = float(cfg.training.min_delta)
    every = int(cfg.training.checkpoint_every or 0)
    for epoch in range(state.epoch + 1, int(cfg.training.epochs) + 1):
        if state.bad_epochs >= patience > 0:
            break
        if isinstance(loaders["train"].sampler, DistributedSampler):
            loaders["train"].sampler.set_epoch(epoch)  # a new shuffle every epoch
        row = {"epoch": epoch, **trainer.train_epoch(loaders["train"], epoch)}
        val, val_metrics = _score_split(trainer, loaders["val"], data.class_names)
        row.update(val_loss=val.loss, val_accuracy=val_metrics.get("accuracy", float("nan")),
                   val_macro_f1=val_metrics.get("macro_f1", float("nan")),
                   lr=optimizer.param_groups[0]["lr"])
        if val.embedding_cosine is not None:  # embedding distillation: how close to BirdNET
            row["val_embedding_cosine"] = val.embedding_cosine
        score = monitor_score(row, monitor)
        trainer.step_scheduler(score)
        # min_delta is a metric's noise floor; epoch numbers (monitor=last) have none.
        improved = score > state.best_score + (0.0 if monitor == "last" else min_delta)
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
            save_model(run_dir / BEST_FILENAME, epoch, {"val": val_metrics})
        else:
            state.bad_epochs += 1
        state.epoch = epoch
        state.history.append(row)
        validation = ("no validation split" if not val_metrics else
                      f"val loss {row['val_loss']:.4f}  acc {row['val_accuracy']:.3f}  "
                      f"macro-F1 {row['val_macro_f1']:.3f}")
        log.info(
            "epoch %d  loss %.4f  acc %.3f | %s%s | %.0f windows/s, data wait %.0f%%",
            epoch, row["train_loss"], row["train_accuracy"], validation,
            "  *best*" if improved else "", row["windows_per_s"],
            100 * row["data_wait_fraction"],
        )
        if env.is_main:
            _write_csv(state.history, run_dir / "metrics.csv")
        if every and epoch % every == 0:
            (run_dir / "checkpoints").mkdir(exist_ok=True)
            periodic = run_dir / "checkpoints" / f"epoch_{epoch:03d}.pt"
            save_model(periodic, epoch, {"val": val_metrics})
        if env.is_main:
            _save_state(run_dir, trainer, state, data.class_names, completed=False,
                        extra=run_identity)
    if state.bad_epochs >= patience > 0:
        log.info("Early stopping: no %s improvement for %d epochs", monitor, patience)

    results = _finish(cfg, run_dir, data, trainer, loaders, state, summary, save_model, env)
    if env.is_main:
        _save_state(run_dir, trainer, state, data.class_names, completed=True,
                    extra=run_identity)
    cleanup(env)
    return results


def _score_split(trainer: Trainer, loader: DataLoader, class_names: list[str]
                 ) -> tuple[EvalResult, dict]:
    """The model's result on a split and its metrics (none for an empty split)."""
    result = trainer.evaluate(loader)
    if not len(result.y_true):
        return result, {}
    return result, classification_metrics(result.y_true, result.y_pred, class_names)


def check_validation_split(cfg: DictConfig, n_val_windows: int) -> None:
    """A run without validation windows can only keep its last epoch."""
    monitor = str(cfg.training.monitor)
    if n_val_windows == 0 and monitor.startswith("val_"):
        raise ConfigError(
            f"The validation split has no windows, so training.monitor={monitor} cannot pick an "
            "epoch. Set training.monitor=last (train every epoch, keep the final weights) or "
            "give the run validation recordings."
        )


def _save_state(run_dir: Path, trainer: Trainer, state: FitState, class_names: list[str],
                completed: bool, extra: dict) -> None:
    scheduler, average = trainer.scheduler, trainer.average
    _atomic_torch_save(
        {
            "class_names": class_names,
            "model_state": trainer.core.state_dict(),
            "optimizer_state": trainer.optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
            "weight_average": average.state_dict() if average is not None else None,
            "fit_state": asdict(state),
            "completed": completed,
            "model_name": extra["model_name"],
            "model_kwargs": extra["model_kwargs"],
            **extra["rng"](),
        },
        run_dir / STATE_FILENAME,
    )


def _finish(cfg, run_dir: Path, data: DataBundle, trainer: Trainer, loaders, state: FitState,
            summary: dict, save_model, env: DistEnv) -> dict:
    """Test the best model and write results.json, plots and the copy at training.save_path."""
    best_path = run_dir / BEST_FILENAME
    if state.epoch == 0 or not state.history:
        raise ConfigError(
            f"No epoch was trained (training.epochs={cfg.training.epochs}); no model saved and "
            f"{cfg.training.save_path} left untouched"
        )
    if not best_path.exists():
        # No epoch improved on -inf (validation gave no score): the last weights are kept.
        save_model(best_path, state.epoch, {})
    barrier(env)  # rank 0 has written the best checkpoint
    best_model, checkpoint = load_checkpoint(best_path)
    trainer.eval_model.load_state_dict(best_model.state_dict())
    test = trainer.evaluate(loaders["test"])
    test_metrics = classification_metrics(test.y_true, test.y_pred, data.class_names)
    _, val_metrics = _score_split(trainer, loaders["val"], data.class_names)
    last = state.history[-1] if state.history else {}
    results = {
        "experiment_name": str(cfg.experiment_name),
        "model": str(cfg.model.name),
        "class_names": data.class_names,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "monitor": str(cfg.training.monitor),
        "test": test_metrics,
        "val": val_metrics,
        "accuracy": test_metrics["accuracy"],
        "macro_f1": test_metrics["macro_f1"],
        "parameters": summary["parameters"],
        "macs": summary["macs"],
        "model_size_bytes": best_path.stat().st_size,
        "windows_per_class": data.class_counts(),
        "skipped_files": len(data.skipped),
        "throughput_windows_per_s": last.get("windows_per_s"),
        "data_wait_fraction": last.get("data_wait_fraction"),
    }
    if not env.is_main:
        return results
    write_json_atomic(results, run_dir / "results.json")
    # The best checkpoint carries its test metrics too, so it is self-describing.
    save_model(best_path, state.best_epoch if checkpoint.epoch is None else checkpoint.epoch,
               {"val": val_metrics, "test": test_metrics})
    plot_confusion_matrix(test_metrics["confusion_matrix"], data.class_names,
                          run_dir / "confusion_matrix.png",
                          f"Test split (macro-F1 {test_metrics['macro_f1']:.3f})")
    if state.history:
        plot_training_history(state.history, run_dir / "training_history.png")
    save_path = Path(str(cfg.training.save_path))
    save_path.parent.mkdir(parents=True, exist_ok=True)
    # Copy then rename, so an interrupted copy never leaves a truncated model at save_path.
    write_atomic(save_path, lambda handle: handle.write(best_path.read_bytes()))
    log.info("Test accuracy %.3f, macro-F1 %.3f; best model: %s (copied to %s)",
             test_metrics["accuracy"], test_metrics["macro_f1"], best_path, save_path)
    return results
