"""Is soft-label extraction as fast as BirdNET itself? Measure both on the same windows.

    python -m distillation.bench_extraction --bird_dir bird_sound_dataset --files 60 \
        --workers 1 2

For each worker count: the raw interpreter throughput (windows pre-cut in memory, each worker
process running inference on its share, timed from a common start) next to the extraction
throughput (extract_soft_labels into a temporary folder: decode, resample, cut, infer, write).
"Extraction" is end to end, start-up included; "steady" leaves out the start-up (pool, model
loading) by timing from the first record written to the last. Each figure is the best of
--repeats interleaved runs (other load on the machine only ever slows a run down).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillation.species_names import UnknownSpeciesError
from distillation.teacher import DEFAULT_BATCH_SIZE, BirdNetFiles, BirdNetTeacher, species_names
from distillation.window_labeller import WindowLabeller, cut_windows

# The extraction side (pandas and all) is imported inside the functions that use it: spawned
# worker processes import this module again, and should start as fast as the real CLI's.

log = logging.getLogger(__name__)


@dataclass
class BenchRow:
    workers: int
    windows: int
    raw_per_s: float
    extraction_per_s: float
    steady_per_s: float


def _raw_worker(files: BirdNetFiles, paths: list[str], share: tuple[int, int], hop: float,
                batch_size: int, barrier, results) -> None:
    """Cut this worker's windows (untimed), wait for the others, then time inference only."""
    teacher = BirdNetTeacher(num_threads=1, batch_size=batch_size, files=files)
    labeller = WindowLabeller(teacher, [0], hop)
    windows = []
    for path in paths:
        audio, starts = labeller.load(path)
        windows.append(cut_windows(audio, teacher.sample_rate, starts, teacher.window_samples))
    mine = np.concatenate(windows)[share[0] :: share[1]]
    teacher.logits(mine[:1])  # first call sets the interpreter up; not part of throughput
    barrier.wait()
    start = time.monotonic()
    teacher.logits(mine)
    results.put((len(mine), start, time.monotonic()))


def raw_throughput(
    paths: list[str], workers: int, hop: float, batch_size: int
) -> tuple[int, float]:
    """(windows, windows/s) of BirdNET alone, ``workers`` processes with one thread each."""
    from distillation.teacher import birdnet_files

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    results = context.Queue()
    processes = [
        context.Process(target=_raw_worker, args=(birdnet_files(), paths, (i, workers), hop,
                                                  batch_size, barrier, results))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    reports = [results.get() for _ in processes]
    for process in processes:
        process.join()
    total = sum(n for n, _, _ in reports)
    elapsed = max(end for _, _, end in reports) - min(start for _, start, _ in reports)
    return total, total / elapsed


def extraction_throughput(
    species: list[str], bird_dir: Path, files: int | None, workers: int, hop: float,
    batch_size: int,
) -> tuple[int, float, float]:
    """(windows, end-to-end windows/s, steady windows/s) of extract_soft_labels."""
    from distillation.soft_label_records import read_metadata
    from distillation.soft_labels import extract_soft_labels

    written: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench_soft_labels_") as tmp:
        summary = extract_soft_labels(
            species, tmp, bird_dir, no_birds_dir=None, hop=hop, workers=workers,
            files_limit=files, resume=False, batch_size=batch_size, progress=False,
            on_record=lambda key: written.append((key, time.perf_counter())),
        )
        windows_of = {key: entry["windows"] for key, entry in read_metadata(tmp)["files"].items()}
    steady = float("nan")
    if len(written) > 1:
        # Windows finished after the first record, over the time since it was written.
        after_first = summary.windows_computed - windows_of[written[0][0]]
        steady = after_first / (written[-1][1] - written[0][1])
    return summary.windows_computed, summary.windows_computed / summary.seconds, steady


def known_species_folders(bird_dir: Path) -> list[str]:
    names = species_names()
    folders = []
    for folder in sorted(p.name for p in bird_dir.iterdir() if p.is_dir()):
        try:
            names.index(folder)
            folders.append(folder)
        except UnknownSpeciesError:
            log.warning("Folder %s is not a BirdNET species; left out", folder)
    return folders


def run_benchmark(bird_dir: Path, files: int | None, workers: list[int], hop: float,
                  batch_size: int = DEFAULT_BATCH_SIZE, repeats: int = 2) -> list[BenchRow]:
    """One row per worker count; each figure is the best of ``repeats`` interleaved runs, so
    that a burst of other load on the machine does not decide the ratio."""
    from distillation.soft_labels import collect_tasks

    species = known_species_folders(bird_dir)
    tasks = collect_tasks(species, bird_dir, None, files, skipped=[])
    paths = [task.path for task in tasks]
    rows = []
    for count in workers:
        best = BenchRow(count, 0, 0.0, 0.0, 0.0)
        for _ in range(repeats):
            n_raw, raw = raw_throughput(paths, count, hop, batch_size)
            n_ext, e2e, steady = extraction_throughput(species, bird_dir, files, count, hop,
                                                       batch_size)
            if n_raw != n_ext:
                log.warning("Raw run saw %d windows, extraction %d", n_raw, n_ext)
            best = BenchRow(count, n_ext, max(best.raw_per_s, raw),
                            max(best.extraction_per_s, e2e), max(best.steady_per_s, steady))
        rows.append(best)
    return rows


def format_table(rows: list[BenchRow]) -> str:
    lines = [
        f"{'workers':>7} {'windows':>8} {'raw win/s':>10} {'extract win/s':>14} "
        f"{'ratio':>6} {'steady win/s':>13} {'ratio':>6} {'raw scaling':>12}"
    ]
    base = rows[0].raw_per_s / rows[0].workers if rows else 1.0
    for row in rows:
        lines.append(
            f"{row.workers:>7} {row.windows:>8} {row.raw_per_s:>10.1f} "
            f"{row.extraction_per_s:>14.1f} {row.extraction_per_s / row.raw_per_s:>6.2f} "
            f"{row.steady_per_s:>13.1f} {row.steady_per_s / row.raw_per_s:>6.2f} "
            f"{row.raw_per_s / base:>11.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bird_dir", type=Path, required=True,
                        help="species folders (Genus_species) of recordings")
    parser.add_argument("--files", type=int, default=None, help="use at most N files")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts to measure")
    parser.add_argument("--hop", type=float, default=1.0, help="seconds between windows")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per measurement; the best is reported")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rows = run_benchmark(args.bird_dir, args.files, args.workers, args.hop, args.batch_size,
                         args.repeats)
    print(f"BirdNET {BirdNetTeacher.version}, {multiprocessing.cpu_count()} CPUs, "
          f"hop {args.hop} s, batch {args.batch_size}, 1 interpreter thread per worker, "
          f"best of {args.repeats}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
