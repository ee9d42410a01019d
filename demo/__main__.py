"""Run every stage on the synthetic demo corpus, reusing what an earlier run finished.

    python -m demo [--out demo_data]

Each step is the same command a user would type; they are printed as they run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(step: str, argv: list[str]) -> None:
    print(f"\n=== {step}\n$ {shlex.join(argv)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *argv], cwd=REPO)
    if result.returncode != 0:
        print(f"demo: step '{step}' failed (exit {result.returncode})", file=sys.stderr)
        sys.exit(result.returncode)
    print(f"--- {step}: {time.perf_counter() - started:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_data", help="demo folder (default demo_data)")
    args = parser.parse_args(argv)
    out = args.out
    data = REPO / out
    if out != "demo_data":
        print("demo: the demo configs read demo_data/; use --out demo_data", file=sys.stderr)
        return 2
    started = time.perf_counter()
    run("demo corpus (synthetic)", ["-m", "demo.corpus", "--out", out])
    run("no-birds samples", [
        "generate_no_birds_samples.py", "--bird_dir", f"{out}/bird_sound_dataset",
        "--esc50_dir", f"{out}/esc50", "--output_dir", f"{out}/no_birds", "--num_samples", "40",
    ])
    # Unlabelled audio for the teacher: the recipe's gain comes from audio BirdNET labels.
    run("unlabelled field audio (synthetic)", [
        "-c", "from demo.corpus import write_unlabelled_field as w; "
        f"w('{out}/unlabelled_field', files=4, minutes=1.0)",
    ])
    run("BirdNET soft labels and embeddings", [
        "extract_soft_labels.py", "--species_list", "distillation/species_4.txt",
        "--bird_dir", f"{out}/bird_sound_dataset", "--no_birds_dir", f"{out}/no_birds",
        "--unlabelled_dir", f"{out}/unlabelled_field",
        "--output_path", f"{out}/soft_labels", "--workers", "2", "--no_progress",
    ])
    model = data / "best_distillation_model.pt"
    inputs = training_inputs_digest(data)
    stamp = data / ".training_inputs"
    if model.exists() and stamp.exists() and stamp.read_text() == inputs:
        print(f"\n=== distillation training: reusing {model} (inputs unchanged)")
    else:
        run("distillation training", ["train_distillation.py", "--config-name=demo_distillation"])
        stamp.write_text(inputs)
    exported = data / "exported"
    if (exported / "model.json").exists() and (exported / "model.json").stat().st_mtime >= \
            model.stat().st_mtime:
        print(f"\n=== export: reusing {exported}")
    else:
        run("export (ONNX FP32 + INT8)", [
            "export_model.py", "--checkpoint", str(model.relative_to(REPO)),
            "--out", f"{out}/exported",
        ])
    # Per-species thresholds from the validation split, stored in model.json for predict.py.
    run("per-species thresholds", [
        "-m", "export.calibrate", "--checkpoint", str(model.relative_to(REPO)),
        "--exported", f"{out}/exported",
    ])
    run("benchmark against BirdNET", ["benchmark/run_benchmark.py", "--config-name=demo"])
    run("long field recording (synthetic)", [
        "-c", "from demo.corpus import write_long_recording as w; "
        f"w('{out}/long_recording.wav', minutes=3.0)",
    ])
    run("inference on the long recording", [
        "predict.py", "--model", f"{out}/exported", "--input", f"{out}/long_recording.wav",
        "--out", f"{out}/detections", "--formats", "raven,audacity,kaleidoscope",
    ])
    print_summary(data, time.perf_counter() - started)
    return 0


def training_inputs_digest(data: Path) -> str:
    """What the trained model depends on besides code: the no-birds set, the soft labels and
    the training configs (a changed default, e.g. the front-end, must retrain)."""
    digest = hashlib.sha256((data / "no_birds" / "manifest.csv").read_bytes())
    for config in sorted([*(REPO / "config").rglob("*.yaml"),
                          *(REPO / "distillation" / "configs").rglob("*.yaml")]):
        digest.update(str(config.relative_to(REPO)).encode())
        digest.update(config.read_bytes())
    metadata = json.loads((data / "soft_labels" / "metadata.json").read_text())
    for key in ("species_order", "hop", "birdnet_version", "files_processed"):
        digest.update(json.dumps(metadata.get(key), sort_keys=True).encode())
    return digest.hexdigest()


def print_summary(data: Path, seconds: float) -> None:
    report = json.loads((data / "benchmark_results" / "comparison" /
                         "comparison_report.json").read_text())
    sidecar = json.loads((data / "exported" / "model.json").read_text())
    efficiency = report.get("efficiency") or {}
    s, b = report["student"], report["birdnet"]
    int8 = [f for f in sidecar.get("files", {}).values() if "int8" in str(f)]
    int8_path = data / "exported" / int8[0] if int8 else None
    print("\n" + "=" * 64)
    print(f"Demo finished in {seconds:.0f} s (synthetic data: the numbers show the pipeline "
          "works, not how well real birds are recognised)")
    print(f"  test files              {report['files']}")
    print(f"  macro-F1                student {s['macro_f1']:.3f} | BirdNET {b['macro_f1']:.3f}")
    print(f"  accuracy                student {s['accuracy']:.3f} | BirdNET {b['accuracy']:.3f}")
    if efficiency:
        ms = efficiency["ms_per_window"]
        print(f"  ms per 3 s window       student {ms['student']} (ONNX INT8) | BirdNET "
              f"{ms['birdnet']} -> {efficiency['speed_ratio_birdnet_over_student']}x faster "
              "(1 thread)")
    if int8_path and int8_path.exists():
        print(f"  INT8 model size         {int8_path.stat().st_size / 1024:.0f} KB")
    detections = data / "detections" / "detections.csv"
    calls = data / "long_recording.annotations.csv"
    if detections.exists() and calls.exists():
        from demo.scoring import format_scores, score_files

        print("  long recording (3 min, planted calls; a call is found when a detection of its "
              "species overlaps it):")
        print("\n".join(format_scores(score_files(detections, calls))))
    print("Reports:")
    print(f"  training      {data.parent / 'logs' / 'demo_distillation'}/<timestamp>/")
    print(f"  benchmark     {data / 'benchmark_results' / 'comparison' / 'comparison_report.txt'}")
    print(f"  exported      {data / 'exported'}")
    print(f"  detections    {data / 'detections'}")


if __name__ == "__main__":
    sys.exit(main())
