"""The scoreboard's outputs: cv_results.csv rows, cv_summary.json, the printed table, a plot."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmark.metrics import model_metrics
from common.file_io import write_atomic, write_json_atomic
from evaluation.statistics import paired_ratios, summarise

log = logging.getLogger(__name__)

HEADLINE = ("macro_f1", "accuracy", "balanced_accuracy", "macro_roc_auc")
# The student's projection against BirdNET's standardised embedding
# (evaluation.embedding_fidelity), per fold on the student's row.
FIDELITY = {"embedding_cosine": "held-out recordings",
            "embedding_cosine_train": "training recordings"}
MODEL_LABELS = {
    "student": "student",
    "birdnet": "BirdNET (restricted)",
    "birdnet_linear": "BirdNET emb. + linear",
}


def metric_rows(tables: dict[str, pd.DataFrame], class_names: Sequence[str],
                context: dict) -> list[dict]:
    """One row per model of one fold: headline metrics and per-class F1."""
    rows = []
    for model, table in tables.items():
        metrics = model_metrics(table, class_names)
        row = {**context, "model": model}
        row.update({name: metrics[name] for name in HEADLINE})
        row.update({f"f1_{name}": metrics["per_class"][name]["f1"] for name in class_names})
        rows.append(row)
    return rows


def summarise_results(results: pd.DataFrame) -> dict:
    """Per model and metric: mean, sd and 95% interval over folds; ratios to BirdNET."""
    models = [m for m in MODEL_LABELS if m in set(results["model"])]
    summary: dict = {"models": {}, "ratios": {}}
    for model in models:
        rows = results[results["model"] == model]
        summary["models"][model] = {metric: summarise(rows[metric].tolist())
                                    for metric in HEADLINE}
    # Ratios fold by fold (same files), then summarised: the mean of per-fold ratios.
    keyed = results.set_index(["repeat", "fold", "model"])["macro_f1"]
    folds = sorted({(r, f) for r, f, _ in keyed.index})
    for model in ("student", "birdnet_linear"):
        if model not in models or "birdnet" not in models:
            continue
        pairs = [(keyed.get((r, f, model)), keyed.get((r, f, "birdnet"))) for r, f in folds]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        ratios = paired_ratios([a for a, _ in pairs], [b for _, b in pairs])
        summary["ratios"][f"{model}/birdnet macro_f1"] = summarise(ratios)
    student = results[results["model"] == "student"]
    fidelity = {name: summarise(student[name].tolist()) for name in FIDELITY
                if name in student.columns}
    if any(stat["n"] for stat in fidelity.values()):
        summary["embedding_fidelity"] = fidelity
    return summary


def _fmt(stat: dict) -> str:
    if stat["mean"] is None:
        return "n/a"
    if stat["sd"] is None:
        return f"{stat['mean']:.3f}"
    return (f"{stat['mean']:.3f} ± {stat['sd']:.3f}  "
            f"[{stat['ci95_low']:.3f}, {stat['ci95_high']:.3f}]")


def format_table(summary: dict, settings: dict) -> str:
    folds = next(iter(summary["models"].values()))["macro_f1"]["n"] if summary["models"] else 0
    lines = [
        f"Cross-validation over recordings: {folds} folds scored "
        f"({settings.get('folds')} folds x {settings.get('repeats')} repeats"
        + (f", {settings['train_recordings_per_class']} training recordings per species"
           if settings.get("train_recordings_per_class") else "") + ")",
        "mean ± sd over folds  [95% t-interval of the mean]",
        "",
        f"{'model':<24}{'macro-F1':<34}{'accuracy':<34}{'balanced acc.':<34}{'ROC-AUC'}",
    ]
    for model, stats in summary["models"].items():
        lines.append(f"{MODEL_LABELS[model]:<24}" + "".join(
            f"{_fmt(stats[m]):<34}" for m in HEADLINE[:3]) + _fmt(stats["macro_roc_auc"]))
    lines.append("")
    for name, stat in summary["ratios"].items():
        lines.append(f"ratio {name:<30}{_fmt(stat)}")
    if summary.get("embedding_fidelity"):
        lines.append("")
        lines.append("student projection vs BirdNET's embedding (mean cosine per window):")
        for name, stat in summary["embedding_fidelity"].items():
            lines.append(f"  {FIDELITY[name]:<28}{_fmt(stat)}")
    return "\n".join(lines) + "\n"


def box_plot(results: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = results.assign(label=results["model"].map(MODEL_LABELS))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.boxplot(data=data, x="label", y="macro_f1", ax=ax, color="#cfe2f3")
    sns.stripplot(data=data, x="label", y="macro_f1", ax=ax, color="black", size=4)
    ax.set(xlabel="", ylabel="macro-F1 per fold", ylim=(0, 1.02),
           title="Cross-validated macro-F1 (held-back recordings)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: pd.DataFrame, run_dir: Path, class_names: Sequence[str],
                  failures: list[dict], settings: dict) -> dict:
    summary = summarise_results(results)
    summary.update(settings=settings, class_names=list(class_names),
                   failed_folds=[{k: f[k] for k in ("repeat", "fold", "error")}
                                 for f in failures])
    write_json_atomic(summary, run_dir / "cv_summary.json")
    table = format_table(summary, settings)
    write_atomic(run_dir / "cv_summary.txt", lambda handle: handle.write(table.encode()))
    box_plot(results, run_dir / "cv_macro_f1_boxplot.png")
    print(table)
    if failures:
        log.warning("%d folds failed (see failed_folds.csv); the summary covers the others",
                    len(failures))
    log.info("Scoreboard: %s", run_dir / "cv_summary.json")
    return summary
