"""Consistent views: augmented windows labelled by the teacher on the augmented audio itself.

Mixing two windows' labels is not what the teacher would say about their mix (a quiet call
under a loud one may vanish; two species together are not half of each), so every view is
run through BirdNET ("function matching", Beyer et al. 2022: the teacher labels exactly what
the student sees). BirdNET is the slow part, so views are computed once, at extraction time
(``extract_soft_labels.py --views K``), and drawn at training time.

A view of a teacher window (anchor) is::

    gain * (anchor shifted by up to +-shift_s, played at speed `rate`
            + partner_gain * a window of another file   (with partner_prob)
            + background_gain * a bird-free window)      (with background_prob)

with linear gains drawn from dB ranges. ``rate`` is 2^(s/12) for s drawn within
+-pitch_semitones (1 when that is 0): the anchor's pitch moves by s semitones and its tempo
with it, as when the same song is sung higher and faster. BirdNET then says what the shifted
song is, so the student learns a species over the pitches BirdNET still calls it, not a
blanket invariance that would also blur species told apart by pitch. The partner is any
window of any labelled file (bird, unlabelled, no_birds); the background comes from the
no-birds pool: windows in which BirdNET hears no bird at all (every species' confidence
below ``bird_free_below``). Every random choice comes from a generator seeded by (seed,
anchor key), so the views of a file do not depend on the order files are processed in, and
the same seed gives the same views.

The recipe (keys, starts, gains) is stored next to the teacher's outputs in
``<output>/views/<key>.npz``, so the training side rebuilds the very same audio from its own
decoded copy (at the student's sample rate: resampling and mixing are both linear, so mixing
then resampling equals resampling then mixing):

    window, anchor_start, gain          (m,)  anchor window row, its shifted start (s), gain
    [rate]                              (m,)  anchor speed (absent in views made before it: 1)
    partner_key, partner_start, partner_gain            (m,)
    background_key ('' = none), background_start, background_gain     (m,)
    target_logits, nonevent_logits, non_target_max_logit, no_birds_logit, embedding
    [all_logits], key, settings_hash, source_size, source_mtime_ns, source_sha256

A view record is valid when its settings hash (the base records' settings and the view
settings) and its anchor file's stamp match (size and mtime, or size and content; see
common.content_hash.SourceStamp). A view whose partner or background
file is not on the training side of a run (validation or test of its split manifest) is not
used by that run: views never carry held-out audio into training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal
from tqdm import tqdm

from birdnet.teacher import SAMPLE_RATE, WINDOW_S, BirdNetTeacher, prob_to_logit
from common.content_hash import Match, SourceStamp, restamp_npz
from common.errors import UserError
from common.file_io import write_atomic
from datasets.audio_cache import DecodedAudioCache
from datasets.audio_utils import AudioLoadError, pad_or_crop
from distillation.soft_label_records import (
    read_metadata,
    read_record,
    settings_hash,
    signal_arrays,
)
from distillation.window_labeller import WindowLabeller, concat_signals

log = logging.getLogger(__name__)

VIEWS_DIRNAME = "views"
RECIPE_ARRAYS = ("window", "anchor_start", "gain", "rate", "partner_key", "partner_start",
                 "partner_gain", "background_key", "background_start", "background_gain")
# Settings added after views were first stored: at these values they leave out of the settings
# hash, so views made before them stay valid.
_LATER_SETTINGS = {"partner_prob": 1.0, "pitch_semitones": 0.0}
MAX_PITCH_SEMITONES = 12.0
_RESAMPLE_MARGIN_S = 0.1
_MAX_RATE_DENOMINATOR = 256


class ViewError(UserError, ValueError):
    """Views that cannot be computed as asked; the message says what to do."""


@dataclass(frozen=True)
class ViewSettings:
    views: int  # views per teacher window
    seed: int = 0
    shift_s: float = 0.5
    gain_db: tuple[float, float] = (-6.0, 6.0)
    partner_gain_db: tuple[float, float] = (-12.0, 0.0)
    background_prob: float = 0.5
    background_gain_db: tuple[float, float] = (-12.0, 0.0)
    # A window is bird-free when BirdNET's confidence for every species is below this.
    bird_free_below: float = 0.1
    # Chance that a view mixes in a window of another file.
    partner_prob: float = 1.0
    # The anchor's pitch (and tempo) moves by up to +- this many semitones; 0 = never.
    pitch_semitones: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.partner_prob <= 1.0:
            raise ViewError(f"the partner probability must be in [0, 1], got "
                            f"{self.partner_prob}")
        if not 0.0 <= self.pitch_semitones <= MAX_PITCH_SEMITONES:
            raise ViewError(f"the pitch shift must be 0-{MAX_PITCH_SEMITONES:g} semitones, "
                            f"got {self.pitch_semitones}")

    def as_dict(self) -> dict:
        settings = {k: list(v) if isinstance(v, tuple) else v
                    for k, v in dataclasses.asdict(self).items()}
        for name, unchanged in _LATER_SETTINGS.items():
            if settings[name] == unchanged:
                del settings[name]
        return settings


def views_path(output: str | Path, key: str) -> Path:
    return Path(output) / VIEWS_DIRNAME / f"{key}.npz"


def _db(rng: np.random.Generator, bounds: tuple[float, float], n: int) -> np.ndarray:
    return (10.0 ** (rng.uniform(bounds[0], bounds[1], n) / 20.0)).astype(np.float32)


@dataclass
class ViewPool:
    """Windows views may borrow: every window of the pool files, and the bird-free ones."""

    keys: list[str]
    durations: np.ndarray  # (n_files,) seconds
    window_file: np.ndarray  # (n_windows,) file index of every pool window
    window_start: np.ndarray  # (n_windows,) its start (s)
    background: np.ndarray  # indices into the windows of the bird-free ones

    @classmethod
    def from_records(cls, output: Path, keys: list[str], bird_free_below: float) -> ViewPool:
        files, starts, free = [], [], []
        durations = []
        offset = 0
        threshold = float(prob_to_logit(np.asarray(bird_free_below)))
        for index, key in enumerate(sorted(keys)):
            record = read_record(output, key, exclude=("all_logits", "embedding"))
            n = len(record["starts"])
            durations.append(float(record["duration_s"]))
            strongest = record["non_target_max_logit"]
            if record["target_logits"].shape[1]:
                strongest = np.maximum(strongest, record["target_logits"].max(axis=1))
            files.append(np.full(n, index))
            starts.append(record["starts"])
            free.append(offset + np.flatnonzero(strongest < threshold))
            offset += n
        def cat(parts, dtype):
            return (np.concatenate(parts).astype(dtype) if parts
                       else np.zeros(0, dtype))
        return cls(sorted(keys), np.asarray(durations), cat(files, np.int64),
                   cat(starts, np.float64), cat(free, np.int64))


def plan_views(key: str, starts: np.ndarray, duration_s: float, pool: ViewPool,
               settings: ViewSettings) -> dict[str, np.ndarray]:
    """The recipe of ``settings.views`` views of each window at ``starts`` of file ``key``."""
    digest = hashlib.sha1(key.encode()).digest()
    rng = np.random.default_rng([settings.seed, *digest[:8]])
    k = settings.views
    window = np.repeat(np.arange(len(starts)), k)
    m = len(window)
    latest = max(0.0, duration_s - WINDOW_S)
    shift = rng.uniform(-settings.shift_s, settings.shift_s, m)
    anchor_start = np.clip(np.asarray(starts, dtype=np.float64)[window] + shift, 0.0, latest)
    gain = _db(rng, settings.gain_db, m)
    own = pool.keys.index(key) if key in pool.keys else -1
    others = np.flatnonzero(pool.window_file != own)
    partner_key = np.full(m, "", dtype=object)
    partner_start = np.zeros(m)
    if len(others):
        chosen = others[rng.integers(len(others), size=m)]
        partner_key = np.asarray([pool.keys[f] for f in pool.window_file[chosen]], dtype=object)
        partner_start = pool.window_start[chosen]
    partner_gain = _db(rng, settings.partner_gain_db, m) * (partner_key != "")
    use_background = rng.random(m) < settings.background_prob
    candidates = pool.background[pool.window_file[pool.background] != own]
    background_key = np.full(m, "", dtype=object)
    background_start = np.zeros(m)
    if len(candidates):
        chosen = candidates[rng.integers(len(candidates), size=m)]
        background_key = np.where(
            use_background, [pool.keys[f] for f in pool.window_file[chosen]], "")
        background_start = np.where(use_background, pool.window_start[chosen], 0.0)
    background_gain = _db(rng, settings.background_gain_db, m) * (background_key != "")
    # Drawn after everything above, so views made before these settings keep their recipe.
    if settings.partner_prob < 1.0:
        keep = rng.random(m) < settings.partner_prob
        partner_key = np.where(keep, partner_key, "")
        partner_start = np.where(keep, partner_start, 0.0)
        partner_gain = partner_gain * keep
    rate = np.ones(m)
    if settings.pitch_semitones > 0:
        rate = 2.0 ** (rng.uniform(-settings.pitch_semitones, settings.pitch_semitones, m) / 12.0)
    return {
        "window": window.astype(np.int32),
        "anchor_start": anchor_start,
        "gain": gain.astype(np.float32),
        "rate": rate,
        "partner_key": np.asarray(partner_key, dtype=str),
        "partner_start": np.asarray(partner_start, dtype=np.float64),
        "partner_gain": np.asarray(partner_gain, dtype=np.float32),
        "background_key": np.asarray(background_key, dtype=str),
        "background_start": np.asarray(background_start, dtype=np.float64),
        "background_gain": np.asarray(background_gain, dtype=np.float32),
    }


def cut_window(audio: np.ndarray, sample_rate: int, clip_s: float,
               teacher_start: float) -> np.ndarray:
    """The ``clip_s`` window of ``audio`` centred on the teacher window at ``teacher_start``
    (the same audio when the clip is the teacher's 3 s), zero-padded outside the file."""
    samples = int(round(clip_s * sample_rate))
    first = int(round((teacher_start + (WINDOW_S - clip_s) / 2.0) * sample_rate))
    if first < 0:  # a clip longer than the teacher's window, at the start of a file
        return np.concatenate([np.zeros(-first, np.float32),
                               pad_or_crop(np.asarray(audio), samples + first, 0)])
    return pad_or_crop(np.asarray(audio), samples, first)


def speed_window(audio: np.ndarray, sample_rate: int, clip_s: float, teacher_start: float,
                 rate: float) -> np.ndarray:
    """Like :func:`cut_window`, but played ``rate`` times faster: ``clip_s * rate`` seconds
    around the same centre squeezed into ``clip_s`` (every frequency times ``rate``).

    Polyphase resampling by the fraction closest to ``rate`` with a denominator of at most
    256 (within 0.2 %, 0.03 semitones, of the rate drawn, and the same fraction at every
    sample rate, so the student hears the pitch BirdNET was given); its low-pass keeps
    content above the new Nyquist from folding back."""
    if rate == 1.0:
        return cut_window(audio, sample_rate, clip_s, teacher_start)
    ratio = Fraction(float(rate)).limit_denominator(_MAX_RATE_DENOMINATOR)
    # The filter fades in and out at the ends of its input: a margin takes that, and is cut.
    margin = int(round(_RESAMPLE_MARGIN_S * sample_rate))
    samples = int(round(clip_s * sample_rate))
    source = cut_window(audio, sample_rate,
                        (samples + 2 * margin) * float(ratio) / sample_rate, teacher_start)
    longer = signal.resample_poly(source.astype(np.float64), ratio.denominator,
                                  ratio.numerator)
    return pad_or_crop(longer, samples, margin).astype(np.float32)


def mix_view(audio_of: Callable[[str], np.ndarray], sample_rate: int, clip_s: float,
             anchor_key: str, recipe: dict[str, np.ndarray], row: int) -> np.ndarray:
    """The audio of view ``row`` at ``sample_rate``, ``clip_s`` long (centred on the teacher's
    3 s window when the clip is shorter or longer); ``audio_of(key)`` gives a file's audio."""
    rate = float(recipe["rate"][row]) if "rate" in recipe else 1.0
    mix = speed_window(audio_of(anchor_key), sample_rate, clip_s,
                       float(recipe["anchor_start"][row]), rate).astype(np.float32)
    for part in ("partner", "background"):
        key = str(recipe[f"{part}_key"][row])
        if key:
            mix = mix + float(recipe[f"{part}_gain"][row]) * cut_window(
                audio_of(key), sample_rate, clip_s, float(recipe[f"{part}_start"][row]))
    return (float(recipe["gain"][row]) * mix).astype(np.float32)


def read_views(output: str | Path, key: str, exclude: tuple[str, ...] = ("all_logits",)
               ) -> dict[str, np.ndarray] | None:
    """The stored views of ``key`` (recipe and teacher outputs), or None."""
    path = views_path(output, key)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files if name not in exclude}


def _valid(output: Path, key: str, stamp: SourceStamp, digest: str) -> bool:
    path = views_path(output, key)
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["settings_hash"]) != digest or str(data["key"]) != key:
                return False
            match = stamp.compare(data)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return False
    if match is Match.SAME_CONTENT:
        restamp_npz(path, stamp.mtime_ns)
    return match is not Match.CHANGED


def extract_views(
    output: Path,
    base_digest: str,
    settings: ViewSettings,
    done: dict[str, dict],
    paths: dict[str, str],
    labeller_args: tuple,
    teacher: BirdNetTeacher | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
) -> dict:
    """Label ``settings.views`` views of every window of the labelled files ``done`` (whose
    audio is at ``paths``); returns what metadata.json says about them."""
    if settings.views < 1:
        raise ViewError(f"--views must be at least 1, got {settings.views}")
    digest = settings_hash({"base": base_digest, "views": settings.as_dict()})
    previous = (read_metadata(output) or {}).get("views")
    if resume and previous and previous.get("settings_hash") != digest:
        raise ViewError(
            f"'{output}' holds views made with other settings ({previous.get('settings')}); "
            "use another --output_path, or --no-resume to recompute everything"
        )
    keys = sorted(k for k in done if k in paths)
    pool = ViewPool.from_records(output, keys, settings.bird_free_below)
    log.info("Views: %d per window; pool of %d files, %d windows (%d bird-free)",
             settings.views, len(pool.keys), len(pool.window_file), len(pool.background))
    files, target_indices, hop, mask, threads, batch_size, embedding, all_logits = labeller_args
    labeller: WindowLabeller | None = None
    cache = DecodedAudioCache(cache_dir, SAMPLE_RATE)
    audio_keys: dict[str, str] = {}

    def audio_of(key: str) -> np.ndarray:
        if key not in audio_keys:
            audio_keys[key] = cache.ensure(paths[key])
        return cache.get(audio_keys[key])

    computed = windows = 0
    failed: list[dict] = []
    for key in tqdm(keys, unit="file", desc="views", disable=not progress):
        try:
            stamp = SourceStamp.of(paths[key])
        except OSError as error:  # gone since its record was written
            failed.append({"path": key, "reason": str(error)})
            continue
        if resume and _valid(output, key, stamp, digest):
            continue
        record = read_record(output, key, exclude=("all_logits", "embedding"))
        recipe = plan_views(key, record["starts"], float(record["duration_s"]), pool, settings)
        if not len(recipe["window"]):
            continue
        try:
            mixed = np.stack([mix_view(audio_of, SAMPLE_RATE, WINDOW_S, key, recipe, row)
                              for row in range(len(recipe["window"]))])
        except (AudioLoadError, OSError) as error:
            log.warning("No views for %s: %s", key, error)
            failed.append({"path": key, "reason": str(error)})
            continue
        if labeller is None:
            teacher = teacher or BirdNetTeacher(threads, batch_size, files)
            labeller = WindowLabeller(teacher, target_indices, hop, mask, embedding, all_logits)
        parts = [labeller.label_windows(mixed[i : i + batch_size])
                 for i in range(0, len(mixed), batch_size)]
        arrays = {
            **recipe,
            **signal_arrays(concat_signals(parts)),
            "key": np.str_(key),
            "settings_hash": np.str_(digest),
            **stamp.arrays(),
        }
        write_atomic(views_path(output, key), lambda handle, a=arrays: np.savez(handle, **a))
        computed += 1
        windows += len(mixed)
    log.info("Views: %d files computed (%d views), %d failed", computed, windows, len(failed))
    return {
        "settings": settings.as_dict(),
        "settings_hash": digest,
        "views_per_window": settings.views,
        "files": sum(views_path(output, k).is_file() for k in keys),
        "failed_files": failed,
        "see": "distillation/views.py",
    }
