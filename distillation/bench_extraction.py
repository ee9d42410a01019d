"""Is soft-label extraction as fast as BirdNET itself? Measure both on the same windows.

    python -m distillation.bench_extraction --bird_dir bird_sound_dataset --files 60 \
        --workers 1 2

For each worker count: the raw interpreter throughput (windows pre-cut in memory, each worker
process running inference on its share, timed from a common start) next to the extraction
throughput (extract_soft_labels into a temporary folder: decode, resample, cut, infer, write).
"Extraction" is end to end, start-up included; "steady" leaves out the start-up (pool, model
loading) by timing from the first record written to the last. Each figure is the best of
--repeats interleaved runs (other load on the machine only ever slows a run down).

Wall-clock figures on a shared machine move with whatever else runs; the CPU milliseconds per
window (summed over every process, start-up included for extraction) do not, and their ratio
is the per-worker efficiency of extraction against the bare interpreter.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdnet.species_names import UnknownSpeciesError
from birdnet.teacher import DEFAULT_BATCH_SIZE, BirdNetFiles, BirdNetTeacher, species_names
from datasets.windows import cut_windows
from distillation.window_labeller import WindowLabeller

# The extraction side (pandas and all) is imported inside the functions that use it: spawned
# worker processes import this module again, and should start as fast as the real CLI's.

log = logging.getLogger(__name__)


@dataclass
class Measurement:
    windows: int
    per_s: float  # windows per second of wall-clock time
    cpu_ms: float  # CPU milliseconds per window, all processes together
    steady_per_s: float = float("nan")


@dataclass
class BenchRow:
    workers: int
    raw: Measurement
    extraction: Measurement


def _raw_worker(files: BirdNetFiles, paths: list[str], share: tuple[int, int], hop: float,
                batch_size: int, barrier, results) -> None:
    """Cut this worker's windows (untimed), wait for the others, then time inference only."""
    teacher = BirdNetTeacher(num_threads=1, batch_size=batch_size, files=files)
    labeller = WindowLabeller(teacher, [0], hop)
    mine, seen = [], 0
    for path in paths:
        audio, starts = labeller.load(path)
        # Window i of the whole set goes to worker i % workers: equal shares.
        picked = [s for i, s in enumerate(starts, seen) if i % share[1] == share[0]]
        seen += len(starts)
        mine.append(cut_windows(audio, teacher.sample_rate, picked, teacher.window_samples))
    windows = np.concatenate(mine)
    teacher.logits(windows[:1])  # first call sets the interpreter up; not part of throughput
    barrier.wait()
    start, cpu = time.monotonic(), time.process_time()
    teacher.logits(windows)
    results.put((len(windows), start, time.monotonic(), time.process_time() - cpu))


def raw_throughput(paths: list[str], workers: int, hop: float, batch_size: int) -> Measurement:
    """BirdNET alone on pre-cut windows, ``workers`` processes with one thread each."""
    from birdnet.teacher import birdnet_files

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
    total = sum(r[0] for r in reports)
    elapsed = max(r[2] for r in reports) - min(r[1] for r in reports)
    return Measurement(total, total / elapsed, 1000 * sum(r[3] for r in reports) / total)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def extraction_throughput(
    species: list[str], bird_dir: Path, files: int | None, workers: int, hop: float,
    batch_size: int,
) -> Measurement:
    """extract_soft_labels end to end; CPU counts this process and the (finished) workers."""
    from distillation.soft_label_records import read_metadata
    from distillation.soft_labels import extract_soft_labels

    written: list[tuple[str, float]] = []
    cpu = time.process_time() + _children_cpu()
    with tempfile.TemporaryDirectory(prefix="bench_soft_labels_") as tmp:
        summary = extract_soft_labels(
            species, tmp, bird_dir, no_birds_dir=None, hop=hop, workers=workers,
            files_limit=files, resume=False, batch_size=batch_size, progress=False,
            on_record=lambda key: written.append((key, time.perf_counter())),
        )
        cpu = time.process_time() + _children_cpu() - cpu
        windows_of = {key: entry["windows"] for key, entry in read_metadata(tmp)["files"].items()}
    n = summary.windows_computed
    steady = float("nan")
    if len(written) > 1:
        # Windows finished after the first record, over the time since it was written.
        steady = (n - windows_of[written[0][0]]) / (written[-1][1] - written[0][1])
    return Measurement(n, n / summary.seconds, 1000 * cpu / n, steady)


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
        raws, extractions = [], []
        for _ in range(repeats):
            raws.append(raw_throughput(paths, count, hop, batch_size))
            extractions.append(
                extraction_throughput(species, bird_dir, files, count, hop, batch_size)
            )
        if raws[0].windows != extractions[0].windows:
            log.warning("Raw runs saw %d windows, extraction %d", raws[0].windows,
                        extractions[0].windows)
        rows.append(BenchRow(count, _best(raws), _best(extractions)))
    return rows


def _best(runs: list[Measurement]) -> Measurement:
    return Measurement(
        runs[0].windows,
        max(r.per_s for r in runs),
        min(r.cpu_ms for r in runs),
        max(r.steady_per_s for r in runs),
    )


def format_table(rows: list[BenchRow]) -> str:
    lines = [
        f"{'workers':>7} {'windows':>7} | {'raw win/s':>9} {'extract':>7} {'ratio':>5} "
        f"{'steady':>6} {'ratio':>5} | {'raw CPU ms/win':>14} {'extract':>7} {'ratio':>5} | "
        f"{'raw scaling':>11}"
    ]
    base = rows[0].raw.per_s / rows[0].workers if rows else 1.0
    for row in rows:
        raw, ext = row.raw, row.extraction
        lines.append(
            f"{row.workers:>7} {ext.windows:>7} | {raw.per_s:>9.1f} {ext.per_s:>7.1f} "
            f"{ext.per_s / raw.per_s:>5.2f} {ext.steady_per_s:>6.1f} "
            f"{ext.steady_per_s / raw.per_s:>5.2f} | {raw.cpu_ms:>14.1f} {ext.cpu_ms:>7.1f} "
            f"{raw.cpu_ms / ext.cpu_ms:>5.2f} | {raw.per_s / base:>10.2f}x"
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
