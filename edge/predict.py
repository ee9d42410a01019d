"""Detect species in recordings of any length: the run behind ``predict.py``.

Outputs in ``--out``:
  detections.csv                    file,start,end,species,confidence (all files)
  <relative path>.selection.table.txt   Raven table per file (BirdNET-Analyzer columns)
  combined.selection.table.txt      Raven table of all files
  <relative path>.labels.txt, kaleidoscope.csv   with --formats audacity / kaleidoscope
  skipped_files.csv                 path,reason,stage of every file that could not be used
  predict_progress.jsonl            files already analysed: the same command resumes from it
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.errors import exit_on_user_error
from common.file_io import write_csv_atomic
from common.safe_paths import display_path
from common.skipped_files import SkippedFile, write_skipped_files
from datasets.audio_utils import AudioLoadError, audio_duration
from datasets.file_scan import scan_audio_tree
from edge.detections import (
    DETECTION_COLUMNS,
    Detection,
    merge_consecutive,
    parse_class_thresholds,
    threshold_vector,
    window_detections,
)
from edge.errors import EdgeError
from edge.predict_progress import ProgressLedger
from edge.raven import (
    COMBINED_TABLE_NAME,
    TABLE_SUFFIX,
    FileDetections,
    write_combined_table,
)
from edge.runtime import PRECISIONS, Classifier, load_classifier
from edge.streaming import DEFAULT_BLOCK_S, StreamStats, stream_windows
from edge.tables import KALEIDOSCOPE_NAME, parse_formats, write_file_tables, write_kaleidoscope

log = logging.getLogger(__name__)

DETECTIONS_NAME = "detections.csv"
SKIPPED_NAME = "skipped_files.csv"
DEFAULT_BATCH = 16
TABLE_FLUSH_S = 30.0  # a long folder run rewrites its combined tables at most this often


@dataclass
class PredictOptions:
    hop_s: float | None = None  # None: the model's default hop
    threshold: float | None = None  # None: the model's default thresholds
    class_thresholds: str | None = None
    block_s: float = DEFAULT_BLOCK_S
    batch_size: int = DEFAULT_BATCH
    merge: bool = False
    formats: str | None = None  # None: csv and raven (edge.tables)


@dataclass
class PredictionSummary:
    out_dir: Path
    files: list[FileDetections] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0
    model: str = ""

    @property
    def detections(self) -> list[Detection]:
        return [d for f in self.files for d in f.detections]

    @property
    def audio_seconds(self) -> float:
        return sum(f.duration_s for f in self.files)


def find_inputs(input_path: Path, skipped: list[SkippedFile]) -> tuple[Path, list[Path]]:
    """(root the outputs are named relative to, audio files in a stable order)."""
    if input_path.is_file():
        return input_path.parent, [input_path]
    if not input_path.is_dir():
        raise EdgeError(f"input not found: {input_path}. Give an audio file or a folder of them")
    files = scan_audio_tree(
        input_path, lambda path, reason: skipped.append(SkippedFile(str(path), reason, "scan"))
    )
    if not files:
        raise EdgeError(f"no audio files (.wav, .mp3, .flac, .ogg) in {input_path}")
    return input_path, files


def table_names(files: Sequence[Path], root: Path) -> dict[Path, Path]:
    """Relative output name of each file's Raven table: its relative path with the audio
    extension replaced, or kept when two files differ only by extension."""
    stems = Counter(p.relative_to(root).with_suffix("") for p in files)
    names = {}
    for path in files:
        rel = path.relative_to(root)
        base = rel.with_suffix("") if stems[rel.with_suffix("")] == 1 else rel
        names[path] = base.parent / (base.name + TABLE_SUFFIX)
    return names


def analyse_file(classifier: Classifier, path: Path, name: str, options: PredictOptions,
                 thresholds: np.ndarray, progress: tqdm,
                 expected_s: float) -> tuple[list[Detection], StreamStats]:
    """All detections of one file (AudioLoadError when it cannot be used). The progress bar
    advances by audio time, up to ``expected_s`` (the duration the header announced)."""
    info = classifier.info
    stats = StreamStats()
    hop = options.hop_s or info.hop_duration
    detections: list[Detection] = []
    batch, starts, ends = [], [], []
    done_s = 0.0

    def flush() -> None:
        nonlocal done_s
        probs = classifier.predict_windows(np.stack(batch))
        detections.extend(window_detections(name, starts, ends, probs, info.species, thresholds))
        reached = min(ends[-1], expected_s)
        progress.update(max(0.0, reached - done_s))
        done_s = max(done_s, reached)
        batch.clear(), starts.clear(), ends.clear()

    for window in stream_windows(path, info.sample_rate, info.clip_duration, hop,
                                 options.block_s, stats):
        batch.append(window.audio)
        starts.append(window.start_s)
        ends.append(window.end_s)
        if len(batch) >= options.batch_size:
            flush()
    if batch:
        flush()
    progress.update(max(0.0, expected_s - done_s))  # header and decoded lengths may differ
    if options.merge:
        detections = merge_consecutive(detections)
    return detections, stats


def run_prediction(model: str | Path, input_path: str | Path, out_dir: str | Path,
                   options: PredictOptions | None = None, threads: int = 1,
                   precision: str = "int8") -> PredictionSummary:
    options = options or PredictOptions()
    if options.hop_s is not None and options.hop_s <= 0:
        raise EdgeError(f"--hop must be positive, got {options.hop_s}")
    if options.block_s <= 0 or options.batch_size < 1:
        raise EdgeError("--block_seconds must be positive and --batch_size at least 1")
    formats = parse_formats(options.formats)
    input_path, out_dir = Path(input_path), Path(out_dir)
    skipped: list[SkippedFile] = []
    root, files = find_inputs(input_path, skipped)  # before loading: fail fast on a typo
    classifier = load_classifier(model, threads, precision)
    info = classifier.info
    thresholds = threshold_vector(
        info.species, info.thresholds, options.threshold,
        parse_class_thresholds(options.class_thresholds, info.species),
    )
    summary = PredictionSummary(out_dir, skipped=skipped, model=classifier.description)
    names = table_names(files, root)
    ledger = ProgressLedger(out_dir, run_settings(model, classifier, options, thresholds, root))
    started = time.perf_counter()
    flushed = started
    durations = {p: _duration_or_zero(p) for p in files}
    with tqdm(total=sum(durations.values()), unit="s", desc="audio analysed",
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]",
              ) as progress:
        for path in files:
            name = path.relative_to(root).as_posix()
            progress.set_postfix_str(name[-40:], refresh=False)
            done = ledger.finished(name, path)
            if done is not None:  # analysed by an earlier, interrupted run of this command
                summary.files.append(done)
                progress.update(durations[path])
                continue
            try:
                found, stats = analyse_file(classifier, path, name, options, thresholds,
                                            progress, durations[path])
            except AudioLoadError as error:
                log.warning("skipping %s: %s", path, error)
                skipped.append(SkippedFile(str(path), str(error), "predict"))
                continue
            high = min(info.high_freq_hz or stats.input_sample_rate / 2,
                       stats.input_sample_rate / 2)
            item = FileDetections(str(path.resolve()), stats.duration_s, found,
                                  info.low_freq_hz, high)
            write_file_tables(out_dir, names[path], item, info.common_names, formats)
            summary.files.append(item)
            ledger.record(name, path, item)
            if time.perf_counter() - flushed > TABLE_FLUSH_S:
                # A killed run keeps what it found so far.
                write_tables(summary, info, formats, root)
                flushed = time.perf_counter()
    summary.seconds = time.perf_counter() - started
    write_tables(summary, info, formats, root)
    return summary


def write_tables(summary: PredictionSummary, info, formats, root: Path) -> None:
    """detections.csv, the combined Raven table and skipped_files.csv of the files so far."""
    out_dir = summary.out_dir
    rows = [d.row() for d in summary.detections]
    write_csv_atomic(out_dir / DETECTIONS_NAME, DETECTION_COLUMNS, rows)
    if "raven" in formats:
        write_combined_table(out_dir / COMBINED_TABLE_NAME, summary.files, info.common_names)
    if "kaleidoscope" in formats:
        write_kaleidoscope(out_dir / KALEIDOSCOPE_NAME, root.resolve(), summary.files,
                           info.common_names)
    write_skipped_files(summary.skipped, out_dir / SKIPPED_NAME)


def run_settings(model: str | Path, classifier: Classifier, options: PredictOptions,
                 thresholds: np.ndarray, root: Path) -> dict:
    """What makes a file's result reusable by a resumed run: model, options and input."""
    model_path = Path(model)
    stat = model_path.stat()
    return {
        "model": str(model_path.resolve()), "model_stamp": [stat.st_size, stat.st_mtime_ns],
        "info": classifier.info.to_json(), "description": classifier.description,
        "hop_s": options.hop_s, "thresholds": [float(t) for t in thresholds],
        "merge": options.merge, "input": str(root.resolve()),
        # Per-file tables of resumed files were written in these formats.
        "formats": sorted(parse_formats(options.formats)),
    }


def _duration_or_zero(path: Path) -> float:
    try:
        return audio_duration(path)
    except AudioLoadError:
        return 0.0


def format_summary(summary: PredictionSummary) -> str:
    audio_s = summary.audio_seconds
    rtf = summary.seconds / audio_s if audio_s else float("nan")
    lines = [
        f"model: {summary.model}",
        f"analysed {len(summary.files)} file(s), {audio_s / 60:.1f} min of audio, in "
        f"{summary.seconds:.1f} s (real-time factor {rtf:.4f})",
        f"detections: {len(summary.detections)}",
    ]
    for species, count in Counter(d.species for d in summary.detections).most_common():
        lines.append(f"  {species:<32} {count}")
    if summary.skipped:
        lines.append(f"skipped {len(summary.skipped)} file(s); reasons in {SKIPPED_NAME}:")
        for item in summary.skipped[:10]:
            lines.append(f"  {display_path(item.path)}: {item.reason}")
        if len(summary.skipped) > 10:
            lines.append(f"  ... and {len(summary.skipped) - 10} more")
    lines.append(f"outputs in {summary.out_dir}: {DETECTIONS_NAME}, {COMBINED_TABLE_NAME}, "
                 f"per-file *{TABLE_SUFFIX}, {SKIPPED_NAME}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="predict.py",
        description="Detect species in recordings of any length with an exported model.",
    )
    p.add_argument("--model", required=True,
                   help="export folder (export_model.py --out), a .onnx file or a .pt checkpoint")
    p.add_argument("--input", required=True,
                   help="an audio file or a folder (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--hop", type=float, default=None,
                   help="seconds between window starts (default: the model's, 1.0)")
    p.add_argument("--threshold", type=float, default=None,
                   help="confidence threshold for every species (default: the model's own, per "
                        "species when set by python -m export.calibrate, else 0.5)")
    p.add_argument("--class_thresholds", default=None,
                   help="per-species thresholds: 'Genus_species=0.3,...' or a .json/.csv file")
    p.add_argument("--block_seconds", type=float, default=DEFAULT_BLOCK_S,
                   help="audio read per block; bounds memory for long files")
    p.add_argument("--threads", type=int, default=1, help="inference threads")
    p.add_argument("--batch_size", type=int, default=DEFAULT_BATCH, help="windows per model call")
    p.add_argument("--precision", choices=PRECISIONS, default="int8",
                   help="which model of an export folder to run")
    p.add_argument("--merge", action="store_true",
                   help="join overlapping windows of one species into one detection")
    p.add_argument("--formats", default=None,
                   help="tables besides detections.csv: raven,audacity,kaleidoscope "
                        "(default raven)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = PredictOptions(args.hop, args.threshold, args.class_thresholds, args.block_seconds,
                             args.batch_size, args.merge, args.formats)
    with exit_on_user_error(log):
        summary = run_prediction(args.model, args.input, args.out, options, args.threads,
                                 args.precision)
    print(format_summary(summary))
    # Nothing analysed at all is a failure a script should notice; some skipped files are not.
    return 0 if summary.files else 1


if __name__ == "__main__":
    sys.exit(main())
