"""Cost of the student and of BirdNET, measured in the benchmark's own run.

The figures come from ``export.latency`` (the same code as ``python -m export.latency``): one
thread, batch 1, per 3 s window including the front-end, each engine in its own process.
The student is timed as it is deployed (ONNX INT8, exported on the fly unless an export is
given) and, for reference, in PyTorch.
"""

from __future__ import annotations

from pathlib import Path

from export.latency import measure_latency


def measure_efficiency(checkpoint_path: str | Path, windows: int = 20,
                       exported_dir: str | Path | None = None) -> dict:
    report = measure_latency(checkpoint_path, exported_dir, repeats=max(5, windows),
                             birdnet_repeats=max(5, windows // 2), rounds=1)
    engines = report["engines"]
    student = engines["onnx_int8"] if engines.get("onnx_int8") else engines["onnx_fp32"]
    birdnet = engines["birdnet"]
    return {
        "parameters": {"student": student["parameters"], "birdnet": birdnet["parameters"]},
        "model_file_bytes": {"student": student["size_bytes"], "birdnet": birdnet["size_bytes"]},
        "ms_per_window": {"student": round(student["ms"], 3), "birdnet": round(birdnet["ms"], 3)},
        "ms_per_window_pytorch": {"student": round(engines["pytorch"]["ms"], 3),
                                  "birdnet": round(birdnet["ms"], 3)},
        "speed_ratio_birdnet_over_student": round(birdnet["ms"] / student["ms"], 2),
        "student_engine": "onnx_int8" if engines.get("onnx_int8") else "onnx_fp32",
        "load_average_1min": round(report["load_average_1min"], 2),
    }
