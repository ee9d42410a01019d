"""Per-species thresholds chosen on the checkpoint's validation split, written into model.json.

    python -m export.calibrate --checkpoint best_model.pt --exported exported/ [--rule best_f1]
    python -m export.calibrate --checkpoint best_model.pt --exported exported/ \
        --rule precision --target_precision 0.9

The exported model (INT8 by default, the file ``predict.py`` runs) scores the validation
windows of the checkpoint's split manifest; each species gets the threshold its rule picks
(windows of that species are positives, every other window, no_birds included, negatives):

- ``best_f1``: the cut with the highest F1 (ties: the higher cut, fewer false alarms);
- ``precision``: the lowest cut whose precision reaches ``target_precision`` (the most recall
  at that precision); when no cut reaches it, the best-F1 cut, flagged ``met_target: false``.

The threshold is then put halfway between the chosen cut (the lowest score kept) and the next
lower validation score, so it classifies the validation windows exactly as the cut does but
is not pinned to one window's score. A species without validation windows keeps its current
threshold. ``predict.py`` uses the stored thresholds by default; ``--threshold`` overrides.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.errors import exit_on_user_error
from edge.errors import EdgeError

log = logging.getLogger("export.calibrate")

RULES = ("best_f1", "precision")
DEFAULT_TARGET_PRECISION = 0.9
# A threshold of exactly 0 or 1 would detect everything or nothing whatever the audio.
MIN_THRESHOLD, MAX_THRESHOLD = 0.01, 0.99


@dataclass(frozen=True)
class ThresholdChoice:
    """One species' threshold and what it achieved on the validation windows."""

    threshold: float
    precision: float
    recall: float
    f1: float
    positives: int
    negatives: int
    met_target: bool = True


def _cut_table(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """Candidate cuts (every distinct positive score, descending) with precision and recall
    of ``score >= cut``."""
    cuts = np.unique(scores[positive])[::-1]
    kept = scores[None, :] >= cuts[:, None]
    tp = (kept & positive[None, :]).sum(axis=1)
    fp = (kept & ~positive[None, :]).sum(axis=1)
    return cuts, tp / np.maximum(tp + fp, 1), tp / max(int(positive.sum()), 1)


def choose_threshold(scores: Sequence[float], positive: Sequence[bool], rule: str = "best_f1",
                     target_precision: float = DEFAULT_TARGET_PRECISION) -> ThresholdChoice:
    """The threshold ``rule`` picks for one species (see the module docstring)."""
    if rule not in RULES:
        raise EdgeError(f"threshold rule must be one of {', '.join(RULES)}, got {rule!r}")
    if not 0.0 < target_precision <= 1.0:
        raise EdgeError(f"target precision must be within (0, 1], got {target_precision}")
    scores = np.asarray(scores, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape or scores.ndim != 1:
        raise ValueError("scores and positive must be 1-d and of equal length")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0:
        raise EdgeError("no positive validation windows: cannot choose a threshold")
    cuts, precision, recall = _cut_table(scores, positive)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best_f1 = int(np.argmax(f1))  # cuts descend, so the first maximum is the highest cut
    pick, met = best_f1, True
    if rule == "precision":
        reaching = np.nonzero(precision >= target_precision - 1e-12)[0]
        if reaching.size:
            pick = int(reaching[-1])  # lowest cut that still reaches the target
        else:
            met = False
    cut = float(cuts[pick])
    below = scores[scores < cut]
    threshold = 0.5 * (cut + float(below.max())) if below.size else cut
    return ThresholdChoice(
        threshold=float(np.clip(threshold, MIN_THRESHOLD, MAX_THRESHOLD)),
        precision=float(precision[pick]), recall=float(recall[pick]), f1=float(f1[pick]),
        positives=n_pos, negatives=n_neg, met_target=met,
    )


def calibrate_thresholds(probabilities: np.ndarray, labels: np.ndarray,
                         species: Sequence[str], rule: str = "best_f1",
                         target_precision: float = DEFAULT_TARGET_PRECISION,
                         ) -> dict[str, ThresholdChoice]:
    """Per-species choices from window scores (n, >= n_species) and class indices (n,).
    Species without positive windows are left out (the caller keeps their old threshold)."""
    probabilities = np.asarray(probabilities, dtype=float)
    labels = np.asarray(labels, dtype=int)
    choices = {}
    for index, name in enumerate(species):
        positive = labels == index
        if not positive.any():
            log.warning("%s has no validation windows; its threshold is left as it was", name)
            continue
        choices[name] = choose_threshold(probabilities[:, index], positive, rule,
                                         target_precision)
    return choices


def _predict_batched(classifier, windows: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([classifier.predict_windows(windows[i : i + batch])
                           for i in range(0, len(windows), batch)])


def _rewrite_onnx_metadata(exported: Path, info) -> None:
    """The ONNX files carry the same description, so a lone .onnx keeps the thresholds."""
    import os
    import shutil

    from edge.sidecar import finalize_onnx

    for name in info.files.values():
        path = exported / name
        if path.suffix == ".onnx" and path.is_file():
            # A copy is rewritten and renamed over the original: a device never sees half.
            temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
            try:
                shutil.copyfile(path, temporary)
                finalize_onnx(temporary, info)
                os.replace(temporary, path)
            finally:
                temporary.unlink(missing_ok=True)


def calibrate_export(checkpoint_path: str | Path, exported: str | Path, *, rule: str = "best_f1",
                     target_precision: float = DEFAULT_TARGET_PRECISION,
                     precision: str = "int8", roots: dict[str, str] | None = None,
                     max_windows: int | None = None) -> dict[str, ThresholdChoice]:
    """Choose thresholds on the validation split and store them in ``exported``/model.json."""
    from edge.runtime import load_classifier
    from edge.sidecar import read_sidecar, write_sidecar
    from export.calibration_windows import split_windows
    from export.onnx_export import load_student

    exported = Path(exported)
    info = read_sidecar(exported)
    _, checkpoint = load_student(checkpoint_path)
    if list(checkpoint.class_names) != list(info.class_names):
        raise EdgeError(f"{checkpoint_path} has classes {checkpoint.class_names} but "
                        f"{exported} was exported with {info.class_names}; give the checkpoint "
                        "that was exported there")
    windows = split_windows(checkpoint, "val", max_windows=max_windows, roots=roots,
                            purpose="threshold calibration")
    classifier = load_classifier(exported, 1, precision)
    probabilities = _predict_batched(classifier, windows.audio)
    choices = calibrate_thresholds(probabilities, windows.labels, info.species, rule,
                                   target_precision)
    info.thresholds = {name: float(choices[name].threshold) if name in choices
                       else float(info.thresholds.get(name, 0.5)) for name in info.species}
    info.threshold_calibration = {
        "rule": rule,
        "target_precision": target_precision if rule == "precision" else None,
        "split": "val",
        "windows": len(windows),
        "model_file": info.files.get(precision),
        "per_species": {name: asdict(choice) for name, choice in choices.items()},
    }
    write_sidecar(info, exported)
    _rewrite_onnx_metadata(exported, info)
    return choices


def format_choices(choices: dict[str, ThresholdChoice], thresholds: dict[str, float]) -> str:
    lines = [f"{'species':<32} threshold  precision  recall  F1     val windows (+/-)"]
    for name, value in thresholds.items():
        c = choices.get(name)
        if c is None:
            lines.append(f"{name:<32} {value:9.3f}  (no validation windows; unchanged)")
            continue
        flag = "" if c.met_target else "  target precision not reached"
        lines.append(f"{name:<32} {c.threshold:9.3f}  {c.precision:9.3f}  {c.recall:6.3f}  "
                     f"{c.f1:5.3f}  {c.positives}/{c.negatives}{flag}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.calibrate",
        description="Choose per-species thresholds on the validation split and store them in "
                    "an export folder's model.json (predict.py uses them by default).",
    )
    p.add_argument("--checkpoint", required=True, help="the .pt checkpoint that was exported")
    p.add_argument("--exported", required=True, help="export folder (export_model.py --out)")
    p.add_argument("--rule", choices=RULES, default="best_f1",
                   help="best_f1, or the lowest threshold reaching --target_precision")
    p.add_argument("--target_precision", type=float, default=DEFAULT_TARGET_PRECISION,
                   help="precision the 'precision' rule must reach on validation windows")
    p.add_argument("--precision", dest="model_precision", choices=("int8", "fp32"),
                   default="int8", help="which exported model scores the windows (as predict.py)")
    from export.cli import data_root_arguments

    data_root_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from export.cli import data_roots

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with exit_on_user_error(log):
        choices = calibrate_export(args.checkpoint, args.exported, rule=args.rule,
                                   target_precision=args.target_precision,
                                   precision=args.model_precision, roots=data_roots(args))
        from edge.sidecar import read_sidecar

        thresholds = read_sidecar(args.exported).thresholds
    print(format_choices(choices, thresholds))
    print(f"thresholds written to {Path(args.exported) / 'model.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
