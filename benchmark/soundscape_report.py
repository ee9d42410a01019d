"""The text report of the soundscape mode (the JSON report holds the same numbers)."""

from __future__ import annotations


def _num(value: float | None, digits: int = 3) -> str:
    return "   -  " if value is None else f"{value:.{digits}f}"


def _interval(ci: dict, key: str, digits: int = 3) -> str:
    values = ci.get(key)
    return "" if not values else f" [{values[0]:.{digits}f}, {values[1]:.{digits}f}]"


def format_report(summary: dict) -> str:
    species = summary["species"]
    lines = [
        "SOUNDSCAPE BENCHMARK: student vs BirdNET (restricted to the student's species)",
        f"annotations: {summary['annotations']}",
        f"recordings {summary['recordings']}, segments {summary['segments']}, segments without "
        f"any target species {summary['no_target_segments']} "
        f"({summary['student']['no_target_hours'] * 60:.1f} min)",
        "segments per target species: " + ", ".join(
            f"{s} {n}" for s, n in summary["segments_with_targets"].items()),
        "A segment's score is the max over the windows overlapping it; 95% intervals are "
        "bootstrapped over recordings.",
        "",
    ]
    for model in ("student", "birdnet"):
        m = summary[model]
        ci = m["ci95"]
        about = m["thresholds"]
        rule = about.get("rule") or about.get("value")
        lines += [
            f"== {model}: thresholds from {about['source']} ({rule})",
            f"  macro AP {_num(m['macro_average_precision'])}"
            f"{_interval(ci, 'macro_average_precision')}   macro ROC-AUC "
            f"{_num(m['macro_roc_auc'])}{_interval(ci, 'macro_roc_auc')}",
            f"  at thresholds: macro precision {_num(m['macro_precision'])}, recall "
            f"{_num(m['macro_recall'])}, F1 {_num(m['macro_f1'])}{_interval(ci, 'macro_f1')}",
            f"  false detections per hour (all species) {_num(m['false_detections_per_hour'], 1)}"
            f"{_interval(ci, 'false_detections_per_hour', 1)}",
            f"  {'species':<28}{'thr':>6}{'pos':>5}{'AP':>8}{'AUC':>8}{'prec':>8}{'recall':>8}"
            f"{'F1':>8}{'FD/h':>8}",
        ]
        for name in species:
            v = m["per_species"][name]
            fdh = v["false_detections_per_hour"]
            lines.append(
                f"  {name:<28}{v['threshold']:6.2f}{v['positives']:5d}"
                f"{_num(v['average_precision']):>8}{_num(v['roc_auc']):>8}"
                f"{_num(v['precision']):>8}{_num(v['recall']):>8}{_num(v['f1']):>8}"
                f"{_num(fdh, 1):>8}"
            )
        lines.append("  95% intervals per species: " + "; ".join(
            f"{name} AP{_interval(ci, f'{name}/average_precision') or ' -'} "
            f"FD/h{_interval(ci, f'{name}/false_detections_per_hour', 1) or ' -'}"
            for name in species))
        lines.append("")
    return "\n".join(lines)
