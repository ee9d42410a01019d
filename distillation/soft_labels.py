"""Soft labels for distillation: BirdNET's teacher signals for every window of every file.

:func:`extract_soft_labels` fills a soft-label folder (format in
``distillation.soft_label_records``) and :class:`SoftLabelStore` reads it during training.

Extraction resumes by default: a file whose record is valid (same settings, same source size
and mtime, or same size and bytes) is skipped, a changed file is recomputed, a file that
failed before and has not changed is not retried. A folder made with other settings (species
list, hop, location) is refused unless ``resume=False``, which recomputes everything in it:
soft labels can take hours to compute, so they are never overwritten by accident.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from birdnet.species_names import SpeciesNames, UnknownSpeciesError, folder_name
from birdnet.teacher import (
    BIRDNET_VERSION,
    DEFAULT_BATCH_SIZE,
    LOCATION_THRESHOLD,
    NO_BIRDS_SIGNAL_DEFINITION,
    NON_EVENT_LABELS,
    SAMPLE_RATE,
    WINDOW_S,
    BirdNetTeacher,
    birdnet_files,
    birdnet_labels,
    non_target_mask,
    plausible_species,
    species_names,
)
from common.classes import NO_BIRDS
from common.content_hash import SourceStamp
from common.errors import UserError
from common.file_io import write_json_atomic
from common.skipped_files import SkippedFile
from datasets.file_scan import scan_audio_tree
from datasets.split_manifest import (
    DatasetError,
    SourceFile,
    limit_files_per_class,
    scan_species_folders,
)
from datasets.unlabelled import (
    UNLABELLED_KEY_PREFIX,
    UNLABELLED_SOURCE,
    FileIdentity,
    scan_unlabelled,
    unlabelled_key,
    unlabelled_roots,
)
from distillation.shards import shard_of
from distillation.soft_label_records import (
    FORMAT_VERSION,
    METADATA_FILENAME,
    NO_BIRDS_KEY_PREFIX,
    OPTIONAL_ARRAYS,
    READABLE_FORMATS,
    read_metadata,
    read_record,
    record_path,
    record_status,
    remove_stale_temporaries,
    settings_hash,
    write_record,
)
from distillation.window_labeller import (
    Failure,
    FileSignals,
    WindowLabeller,
    init_worker,
    label_in_worker,
    label_path,
)

log = logging.getLogger(__name__)


class ExtractionError(ValueError):
    """A problem with the user's request that stops extraction; the message says what to do."""


class SoftLabelError(UserError, KeyError):
    """A file or class that the soft-label folder does not hold."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Location:
    """Recording site for BirdNET's location filter; ``week`` is 1..48, or -1 for all year."""

    lat: float
    lon: float
    week: int = -1


@dataclass(frozen=True)
class AudioTask:
    key: str
    path: str
    label: str
    stamp: SourceStamp


@dataclass
class ExtractionSummary:
    output: Path
    computed: int = 0
    reused: int = 0
    windows_computed: int = 0
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- settings


def resolve_species(names: Sequence[str]) -> list[str]:
    """BirdNET label lines of ``names``; UnknownSpeciesError, or ExtractionError on repeats."""
    if not names:
        raise ExtractionError("The species list is empty: give at least one species")
    resolver = species_names()
    labels = [resolver.label(name) for name in names]
    seen: dict[str, str] = {}
    for name, label in zip(names, labels, strict=True):
        if label in seen:
            raise ExtractionError(
                f"Species '{name}' and '{seen[label]}' are both BirdNET's '{label}'; list it once"
            )
        seen[label] = name
    return labels


def stored_arrays(store_all_logits: bool = False) -> dict[str, bool]:
    """Which optional arrays records hold (``metadata.json: stored``)."""
    return {"embedding": True, "all_logits": bool(store_all_logits)}


def extraction_settings(labels: Sequence[str], hop: float, location: Location | None,
                        store_all_logits: bool = False) -> dict:
    """Everything that changes a record's content; its hash stamps every record."""
    return {
        "format_version": FORMAT_VERSION,
        "stored": stored_arrays(store_all_logits),
        "birdnet_version": BIRDNET_VERSION,
        "sample_rate": SAMPLE_RATE,
        "window": WINDOW_S,
        "hop": float(hop),
        "species_labels": list(labels),
        "nonevent_labels": list(NON_EVENT_LABELS),
        "no_birds_signal": NO_BIRDS_SIGNAL_DEFINITION,
        "location": None
        if location is None
        else {
            "lat": location.lat,
            "lon": location.lon,
            "week": location.week,
            "threshold": LOCATION_THRESHOLD,
        },
    }


def _check_request(hop: float, workers: int, threads: int, location: Location | None) -> None:
    if not hop > 0:
        raise ExtractionError(f"--hop must be positive, got {hop}")
    if workers < 1 or threads < 1:
        raise ExtractionError(f"--workers and --threads must be at least 1 ({workers}, {threads})")
    if location is not None:
        if not -90 <= location.lat <= 90 or not -180 <= location.lon <= 180:
            raise ExtractionError(f"--lat/--lon out of range: {location.lat}, {location.lon}")
        if location.week != -1 and not 1 <= location.week <= 48:
            raise ExtractionError(f"--week must be 1..48 or -1 (all year), got {location.week}")


def _describe_difference(old: dict, new: dict) -> str:
    changed = [name for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
    return "; ".join(f"{name}: {old.get(name)!r} -> {new.get(name)!r}" for name in changed)


# ----------------------------------------------------------------------------- inputs


def collect_tasks(
    species_folders: Sequence[str],
    bird_dir: str | Path,
    no_birds_dir: str | Path | None,
    files_limit: int | None,
    skipped: list[SkippedFile],
    unlabelled_dirs: Sequence[str | Path] = (),
) -> list[AudioTask]:
    """Audio files to label: species folders in list order, the no-birds folder, then the
    unlabelled folders (minus files that are one of the labelled files)."""
    try:
        sources = scan_species_folders(bird_dir, species_folders, skipped)
    except DatasetError:
        sources = []  # an error below only if the no-birds folder has nothing either
    roots = {"bird": Path(bird_dir)}
    if no_birds_dir is not None and Path(no_birds_dir).is_dir():
        roots[NO_BIRDS] = Path(no_birds_dir)
        found = scan_audio_tree(no_birds_dir, lambda path, reason: skipped.append(
            SkippedFile(str(path), reason, "scan")))
        sources += [
            SourceFile(p.relative_to(no_birds_dir).as_posix(), NO_BIRDS, NO_BIRDS)
            for p in found
        ]
        log.info("Labelling %d pre-generated no-birds samples from %s", len(found), no_birds_dir)
    elif no_birds_dir is not None:
        log.info("No no-birds folder at %s; labelling bird recordings only", no_birds_dir)
    unlabelled = scan_unlabelled(unlabelled_dirs, skipped) if unlabelled_dirs else []
    if not sources and not unlabelled:
        raise ExtractionError(
            f"No audio files to label: the species folders {list(species_folders)} under "
            f"'{bird_dir}' are missing or empty (folders are named Genus_species)"
        )
    sources = limit_files_per_class(sources, files_limit)
    pairs = [
        (source.path if source.source == "bird" else NO_BIRDS_KEY_PREFIX + source.path,
         roots[source.source] / source.path, source.label)
        for source in sources
    ]
    if unlabelled:
        # A folder of "any audio" may hold the labelled files too: label those once only.
        same = FileIdentity(path for _, path, _ in pairs)
        kept = [f for f in unlabelled if not same.matches(f.path)]
        if len(kept) < len(unlabelled):
            log.info("%d unlabelled files are labelled files too; labelled once, as such",
                     len(unlabelled) - len(kept))
        kept = kept[:files_limit] if files_limit else kept
        log.info("Labelling %d unlabelled files from %s", len(kept), list(unlabelled_dirs))
        pairs += [(f.key, f.path, UNLABELLED_SOURCE) for f in kept]
    tasks = []
    for key, path, label in pairs:
        try:
            stamp = SourceStamp.of(path)
        except OSError as error:
            skipped.append(SkippedFile(key, f"cannot read file ({error})", "scan"))
            continue
        tasks.append(AudioTask(key, str(path), label, stamp))
    return tasks


# ----------------------------------------------------------------------------- labelling

def _results(
    todo: list[AudioTask],
    workers: int,
    labeller_args: tuple,
    teacher: BirdNetTeacher | None,
) -> Generator[tuple[str, FileSignals | None, Failure | None], None, None]:
    """(key, signals, failure) per task, from this process or a pool of ``workers``."""
    if not todo:
        return  # nothing to compute: do not even load the model
    files, target_indices, hop, mask, threads, batch_size, embedding, all_logits = labeller_args
    if workers == 1:
        teacher = teacher or BirdNetTeacher(threads, batch_size, files)
        labeller = WindowLabeller(teacher, target_indices, hop, mask, embedding, all_logits)
        for task in todo:
            yield (task.key, *label_path(labeller, task.path))
        return
    # Longest files first, so no worker is left with one long file at the end.
    ordered = [(t.key, t.path) for t in sorted(todo, key=lambda t: -t.stamp.size)]
    # spawn: workers start clean, without the parent's threads (torch, tqdm) or open files.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=init_worker, initargs=labeller_args) as pool:
        yield from pool.imap_unordered(label_in_worker, ordered, chunksize=1)


# ----------------------------------------------------------------------------- extraction


def extract_soft_labels(
    species: Sequence[str],
    output_path: str | Path,
    bird_dir: str | Path,
    no_birds_dir: str | Path | None = None,
    hop: float = 1.0,
    workers: int = 1,
    threads: int = 1,
    files_limit: int | None = None,
    resume: bool = True,
    location: Location | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    teacher: BirdNetTeacher | None = None,
    on_record: Callable[[str], None] | None = None,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    unlabelled_dirs: Sequence[str | Path] = (),
    store_all_logits: bool = False,
    views: int = 0,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    view_pitch_semitones: float = 0.0,
    view_partner_prob: float = 1.0,
) -> ExtractionSummary:
    """Compute and store BirdNET's soft labels for every window of every file.

    ``species``: names in any form BirdNET resolves (``Genus species``, ``Genus_species``,
    ``Genus species_Common Name``), in class order; their folders ``bird_dir/Genus_species``
    are labelled (a missing folder is only a warning). Files of ``no_birds_dir`` (when it
    exists) are labelled too, under ``no_birds/<path>``. ``teacher`` reuses a loaded model
    (only with ``workers=1``); ``on_record(key)`` runs after each record is written.

    Every record holds BirdNET's embedding; ``store_all_logits`` adds all 6522 logits. Files
    of ``unlabelled_dirs`` are labelled under ``unlabelled/<folder name>/<path>``. ``views``
    > 0 then labels that many augmented views of every window (``distillation.views``),
    reproducibly from ``seed``; their 48 kHz audio is cached in ``cache_dir``. A view's
    anchor moves in pitch by up to +-``view_pitch_semitones`` and has a partner window mixed
    in with chance ``view_partner_prob`` (distillation/views.py).
    """
    started = time.perf_counter()
    _check_request(hop, workers, threads, location)
    if views < 0:
        raise ExtractionError(f"--views must be 0 or more, got {views}")
    if views:
        from distillation.views import ViewSettings

        # Refuses bad view settings before BirdNET runs (ViewError).
        view_settings = ViewSettings(views=int(views), seed=int(seed),
                                     partner_prob=float(view_partner_prob),
                                     pitch_semitones=float(view_pitch_semitones))
    if views and shard is not None:
        raise ExtractionError(
            "--views mixes windows of all files, so it cannot run on one shard: merge the "
            "shards first, then run the same command with --views and without --num_shards"
        )
    try:
        roots = unlabelled_roots(unlabelled_dirs)
    except DatasetError as error:
        raise ExtractionError(str(error)) from None
    labels = resolve_species(species)
    folders = [folder_name(label) for label in labels]
    output = Path(output_path)
    settings = extraction_settings(labels, hop, location, store_all_logits)
    digest = settings_hash(settings)

    previous = read_metadata(output)
    same_settings = previous is not None and previous.get("settings_hash") == digest
    if previous is not None and not same_settings and resume:
        raise ExtractionError(
            f"'{output}' holds soft labels made with other settings "
            f"({_describe_difference(previous.get('settings', {}), settings)}). Use another "
            "--output_path, or --no-resume to recompute everything in this folder."
        )

    if not Path(bird_dir).is_dir():
        raise ExtractionError(
            f"Bird dataset folder '{bird_dir}' does not exist: --bird_dir must hold one folder "
            "of recordings per species, named Genus_species"
        )
    skipped: list[SkippedFile] = []
    tasks = collect_tasks(folders, bird_dir, no_birds_dir, files_limit, skipped,
                          unlabelled_dirs)
    if shard is not None:
        # (index, count): this run's deterministic share, see distillation/shards.py.
        tasks = [t for t in tasks if shard_of(t.key, shard[1]) == shard[0]]
    if skipped:
        log.warning("%d files or folders skipped while scanning (listed in %s)", len(skipped),
                    output / METADATA_FILENAME)

    target_indices = [birdnet_labels().index(label) for label in labels]
    allowed, location_info = _location_filter(labels, location)
    mask = non_target_mask(target_indices, allowed)

    output.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temporaries(output)
    if removed:
        log.info("Removed %d temporary files left by an interrupted run", removed)
    summary = ExtractionSummary(output=output)
    done, todo = _plan(tasks, output, digest, previous if same_settings else None, resume, summary)

    base = {
        "settings": settings,
        "settings_hash": digest,
        "created": (previous or {}).get("created") if same_settings else None,
        "bird_dir": str(bird_dir),
        "no_birds_dir": (
            str(no_birds_dir) if no_birds_dir is not None and Path(no_birds_dir).is_dir() else None
        ),
        "species": [
            {
                "folder": folder,
                "birdnet_label": label,
                "birdnet_index": index,
                "has_folder": (Path(bird_dir) / folder).is_dir(),
            }
            for folder, label, index in zip(folders, labels, target_indices, strict=True)
        ],
        "location_filter": location_info,
        "skipped": [{"path": s.path, "reason": s.reason, "stage": s.stage} for s in skipped],
        "unlabelled_dirs": {name: str(path) for name, path in roots.items()},
        "views": (previous or {}).get("views") if same_settings else None,
    }
    if todo:
        _write_metadata(output, base, done, summary, "running")
    files = teacher.files if teacher is not None else birdnet_files()
    labeller_args = (files, target_indices, float(hop), mask, threads, batch_size, True,
                     bool(store_all_logits))
    results = _results(todo, workers, labeller_args, teacher if workers == 1 else None)
    status = "interrupted"
    try:
        _store_results(results, todo, output, digest, done, summary, on_record, progress,
                       save_metadata=lambda: _write_metadata(output, base, done, summary,
                                                             "running"))
        status = "complete"
    finally:
        results.close()  # stops the worker pool now, even when leaving on an exception
        summary.seconds = time.perf_counter() - started
        _write_metadata(output, base, done, summary, status)
    if views:
        from distillation.views import extract_views

        base["views"] = extract_views(
            output, digest, view_settings, {key: entry for key, entry in done.items()},
            {task.key: task.path for task in tasks}, labeller_args, teacher, cache_dir,
            resume=resume, progress=progress,
        )
        summary.seconds = time.perf_counter() - started
        _write_metadata(output, base, done, summary, status)
    log.info(
        "Soft labels in %s: %d files computed (%d windows), %d reused, %d failed, %.1f s",
        output, summary.computed, summary.windows_computed, summary.reused, len(summary.failed),
        summary.seconds,
    )
    return summary


def _store_results(
    results: Iterator[tuple[str, FileSignals | None, Failure | None]],
    todo: list[AudioTask],
    output: Path,
    digest: str,
    done: dict[str, dict],
    summary: ExtractionSummary,
    on_record: Callable[[str], None] | None,
    progress: bool,
    save_metadata: Callable[[], None],
) -> None:
    """Write each result as it arrives; record failures; keep ``done`` and ``summary`` current."""
    task_of = {task.key: task for task in todo}
    last_save = time.monotonic()
    with tqdm(total=len(todo), unit="file", desc="soft labels", disable=not progress) as bar:
        for key, result, failure in results:
            task = task_of[key]
            bar.update(1)
            if failure is not None:
                stage, reason = failure
                log.warning("Skipping %s (%s): %s", key, stage, reason)
                summary.failed.append({
                    "path": key, "reason": reason, "stage": stage,
                    "size": task.stamp.size, "mtime_ns": task.stamp.mtime_ns,
                })
                continue
            assert result is not None
            write_record(output, key, result.starts, result.duration_s, result.signals,
                         task.stamp, digest)
            done[key] = {"label": task.label, "windows": len(result.starts),
                         "duration_s": round(result.duration_s, 4)}
            summary.computed += 1
            summary.windows_computed += len(result.starts)
            bar.set_postfix(windows=summary.windows_computed, refresh=False)
            if on_record is not None:
                on_record(key)
            # metadata.json is a summary, not the resume state (the records are), so
            # refreshing it now and then is enough.
            if time.monotonic() - last_save > 60:
                save_metadata()
                last_save = time.monotonic()


def _location_filter(
    labels: Sequence[str], location: Location | None
) -> tuple[set[str] | None, dict | None]:
    """Labels plausible at the site (None: no filter) and what metadata.json says about it."""
    if location is None:
        return None, None
    allowed = plausible_species(location.lat, location.lon, location.week)
    implausible = [label for label in labels if label not in allowed]
    if implausible:
        log.warning("BirdNET does not expect these at this place and week: %s", implausible)
    info = {
        "lat": location.lat,
        "lon": location.lon,
        "week": location.week,
        "threshold": LOCATION_THRESHOLD,
        "n_plausible_species": len(allowed),
        "targets_not_plausible": implausible,
    }
    return allowed, info


def _plan(
    tasks: list[AudioTask],
    output: Path,
    digest: str,
    previous: dict | None,
    resume: bool,
    summary: ExtractionSummary,
) -> tuple[dict[str, dict], list[AudioTask]]:
    """(files already labelled, tasks to compute); ``previous``: metadata of equal settings.

    Valid records and unchanged known-bad files are counted in ``summary`` and not redone.
    """
    done: dict[str, dict] = {}
    old_failures: dict[str, dict] = {}
    if previous is not None:
        # Records of files outside this run's selection (e.g. --files_limit) stay listed.
        listed = previous.get("files", {})
        done.update({key: v for key, v in listed.items() if record_path(output, key).is_file()})
        old_failures = {f["path"]: f for f in previous.get("failed_files", [])}
    todo: list[AudioTask] = []
    for task in tasks:
        if resume:
            valid, n_windows, duration = record_status(output, task.key, task.stamp, digest)
            if valid:
                done[task.key] = {
                    "label": task.label, "windows": n_windows, "duration_s": round(duration, 4)
                }
                summary.reused += 1
                continue
            failure = old_failures.get(task.key)
            stamp = (task.stamp.size, task.stamp.mtime_ns)
            if failure and (failure.get("size"), failure.get("mtime_ns")) == stamp:
                summary.failed.append(failure)  # an unchanged bad file is not retried
                continue
        done.pop(task.key, None)
        todo.append(task)
    log.info(
        "%d files: %d already labelled, %d known bad, %d to compute", len(tasks), summary.reused,
        len(summary.failed), len(todo),
    )
    return done, todo


def _write_metadata(
    output: Path, base: dict, done: dict[str, dict], summary: ExtractionSummary, status: str
) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    settings = base["settings"]
    metadata = {
        "format_version": FORMAT_VERSION,
        "status": status,
        # Optional arrays the records hold (see distillation/soft_label_records.py).
        "stored": settings["stored"],
        "birdnet_version": settings["birdnet_version"],
        "sample_rate": settings["sample_rate"],
        "window": settings["window"],
        "hop": settings["hop"],
        "species_order": [s["folder"] for s in base["species"]],
        "species": base["species"],
        "no_birds_class": NO_BIRDS,
        "no_birds_key_prefix": NO_BIRDS_KEY_PREFIX,
        "no_birds_signal": {
            "definition": NO_BIRDS_SIGNAL_DEFINITION,
            "see": "birdnet.teacher.no_birds_logit",
        },
        "non_event_classes": list(NON_EVENT_LABELS),
        "location_filter": base["location_filter"],
        "settings": settings,
        "settings_hash": base["settings_hash"],
        "bird_dir": base["bird_dir"],
        "no_birds_dir": base["no_birds_dir"],
        "unlabelled_dirs": base["unlabelled_dirs"],
        "unlabelled_key_prefix": UNLABELLED_KEY_PREFIX,
        "views": base["views"],
        "created": base["created"] or now,
        "files_processed": len(done),
        "windows": int(sum(entry["windows"] for entry in done.values())),
        "failed_files": sorted(summary.failed, key=lambda f: f["path"]),
        "skipped": base["skipped"],
        "files": dict(sorted(done.items())),
    }
    base["created"] = metadata["created"]
    old = read_metadata(output)
    if old is not None and {**old, "updated": None} == {**metadata, "updated": None}:
        return  # nothing changed: leave the file (and its mtime) alone
    metadata["updated"] = now
    write_json_atomic(metadata, output / METADATA_FILENAME)


# ----------------------------------------------------------------------------- reading


class SoftLabelStore:
    """Read access to a soft-label folder made by :func:`extract_soft_labels`.

    Paths are keys as in the folder: relative to the bird dataset root
    (``Bubo_bubo/XC1.mp3``), or ``no_birds/<path>`` for pre-generated no-birds samples.
    """

    def __init__(self, output_path: str | Path) -> None:
        self.root = Path(output_path)
        metadata = read_metadata(self.root)
        if metadata is None:
            raise FileNotFoundError(
                f"No soft labels at '{self.root}' ({METADATA_FILENAME} missing); run "
                "extract_soft_labels.py first"
            )
        if metadata.get("format_version") not in READABLE_FORMATS:
            raise ValueError(
                f"Soft labels at '{self.root}' use format {metadata.get('format_version')}, "
                f"this code reads formats {list(READABLE_FORMATS)}; extract them again"
            )
        if metadata.get("status") != "complete":
            log.warning(
                "Soft labels at %s are %s: only %d files are labelled", self.root,
                metadata.get("status"), metadata.get("files_processed", 0),
            )
        self.metadata = metadata
        self.species: list[str] = list(metadata["species_order"])
        self.birdnet_labels: list[str] = [s["birdnet_label"] for s in metadata["species"]]
        self.hop: float = float(metadata["hop"])
        self.window: float = float(metadata["window"])
        self.sample_rate: int = int(metadata["sample_rate"])
        self.birdnet_version: str = str(metadata["birdnet_version"])
        # Format 1 folders predate the optional arrays: they store none of them.
        stored = metadata.get("stored") or {}
        self.stored: dict[str, bool] = {name: bool(stored.get(name)) for name in OPTIONAL_ARRAYS}
        self.view_info: dict | None = metadata.get("views")
        self._unlabelled_roots: dict[str, str] = dict(metadata.get("unlabelled_dirs") or {})
        self._files: dict[str, dict] = metadata["files"]
        self._names = SpeciesNames(self.birdnet_labels)
        self._records: dict[str, dict[str, np.ndarray]] = {}
        self._columns: dict[tuple[str, ...], np.ndarray] = {}

    @property
    def files(self) -> list[str]:
        return list(self._files)

    def _key(self, path: str | Path) -> str:
        key = Path(path).as_posix()
        if key in self._files or not Path(path).is_absolute():
            return key
        # An absolute path inside one of the dataset roots maps to its key.
        roots = [(self.metadata.get("bird_dir"), ""),
                 (self.metadata.get("no_birds_dir"), NO_BIRDS_KEY_PREFIX)]
        roots += [(root, unlabelled_key(name, "")) for name, root in
                  self._unlabelled_roots.items()]
        for root, prefix in roots:
            if root:
                try:
                    return prefix + Path(path).resolve().relative_to(
                        Path(root).resolve()).as_posix()
                except ValueError:
                    continue
        return key

    def has(self, path: str | Path) -> bool:
        return self._key(path) in self._files

    def record(self, path: str | Path) -> dict[str, np.ndarray]:
        """The stored arrays of a file but ``all_logits`` (read those with
        ``read_record``); see distillation.soft_label_records."""
        key = self._key(path)
        if key not in self._files:
            raise SoftLabelError(
                f"No soft labels for '{path}' in '{self.root}' ({len(self._files)} files "
                "labelled); run extract_soft_labels.py on this dataset"
            )
        if key not in self._records:
            self._records[key] = read_record(self.root, key, exclude=("all_logits",))
        return self._records[key]

    def require(self, array: str, needed_by: str) -> None:
        """A clear error when the folder lacks an optional array a recipe needs."""
        if not self.stored.get(array):
            version = self.metadata.get("format_version")
            why = ("was extracted before records held embeddings (format 1)" if version == 1
                   else f"does not store '{array}'")
            flag = " --store_all_logits" if array == "all_logits" else ""
            raise SoftLabelError(
                f"{needed_by} needs BirdNET's {array.replace('_', ' ')}, but the soft-label "
                f"folder '{self.root}' {why}. Extract again into a new folder: "
                f"python extract_soft_labels.py{flag} --output_path <new folder> ..."
            )

    def embedding_for(self, path: str | Path, offset_s: float,
                      student_clip_s: float) -> np.ndarray:
        """BirdNET's embedding (1024,) float32 of the teacher window covering the student
        window at ``offset_s`` (see :meth:`window_index`)."""
        row = self.window_index(path, offset_s, student_clip_s)
        return self.record(path)["embedding"][row].astype(np.float32)

    def windows(self, path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts (n,), target_logits (n, n_species), no_birds_logit (n,)) of a file."""
        data = self.record(path)
        return data["starts"], data["target_logits"], data["no_birds_logit"]

    def window_index(self, path: str | Path, offset_s: float, student_clip_s: float) -> int:
        """The teacher window whose centre is closest to the student window's centre.

        Centres rather than starts, because the teacher window (3 s) and the student clip
        may differ in length; equal distances go to the earlier window.
        """
        starts = self.record(path)["starts"]
        centres = starts + self.window / 2.0
        return int(np.argmin(np.abs(centres - (offset_s + student_clip_s / 2.0))))

    def class_columns(self, class_names: Sequence[str]) -> np.ndarray:
        """For each class, its column in target_logits, or -1 for no_birds."""
        names = tuple(class_names)
        if names not in self._columns:
            columns = []
            for name in names:
                if name == NO_BIRDS:
                    columns.append(-1)
                    continue
                try:
                    columns.append(self._names.index(name))
                except UnknownSpeciesError:
                    raise SoftLabelError(
                        f"Class '{name}' is not in the soft labels at '{self.root}' (species: "
                        f"{self.species}); extract soft labels for this class list"
                    ) from None
            self._columns[names] = np.asarray(columns, dtype=np.int64)
        return self._columns[names]

    def teacher_logits_for(
        self, path: str | Path, offset_s: float, student_clip_s: float,
        class_names: Sequence[str],
    ) -> np.ndarray:
        """Teacher logits (n_classes,) for the student window at ``offset_s`` of ``path``.

        ``class_names`` is the student's class order (species as ``Genus_species``, then
        ``no_birds``); the teacher window is chosen by :meth:`window_index`.
        """
        row = self.window_index(path, offset_s, student_clip_s)
        return self.logits_at(path, row, class_names)

    def logits_at(self, path: str | Path, row: int, class_names: Sequence[str]) -> np.ndarray:
        """Teacher logits (n_classes,) of teacher window ``row`` of ``path``, student order."""
        columns = self.class_columns(class_names)
        _, target, no_birds = self.windows(path)
        values = np.where(columns >= 0, target[row, np.maximum(columns, 0)], no_birds[row])
        return values.astype(np.float32)
