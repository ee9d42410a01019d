"""Compare the student with BirdNET on the same files: metrics, tables, plots and a report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmark import plots
from benchmark.metrics import AGREEMENT, agreement, bootstrap_macro_f1_difference, model_metrics
from common.file_io import save_table_atomic, write_atomic, write_json_atomic

log = logging.getLogger(__name__)

HEADLINE_METRICS = [
    "accuracy", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1",
    "weighted_precision", "weighted_recall", "weighted_f1", "macro_roc_auc",
    "macro_average_precision",
]


def align(student: pd.DataFrame, birdnet: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Only files both models scored, in the same order (a file one of them skipped is out)."""
    common = sorted(set(student["file"]) & set(birdnet["file"]))
    s = student.set_index("file").loc[common].reset_index()
    b = birdnet.set_index("file").loc[common].reset_index()
    return s, b


def compare(student: pd.DataFrame, birdnet: pd.DataFrame, class_names: Sequence[str],
            out_dir: str | Path, *, efficiency: dict | None, bootstrap_samples: int, seed: int,
            save_plots: bool, plot_style: str = "seaborn") -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    student, birdnet = align(student, birdnet)
    if student.empty:
        raise ValueError("no file was scored by both models; nothing to compare")
    s_metrics = model_metrics(student, class_names)
    b_metrics = model_metrics(birdnet, class_names)
    categories = agreement(student, birdnet)
    interval = bootstrap_macro_f1_difference(student, birdnet, class_names, bootstrap_samples,
                                             seed)
    summary = {
        "files": len(student),
        "class_names": list(class_names),
        "student": s_metrics,
        "birdnet": b_metrics,
        "agreement": {c: int((categories == c).sum()) for c in AGREEMENT},
        "macro_f1_difference": interval,
        "efficiency": efficiency,
    }
    _tables(student, birdnet, categories, s_metrics, b_metrics, class_names, efficiency, out_dir)
    write_json_atomic(summary, out_dir / "comparison_report.json")
    report = format_report(summary)
    write_atomic(out_dir / "comparison_report.txt", lambda h: h.write(report.encode()))
    if save_plots:
        plots.confusion_matrices(s_metrics, b_metrics, class_names,
                                 out_dir / "confusion_matrices.png", plot_style)
        plots.agreement_analysis(categories, out_dir / "agreement_analysis.png", plot_style)
        plots.per_class_accuracy(s_metrics, b_metrics, class_names,
                                 out_dir / "per_class_accuracy.png", plot_style)
        plots.confidence_distributions(student, birdnet, out_dir / "confidence_distributions.png",
                                       plot_style)
    return summary


def _tables(student, birdnet, categories, s_metrics, b_metrics, class_names, efficiency,
            out_dir: Path) -> None:
    rows = [{"metric": m, "student": s_metrics[m], "birdnet": b_metrics[m]}
            for m in HEADLINE_METRICS]
    for key, value in (efficiency or {}).items():
        if isinstance(value, dict) and {"student", "birdnet"} <= set(value):
            rows.append({"metric": key, "student": value["student"], "birdnet": value["birdnet"]})
    save_table_atomic(pd.DataFrame(rows), out_dir / "metrics_comparison_table.csv")
    per_class = []
    for name in class_names:
        row = {"class": name, "support": s_metrics["per_class"][name]["support"]}
        for model, metrics in (("student", s_metrics), ("birdnet", b_metrics)):
            for key in ("precision", "recall", "f1"):
                row[f"{model}_{key}"] = metrics["per_class"][name][key]
        per_class.append(row)
    save_table_atomic(pd.DataFrame(per_class), out_dir / "per_class_metrics_table.csv")
    detailed = pd.DataFrame({
        "file": student["file"], "label": student["label"],
        "student_predicted": student["predicted"], "student_confidence": student["confidence"],
        "birdnet_predicted": birdnet["predicted"], "birdnet_confidence": birdnet["confidence"],
        "agreement": categories,
    })
    save_table_atomic(detailed, out_dir / "detailed_cases.csv")


def format_report(summary: dict) -> str:
    s, b = summary["student"], summary["birdnet"]
    interval = summary["macro_f1_difference"]
    lines = [
        "Student vs BirdNET",
        "==================",
        f"Files compared: {summary['files']}",
        "",
        f"{'metric':<26}{'student':>10}{'BirdNET':>10}",
    ]
    for metric in HEADLINE_METRICS:
        sv, bv = s[metric], b[metric]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"{metric:<26}{fmt(sv):>10}{fmt(bv):>10}")
    lines += [
        "",
        f"macro-F1 difference (student - BirdNET): {interval['difference']:+.3f} "
        f"(95% bootstrap interval {interval['ci95_low']:+.3f} .. {interval['ci95_high']:+.3f}, "
        f"{interval['samples']} resamples over files)",
        "",
        "Agreement: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                  for k, v in summary["agreement"].items()),
    ]
    efficiency = summary.get("efficiency")
    if efficiency:
        lines += ["", "Efficiency (one thread, batch 1, per 3 s window)"]
        for key, value in efficiency.items():
            if isinstance(value, dict) and {"student", "birdnet"} <= set(value):
                lines.append(f"  {key:<24}{value['student']!s:>14}{value['birdnet']!s:>14}")
            elif not isinstance(value, dict):
                lines.append(f"  {key:<24}{value!s:>14}")
    lines += ["", "Per class (student F1 / BirdNET F1, support)"]
    for name in summary["class_names"]:
        lines.append(f"  {name:<28}{s['per_class'][name]['f1']:.3f} / "
                     f"{b['per_class'][name]['f1']:.3f}  ({s['per_class'][name]['support']})")
    return "\n".join(lines) + "\n"
