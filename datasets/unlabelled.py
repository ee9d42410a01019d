"""Unlabelled audio: folders of any recordings whose windows carry only teacher targets.

Field recorders fill disks with hours nobody labels; BirdNET can label all of them, so they
feed the teacher losses (logit and embedding distillation, pre-training) but never the hard
label loss, and never validation or test.

Each file is known by a key that does not depend on where the folder lies on disk, so the
soft labels extracted on one machine serve a training run on another:
``unlabelled/<folder name>/<path inside the folder>``. Two unlabelled folders with the same
name are refused (their keys would collide).

A user may point ``dataset.unlabelled_dirs`` at a superset of the labelled data (the whole
``data/`` folder, say): every unlabelled file that is the same file as a file of the run's
split manifest, by path or by content, is dropped. A copy of a test recording would
otherwise be trained on; a copy of a training recording would count twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.skipped_files import SkippedFile
from datasets.audio_utils import is_audio_file
from datasets.split_manifest import DatasetError

log = logging.getLogger(__name__)

UNLABELLED_KEY_PREFIX = "unlabelled/"
UNLABELLED_SOURCE = "unlabelled"


@dataclass(frozen=True)
class UnlabelledFile:
    key: str  # unlabelled/<folder name>/<relative path>
    path: Path  # where it is on this machine


def unlabelled_roots(dirs: Iterable[str | Path]) -> dict[str, Path]:
    """Folder name -> folder; DatasetError for a missing folder or two folders of one name."""
    roots: dict[str, Path] = {}
    for folder in dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(
                f"Unlabelled audio folder '{folder}' does not exist; fix "
                "dataset.unlabelled_dirs (or --unlabelled_dir)"
            )
        name = folder.resolve().name
        if name in roots and roots[name].resolve() != folder.resolve():
            raise DatasetError(
                f"Two unlabelled folders are named '{name}' ({roots[name]} and {folder}); "
                "their files would get the same keys. Rename one, or list their parent."
            )
        roots[name] = folder
    return roots


def unlabelled_key(root_name: str, relative: str) -> str:
    return f"{UNLABELLED_KEY_PREFIX}{root_name}/{relative}"


def unlabelled_key_of(file: Path, roots: Mapping[str, Path]) -> str | None:
    """The unlabelled-record key of ``file`` when it lies in one of the unlabelled folders
    (``roots`` from :func:`unlabelled_roots`), else None. A labelled file that is also in an
    unlabelled folder (ESC-50's clips) finds its teacher record this way; the inverse,
    an unlabelled file in the species folders, is
    ``distillation.training_setup.labelled_record_keys``."""
    resolved = file.resolve()
    for name, root in roots.items():
        root = Path(root).resolve()
        if resolved.is_relative_to(root):
            return unlabelled_key(name, resolved.relative_to(root).as_posix())
    return None


def scan_unlabelled(dirs: Iterable[str | Path], skipped: list[SkippedFile] | None = None
                    ) -> list[UnlabelledFile]:
    """Every audio file under the folders, sorted by key (deterministic)."""
    files: list[UnlabelledFile] = []
    for name, root in unlabelled_roots(dirs).items():
        found = sorted(p for p in root.rglob("*") if p.is_file() and is_audio_file(p))
        if not found and skipped is not None:
            skipped.append(SkippedFile(str(root), "no audio files in unlabelled folder", "scan"))
        files.extend(
            UnlabelledFile(unlabelled_key(name, p.relative_to(root).as_posix()), p)
            for p in found
        )
    return sorted(files, key=lambda f: f.key)


def _content_digest(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileIdentity:
    """Which files are the same file as a set of reference files: same resolved path, or same
    size and content. Content is hashed only for files whose size matches a reference file, so
    a large unlabelled pool costs one ``stat`` per file."""

    def __init__(self, references: Iterable[str | Path]) -> None:
        self._paths: set[Path] = set()
        self._by_size: dict[int, list[Path]] = defaultdict(list)
        self._digests: dict[Path, str] = {}
        for path in references:
            path = Path(path)
            if not path.is_file():
                continue
            self._paths.add(path.resolve())
            self._by_size[path.stat().st_size].append(path)

    def _digest(self, path: Path) -> str:
        if path not in self._digests:
            self._digests[path] = _content_digest(path)
        return self._digests[path]

    def matches(self, path: str | Path) -> bool:
        path = Path(path)
        if path.resolve() in self._paths:
            return True
        same_size = self._by_size.get(path.stat().st_size)
        if not same_size:
            return False
        digest = self._digest(path)
        return any(self._digest(other) == digest for other in same_size)


def drop_duplicates(
    files: Sequence[UnlabelledFile],
    held_out: Iterable[str | Path],
    labelled: Iterable[str | Path] = (),
) -> tuple[list[UnlabelledFile], dict[str, int]]:
    """(kept files, counts of dropped ones): files that are a validation/test file
    (``held_out``) or a labelled training file (``labelled``) leave the unlabelled pool."""
    held = FileIdentity(held_out)
    train = FileIdentity(labelled)
    kept: list[UnlabelledFile] = []
    counts = {"held_out": 0, "labelled": 0}
    for item in files:
        if held.matches(item.path):
            counts["held_out"] += 1
        elif train.matches(item.path):
            counts["labelled"] += 1
        else:
            kept.append(item)
    if counts["held_out"] or counts["labelled"]:
        log.info(
            "Unlabelled pool: dropped %d files that are validation/test files of this run and "
            "%d that are its labelled training files", counts["held_out"], counts["labelled"],
        )
    return kept, counts


@dataclass(frozen=True)
class PreparedUnlabelled:
    key: str  # soft-label key, unlabelled/<folder name>/<path>
    path: str  # where it is on this machine
    cache_key: str  # its decoded audio at the student's rate
    duration_s: float


def prepare_unlabelled(
    dirs: Sequence[str | Path],
    manifest,
    roots: dict[str, Path],
    cache,
    skipped: list[SkippedFile],
) -> list[PreparedUnlabelled]:
    """Scan, drop files of the manifest (see :func:`drop_duplicates`), decode into ``cache``.

    ``manifest``: the run's split manifest (path, split, source); ``roots``: source -> folder.
    Unusable files are skipped and recorded, never fatal.
    """
    from tqdm import tqdm

    from datasets.audio_utils import AudioLoadError

    if not dirs:
        return []
    files = scan_unlabelled(dirs, skipped)
    located = [roots[source] / path for path, source in
               zip(manifest["path"], manifest["source"], strict=True)]
    held_out = [p for p, split in zip(located, manifest["split"], strict=True) if split != "train"]
    train = [p for p, split in zip(located, manifest["split"], strict=True) if split == "train"]
    kept, _ = drop_duplicates(files, held_out, train)
    prepared = []
    for item in tqdm(kept, desc="Preparing unlabelled audio", unit="file", leave=False):
        try:
            cache_key = cache.ensure(item.path)
        except (AudioLoadError, OSError) as error:
            log.warning("Skipping unlabelled %s: %s", item.path, error)
            skipped.append(SkippedFile(str(item.path), str(error), "unlabelled"))
            continue
        duration = len(cache.get(cache_key)) / cache.sample_rate
        prepared.append(PreparedUnlabelled(item.key, str(item.path), cache_key, duration))
    log.info("Unlabelled audio: %d files (%.1f min) from %s", len(prepared),
             sum(p.duration_s for p in prepared) / 60, list(dirs))
    return prepared
