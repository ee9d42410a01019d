"""Does the exported model behave like the checkpoint?  ``python -m export.parity``

On the test split of the checkpoint's own manifest (windows chosen as in training, labels
from the manifest) it reports:
  * max |logit| difference ONNX FP32 vs PyTorch          (target <= 1e-4)
  * top-1 agreement INT8 vs FP32                          (target >= 98 %)
  * macro-F1 of PyTorch, FP32 and INT8 vs the labels      (INT8 loses <= 1 point)
and exits 1 when a target is missed (2 for a usage error).
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
from export.cli import data_root_arguments, data_roots

log = logging.getLogger(__name__)

FP32_ATOL = 1e-4
MIN_TOP1_AGREEMENT = 0.98
MAX_F1_DROP = 0.01
BATCH = 32


@dataclass
class ParityReport:
    n_windows: int
    n_silent_windows: int  # all-zero audio: left out of max_abs_diff_fp32 (see check_parity)
    max_abs_diff_fp32: float
    top1_agreement_fp32_vs_torch: float
    top1_agreement_int8_vs_fp32: float | None
    macro_f1_torch: float
    macro_f1_fp32: float
    macro_f1_int8: float | None
    accuracy_fp32: float
    accuracy_int8: float | None
    passed: bool
    failures: list[str]
    splits: list[str]


def _batched(fn, audio: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(audio[i : i + BATCH]) for i in range(0, len(audio), BATCH)])


def check_parity(checkpoint_path: str | Path, exported_dir: str | Path,
                 roots: dict[str, str | Path] | None = None,
                 max_windows: int | None = None, threads: int = 1,
                 splits: Sequence[str] = ("test",)) -> ParityReport:
    """Parity figures on the windows of ``splits`` (the test split unless told otherwise)."""
    from edge.runtime import OnnxClassifier
    from edge.sidecar import model_file, read_sidecar
    from export.calibration_windows import LabelledWindows, split_windows
    from export.onnx_export import load_student
    from export.torch_classifier import TorchClassifier
    from training.metrics import classification_metrics

    exported_dir = Path(exported_dir)
    info = read_sidecar(exported_dir)
    _, checkpoint = load_student(checkpoint_path)
    if list(checkpoint.class_names) != info.class_names:
        raise EdgeError(f"{exported_dir} was exported for classes {info.class_names}, the "
                        f"checkpoint has {checkpoint.class_names}; compare matching files")
    parts = [split_windows(checkpoint, split, max_windows=max_windows, roots=roots,
                           purpose="parity check") for split in splits]
    windows = LabelledWindows(np.concatenate([p.audio for p in parts]),
                              np.concatenate([p.labels for p in parts]))
    names = info.class_names
    torch_logits = _batched(TorchClassifier(checkpoint_path, threads).predict_logits,
                            windows.audio)
    fp32 = OnnxClassifier(model_file(exported_dir, info, "fp32"), info, threads)
    fp32_logits = _batched(fp32.predict_logits, windows.audio)
    fp32_metrics = classification_metrics(windows.labels, fp32_logits.argmax(1), names)
    torch_metrics = classification_metrics(windows.labels, torch_logits.argmax(1), names)

    int8_agree = int8_f1 = int8_acc = None
    if "int8" in info.files:
        int8 = OnnxClassifier(model_file(exported_dir, info, "int8"), info, threads)
        int8_logits = _batched(int8.predict_logits, windows.audio)
        int8_agree = float((int8_logits.argmax(1) == fp32_logits.argmax(1)).mean())
        int8_metrics = classification_metrics(windows.labels, int8_logits.argmax(1), names)
        int8_f1, int8_acc = int8_metrics["macro_f1"], int8_metrics["accuracy"]

    # Digital silence makes every log-mel value equal; the model's per-example
    # standardisation then divides float rounding noise by ~sqrt(eps) and its logits become
    # that noise, different in every runtime. Such windows carry no signal to compare.
    silent = np.abs(windows.audio).max(axis=1) == 0.0
    compared = ~silent if (~silent).any() else np.ones_like(silent)
    diff = float(np.abs(fp32_logits - torch_logits)[compared].max())
    failures = []
    if diff > FP32_ATOL:
        failures.append(f"ONNX FP32 differs from PyTorch by {diff:.2e} > {FP32_ATOL}")
    if int8_agree is not None and int8_agree < MIN_TOP1_AGREEMENT:
        failures.append(f"INT8 top-1 agreement {int8_agree:.1%} < {MIN_TOP1_AGREEMENT:.0%}")
    if int8_f1 is not None and fp32_metrics["macro_f1"] - int8_f1 > MAX_F1_DROP:
        failures.append(f"INT8 loses {100 * (fp32_metrics['macro_f1'] - int8_f1):.1f} points "
                        f"of macro-F1 (> {100 * MAX_F1_DROP:.0f})")
    return ParityReport(
        n_windows=len(windows),
        n_silent_windows=int(silent.sum()),
        max_abs_diff_fp32=diff,
        top1_agreement_fp32_vs_torch=float(
            (fp32_logits.argmax(1) == torch_logits.argmax(1)).mean()),
        top1_agreement_int8_vs_fp32=int8_agree,
        macro_f1_torch=torch_metrics["macro_f1"],
        macro_f1_fp32=fp32_metrics["macro_f1"],
        macro_f1_int8=int8_f1,
        accuracy_fp32=fp32_metrics["accuracy"],
        accuracy_int8=int8_acc,
        passed=not failures,
        failures=failures,
        splits=list(splits),
    )


def format_report(report: ParityReport) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}"

    lines = [
        f"windows: {report.n_windows} ({'+'.join(report.splits)} split)",
        f"max |logit diff| ONNX FP32 vs PyTorch: {report.max_abs_diff_fp32:.2e} "
        f"(target <= {FP32_ATOL:g}; {report.n_silent_windows} all-zero windows left out)",
        f"top-1 agreement INT8 vs FP32: {pct(report.top1_agreement_int8_vs_fp32)} % "
        f"(target >= {100 * MIN_TOP1_AGREEMENT:.0f} %)",
        "",
        f"{'model':<10}{'macro-F1':>10}{'accuracy':>10}",
        f"{'PyTorch':<10}{pct(report.macro_f1_torch):>10}{'':>10}",
        f"{'ONNX FP32':<10}{pct(report.macro_f1_fp32):>10}{pct(report.accuracy_fp32):>10}",
        f"{'ONNX INT8':<10}{pct(report.macro_f1_int8):>10}{pct(report.accuracy_int8):>10}",
        "",
        "PASS" if report.passed else "FAIL: " + "; ".join(report.failures),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.parity", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--exported", required=True, help="folder written by export_model.py")
    p.add_argument("--max_windows", type=int, default=None, help="cap on test windows")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    data_root_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with exit_on_user_error(log):
        report = check_parity(args.checkpoint, args.exported, data_roots(args), args.max_windows)
    print(format_report(report))
    if args.json:
        from common.file_io import write_json_atomic

        write_json_atomic(asdict(report), args.json)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
