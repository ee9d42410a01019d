"""Recordings -> training windows: every detected call is an example, quiet stretches are no_birds.

Preparation decodes each file once (through the cache), finds its call windows and quiet
segments, and remembers them; the ``WindowDataset`` then only slices cached arrays, so data
loading stays a small share of a training step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from common.classes import NO_BIRDS
from common.safe_paths import StorageError
from common.skipped_files import SkippedFile
from datasets.audio_cache import DecodedAudioCache
from datasets.audio_utils import AudioLoadError, pad_or_crop
from datasets.augmentation import mix_at_snr, random_snr_db
from datasets.manifest_files import source_file
from datasets.windows import WindowSettings, training_window_starts

log = logging.getLogger(__name__)

# Bump when the window analysis changes, so cached results from older code are not reused.
ANALYSIS_VERSION = 2


@dataclass
class PreparedRecording:
    path: str
    label: str
    split: str
    source: str
    key: str
    duration_s: float
    call_starts: list[float] = field(default_factory=list)
    quiet_starts: list[float] = field(default_factory=list)
    used_fallback: bool = False


@dataclass(frozen=True)
class WindowExample:
    key: str
    start_s: float
    label: int
    path: str
    kind: str  # "call" | "quiet" | "clip"


def _prepare_with_cache(
    row: dict, abs_path: str, cache: DecodedAudioCache, settings: WindowSettings
) -> tuple[dict | None, str | None]:
    """Decode (cached) and analyse (cached) one file; (result, None) or (None, reason)."""
    try:
        key = cache.ensure(abs_path)
    except AudioLoadError as error:
        return None, str(error)
    except StorageError:
        raise  # the cache cannot be written: not this file's fault, and no file would work
    except OSError as error:
        return None, f"cannot read file ({error})"
    bird = row["source"] == "bird" and row["label"] != NO_BIRDS
    name = f"windows-v{ANALYSIS_VERSION}-{settings.digest()}-{'bird' if bird else 'bg'}"
    audio = cache.get(key)
    result = cache.read_json(key, name)
    if result is None:
        result = asdict(training_window_starts(np.asarray(audio), cache.sample_rate,
                                               settings, bird))
        cache.write_json(key, name, result)
    prepared = PreparedRecording(
        path=row["path"],
        label=row["label"],
        split=row["split"],
        source=row["source"],
        key=key,
        duration_s=len(audio) / cache.sample_rate,
        **result,
    )
    return asdict(prepared), None


def _prepare_in_worker(args: tuple) -> tuple[dict | None, str | None]:
    """Worker-process entry: plain arguments in, a fresh cache handle per call."""
    row, abs_path, cache_dir, sample_rate, settings = args
    return _prepare_with_cache(row, abs_path, DecodedAudioCache(cache_dir, sample_rate), settings)


def prepare_recordings(
    manifest: pd.DataFrame,
    roots: dict[str, Path],
    cache: DecodedAudioCache,
    settings: WindowSettings,
    skipped: list[SkippedFile],
    num_workers: int = 0,
) -> list[PreparedRecording]:
    """Decode and analyse every manifest row; unusable files are skipped and recorded."""
    rows = manifest.to_dict(orient="records")
    cache_dir = cache.cache_dir.parent if cache.cache_dir is not None else None
    jobs = [
        (row, str(source_file(roots, row["source"], row["path"])), cache_dir,
         cache.sample_rate, settings)
        for row in rows
    ]
    parallel = num_workers > 1 and cache_dir is not None and len(jobs) > 4
    results: list[tuple[dict | None, str | None]] = []
    progress = dict(total=len(jobs), desc="Preparing audio", unit="file", leave=False)
    if parallel:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            results = list(tqdm(pool.map(_prepare_in_worker, jobs, chunksize=4), **progress))
    else:
        # In-process, so an in-memory cache is filled for the DataLoader to use.
        results = [
            _prepare_with_cache(row, path, cache, settings)
            for row, path, *_ in tqdm(jobs, **progress)
        ]
    prepared = []
    for (_, abs_path, *_), (result, error) in zip(jobs, results, strict=True):
        if error is not None:
            log.warning("Skipping %s: %s", abs_path, error)
            skipped.append(SkippedFile(abs_path, error, "prepare"))
        else:
            prepared.append(PreparedRecording(**result))
    return prepared


def build_examples(
    recordings: Sequence[PreparedRecording], class_names: Sequence[str], split: str
) -> list[WindowExample]:
    """Labelled windows of one split: call windows of bird files, whole clips of files that
    are no_birds by label (pre-generated samples). Quiet segments and ESC-50 clips are
    chosen separately (``datasets.no_birds``) so the no_birds count can be controlled."""
    index = {name: i for i, name in enumerate(class_names)}
    examples: list[WindowExample] = []
    for rec in recordings:
        if rec.split != split or rec.label not in index:
            continue
        if rec.source not in ("bird", "no_birds"):
            continue
        kind = "call" if rec.label != NO_BIRDS else "clip"
        examples.extend(
            WindowExample(rec.key, s, index[rec.label], rec.path, kind) for s in rec.call_starts
        )
    return examples


WaveformAugment = Callable[[torch.Tensor], torch.Tensor]


def resample_around(audio: np.ndarray, start: int, length: int, speed: float) -> np.ndarray:
    """``length`` samples that play ``speed`` times as much audio as
    ``audio[start:start+length]``, centred on the same instant (zeros past either end).

    Playing a recording faster raises every frequency by the same factor: a bird that sings
    a little higher or faster than the training recordings. Linear interpolation aliases only
    above sample_rate / (2 * speed), far above the front-end's band for the small factors used.
    """
    span = length * speed
    centre = start + length / 2
    positions = centre - span / 2 + np.arange(length) * speed
    # Only the samples the window needs (recordings can be hours long).
    low = max(0, int(math.floor(positions[0])))
    high = min(len(audio), int(math.ceil(positions[-1])) + 1)
    if high <= low:
        return np.zeros(length, dtype=np.float32)
    piece = np.asarray(audio[low:high], dtype=np.float32)
    return np.interp(positions, np.arange(low, high), piece, left=0.0, right=0.0).astype(
        np.float32)


class WindowDataset(Dataset):
    """Fixed-length windows sliced from cached audio; returns dicts so losses can add fields."""

    def __init__(
        self,
        examples: Sequence[WindowExample],
        cache: DecodedAudioCache,
        clip_duration: float,
        max_shift_s: float = 0.0,
        augment: WaveformAugment | None = None,
        background: Sequence[WindowExample] = (),
        background_prob: float = 0.0,
        background_snr_db: tuple[float, float] = (0.0, 20.0),
        speed_perturb: float = 0.0,
    ):
        """``speed_perturb``: each window is resampled by a factor drawn log-uniformly in
        [1/(1+x), 1+x] (pitch and tempo change together); 0 = off."""
        self.examples = list(examples)
        # No-birds windows mixed under examples at a random SNR: birds are rarely heard
        # over silence, and no_birds must not be "anything that isn't clean".
        self.background = list(background)
        self.background_prob = background_prob if self.background else 0.0
        self.background_snr_db = background_snr_db
        self.cache = cache
        self.sample_rate = cache.sample_rate
        self.clip_samples = int(round(clip_duration * cache.sample_rate))
        self.max_shift_s = max_shift_s
        self.augment = augment
        self.speed_perturb = float(speed_perturb)

    def __len__(self) -> int:
        return len(self.examples)

    def labels(self) -> list[int]:
        return [e.label for e in self.examples]

    def _window(self, example: WindowExample, shift: bool, speed: float = 1.0) -> torch.Tensor:
        """The example's window; with ``speed`` != 1, ``speed`` times as much audio around
        the same centre, resampled to the window's length."""
        audio = self.cache.get(example.key)
        start = int(round(example.start_s * self.sample_rate))
        if shift and self.max_shift_s > 0:
            # torch's RNG, because DataLoader seeds it per worker (numpy's would repeat).
            offset = int((torch.rand(()) * 2 - 1).item() * self.max_shift_s * self.sample_rate)
            start = min(max(0, start + offset), max(0, len(audio) - self.clip_samples))
        if speed == 1.0:
            # A copy: the cache's arrays are shared (and may be read-only memory maps), and
            # augmentations may work in place.
            window = pad_or_crop(audio, self.clip_samples, start)
            return torch.from_numpy(np.array(window, dtype=np.float32))
        return torch.from_numpy(resample_around(audio, start, self.clip_samples, speed))

    def _random_speed(self) -> float:
        if self.speed_perturb <= 0:
            return 1.0
        bound = math.log1p(self.speed_perturb)
        return math.exp((torch.rand(()).item() * 2 - 1) * bound)

    def __getitem__(self, i: int) -> dict:
        example = self.examples[i]
        wave = self._window(example, shift=True, speed=self._random_speed())
        if self.background_prob and torch.rand(()).item() < self.background_prob:
            other = self.background[int(torch.randint(len(self.background), ()).item())]
            snr = random_snr_db(*self.background_snr_db)
            wave = mix_at_snr(wave, self._window(other, shift=True), snr)
        if self.augment is not None:
            wave = self.augment(wave)
        return {"audio": wave, "label": example.label, "index": i}
