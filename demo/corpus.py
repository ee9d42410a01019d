"""Deterministic generator of a SYNTHETIC bird-sound corpus in the project's real on-disk layout.

``make demo`` and the tests use it so that the whole pipeline can run without downloading
xeno-canto or ESC-50. Nothing here is real audio: every recording is pink-ish background noise
with a few planted, synthetic "calls" whose times are written to ``annotations.csv``.

Layout under ``out_dir``::

    bird_sound_dataset/<Genus_species>/XC9nnnnn.{wav,flac,mp3}
    esc50/audio/<fold>-<src_file>-<take>-<target>.wav     (5 s, 44100 Hz, mono, PCM_16)
    esc50/meta/esc50.csv
    annotations.csv       path (relative to bird_sound_dataset), species, start_s, end_s
    DEMO_CORPUS.txt       a note saying the audio is synthetic
    .demo_corpus.json     the generation arguments; written last, so it marks a complete corpus

SNR of a planted call: RMS of the call waveform over the RMS of the full-band background
(pink-ish noise plus any wind rumble) across exactly the call's span, drawn per call from
``SNR_RANGE_DB``. Annotation times are the extent of the synthesised call waveform.

Recordings deliberately vary the way wild data does: sample rates rotate through
``sample_rate``, 44100 and 48000 Hz; formats rotate through WAV, FLAC and MP3; every 4th file
is stereo; and exactly one ``.mp3`` file actually holds WAV data.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import shutil
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.fft import irfft, next_fast_len, rfft, rfftfreq
from scipy.signal import butter, fftconvolve, sosfilt

log = logging.getLogger(__name__)

DEMO_SPECIES: tuple[str, ...] = (
    "Bubo_bubo",
    "Apus_apus",
    "Certhia_familiaris",
    "Poecile_montanus",
)

BIRD_DIRNAME = "bird_sound_dataset"
ESC50_DIRNAME = "esc50"
ANNOTATIONS_FILENAME = "annotations.csv"
NOTE_FILENAME = "DEMO_CORPUS.txt"
MARKER_FILENAME = ".demo_corpus.json"
# Present only while a generation runs: lets a re-run recognise (and redo) its own
# interrupted output without demanding ``overwrite``.
IN_PROGRESS_FILENAME = ".demo_corpus.incomplete"
# Bump when the synthesis changes, so an old corpus is not mistaken for a current one.
GENERATOR_VERSION = 1

ANNOTATION_COLUMNS: tuple[str, ...] = ("path", "species", "start_s", "end_s")
ESC50_COLUMNS: tuple[str, ...] = (
    "filename",
    "fold",
    "target",
    "category",
    "esc10",
    "src_file",
    "take",
)

RECORDING_SECONDS = (8.0, 16.0)
CALLS_PER_RECORDING = (2, 5)
SNR_RANGE_DB = (3.0, 20.0)
# Gaps between calls, and margins at the file edges, so calls never touch or get cut.
MIN_GAP_S = 1.0
EDGE_MARGIN_S = 0.3
# One stretch per file is kept longer than the 3.5 s that quiet-segment finders need.
QUIET_STRETCH_S = 4.0
# Long call series are shortened to this so 2+ calls and a quiet stretch fit in a file.
MAX_CALL_S = 2.6
EXTRA_SAMPLE_RATES: tuple[int, ...] = (44100, 48000)
# Highest planted frequency is 9 kHz; below this rate it would alias.
MIN_SAMPLE_RATE = 20000
MAX_SAMPLE_RATE = 192000
FORMAT_ROTATION: tuple[str, ...] = ("wav", "flac", "mp3")
STEREO_EVERY = 4

ESC50_SR = 44100
ESC50_CLIP_S = 5.0
ESC50_TAKES: tuple[str, ...] = ("A", "B")
ESC50_FOLDS = 5
# (category, official ESC-50 target, in ESC-10)
ESC50_CATEGORIES: tuple[tuple[str, int, bool], ...] = (
    ("rain", 10, True),
    ("wind", 16, False),
    ("engine", 44, False),
    ("clock_tick", 38, True),
    ("chirping_birds", 14, False),
)
# Separates the ESC-50 random streams from the recordings' streams.
ESC50_STREAM_TAG = 0xE5C50


@dataclass(frozen=True)
class DemoCorpus:
    root: Path
    bird_dir: Path
    esc50_dir: Path
    annotations_csv: Path
    species: tuple[str, ...]


@dataclass(frozen=True)
class _Args:
    """Everything that determines the output; stored in the marker file."""

    seed: int
    recordings_per_species: int
    sample_rate: int
    esc50_clips_per_category: int
    version: int = GENERATOR_VERSION


@dataclass(frozen=True)
class _Call:
    species: str
    start_s: float
    end_s: float


# --------------------------------------------------------------------------------------------
# Signal building blocks


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _n(seconds: float, sr: int) -> int:
    return max(1, int(round(seconds * sr)))


def _sweep(freq_hz: np.ndarray, sr: int, phase: float = 0.0) -> np.ndarray:
    """Sine following a per-sample frequency contour (integrating keeps the phase continuous)."""
    return np.sin(phase + 2.0 * np.pi * np.cumsum(freq_hz) / sr)


def _fade(n: int, attack: int, release: int) -> np.ndarray:
    """Raised-cosine attack and release, so notes start and stop without clicks."""
    env = np.ones(n)
    attack, release = min(attack, n // 2), min(release, n // 2)
    if attack:
        env[:attack] = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, attack))
    if release:
        env[n - release :] = 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, release))
    return env


def _join(parts: Sequence[np.ndarray], gaps: Sequence[int]) -> np.ndarray:
    """Concatenate notes with ``gaps[i]`` silent samples after note i (the last gap is unused)."""
    pieces: list[np.ndarray] = []
    for i, part in enumerate(parts):
        pieces.append(part)
        if i < len(parts) - 1:
            pieces.append(np.zeros(gaps[i]))
    return np.concatenate(pieces)


def _cap_series(
    notes: list[np.ndarray], gaps: list[int], sr: int, min_notes: int = 2
) -> list[np.ndarray]:
    """Drop trailing notes until the series fits MAX_CALL_S (keeping at least ``min_notes``)."""
    while len(notes) > min_notes and (sum(map(len, notes)) + sum(gaps[: len(notes) - 1])) > (
        MAX_CALL_S * sr
    ):
        notes = notes[:-1]
    return notes


def _smooth_noise(rng: np.random.Generator, n: int, sr: int, cutoff_hz: float) -> np.ndarray:
    """Unit-RMS noise low-passed at ``cutoff_hz``: slow random modulations and rumbles."""
    sos = butter(2, cutoff_hz, btype="lowpass", fs=sr, output="sos")
    x = sosfilt(sos, rng.standard_normal(n))
    return x / (_rms(x) + 1e-12)


def _pink_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS noise with a ~1/f power spectrum (slope randomised a little: "pink-ish")."""
    alpha = rng.uniform(0.8, 1.2)
    # FFT sizes with large prime factors are ~20x slower; shape a fast length, then cut.
    n_fft = next_fast_len(n, real=True)
    spectrum = rfft(rng.standard_normal(n_fft))
    freqs = rfftfreq(n_fft, 1.0 / sr)
    # Below 20 Hz the 1/f rise is clamped: it would only add inaudible DC drift.
    spectrum *= np.maximum(freqs, 20.0) ** (-alpha / 2.0)
    x = irfft(spectrum, n=n_fft)[:n]
    return x / (_rms(x) + 1e-12)


def _bandpass(x: np.ndarray, sr: int, low: float, high: float, order: int = 2) -> np.ndarray:
    sos = butter(order, [low, min(high, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
    return sosfilt(sos, x)


# --------------------------------------------------------------------------------------------
# Species calls: each returns one vocalisation event, peak ~1, starting and ending at its
# audible extent (the annotation spans exactly this buffer).


def _bubo_hoot(rng: np.random.Generator, sr: int, f0: float) -> np.ndarray:
    n = _n(rng.uniform(0.4, 0.9), sr)
    t = np.linspace(0.0, 1.0, n)
    # Owl hoots rise slightly and then fall in pitch.
    contour = f0 * (1.0 + 0.04 * np.sin(np.pi * t) - 0.03 * t)
    n_harmonics = int(rng.integers(2, 5))
    hoot = np.zeros(n)
    for k in range(1, n_harmonics + 2):
        if k * f0 * 1.05 < 0.45 * sr:
            hoot += (0.55 ** (k - 1)) * _sweep(k * contour, sr, rng.uniform(0, 2 * np.pi))
    attack, release = _n(rng.uniform(0.06, 0.12), sr), _n(rng.uniform(0.1, 0.25), sr)
    return hoot * _fade(n, attack, release)


def _call_bubo_bubo(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Harmonic hoot on a 300-500 Hz fundamental, often a pair with a lower second hoot."""
    f0 = rng.uniform(300.0, 500.0)
    hoots = [_bubo_hoot(rng, sr, f0)]
    if rng.random() < 0.6:
        hoots.append(_bubo_hoot(rng, sr, f0 * rng.uniform(0.9, 0.97)))
    call = _join(hoots, [_n(rng.uniform(0.25, 0.6), sr)])
    return call / np.max(np.abs(call))


def _call_apus_apus(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Trill: 15-30 short notes/s on a 3-6 kHz carrier that bends down across the trill."""
    rate = rng.uniform(15.0, 30.0)
    total = rng.uniform(0.6, 1.5)
    carrier = rng.uniform(3000.0, 6000.0)
    bend = rng.uniform(0.05, 0.15)
    period = 1.0 / rate
    n_notes = max(2, int(total * rate))
    notes, gaps = [], []
    for i in range(n_notes):
        note_s = min(rng.uniform(0.015, 0.030), 0.85 * period)
        m = _n(note_s, sr)
        f = carrier * (1.0 - bend * i / n_notes) * rng.uniform(0.98, 1.02)
        # Each note also drops a little in pitch: a harsh, screaming quality.
        contour = f * np.linspace(1.03, 0.97, m)
        note = _sweep(contour, sr)
        if 2.06 * f < 0.45 * sr:
            note = note + 0.3 * _sweep(2.0 * contour, sr)
        notes.append(note * np.hanning(m) * rng.uniform(0.7, 1.0))
        gaps.append(max(1, _n(period * rng.uniform(0.9, 1.1), sr) - m))
    call = _join(notes, gaps)
    return call / np.max(np.abs(call))


def _call_certhia_familiaris(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Series of 2-5 thin chirps sweeping between 5-9 kHz and 3-5 kHz (mostly downward)."""
    downward = rng.random() < 0.75
    notes, gaps = [], []
    for _ in range(int(rng.integers(2, 6))):
        high, low = rng.uniform(5000.0, 9000.0), rng.uniform(3000.0, 5000.0)
        m = _n(rng.uniform(0.2, 0.6), sr)
        start, end = (high, low) if downward else (low, high)
        # A geometric sweep sounds like an even glide to the ear.
        contour = start * (end / start) ** np.linspace(0.0, 1.0, m)
        notes.append(_sweep(contour, sr) * _fade(m, _n(0.015, sr), _n(0.03, sr)))
        gaps.append(_n(rng.uniform(0.08, 0.25), sr))
    return _join(_cap_series(notes, gaps, sr), gaps)


def _call_poecile_montanus(rng: np.random.Generator, sr: int) -> np.ndarray:
    """2-4 pure 2-4 kHz whistled notes with gentle vibrato, separated by short gaps."""
    base = rng.uniform(2000.0, 4000.0)
    notes, gaps = [], []
    for _ in range(int(rng.integers(2, 5))):
        m = _n(rng.uniform(0.3, 0.8), sr)
        t = np.arange(m) / sr
        f = base * rng.uniform(0.95, 1.05)
        vibrato = 1.0 + rng.uniform(0.01, 0.03) * np.sin(2 * np.pi * rng.uniform(4.0, 8.0) * t)
        notes.append(_sweep(f * vibrato, sr) * _fade(m, _n(0.04, sr), _n(0.06, sr)))
        gaps.append(_n(rng.uniform(0.1, 0.3), sr))
    return _join(_cap_series(notes, gaps, sr), gaps)


CALL_SYNTHS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "Bubo_bubo": _call_bubo_bubo,
    "Apus_apus": _call_apus_apus,
    "Certhia_familiaris": _call_certhia_familiaris,
    "Poecile_montanus": _call_poecile_montanus,
}


# --------------------------------------------------------------------------------------------
# Recordings


@dataclass(frozen=True)
class _RecordingSpec:
    species: str
    index: int
    name: str
    fmt: str  # "wav" | "flac" | "mp3" | "fake_mp3" (WAV data under a .mp3 name)
    sample_rate: int
    channels: int


def _species_stream(seed: int, species: str, index: int) -> np.random.Generator:
    """Per-file generator from (seed, species, index): output is independent of loop order.

    crc32 rather than hash(): str hashes are salted per Python process.
    """
    key = zlib.crc32(species.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([seed, key, index]))


def _recording_name(global_index: int) -> str:
    # An affine map with a multiplier coprime to 10**5 gives unique, id-looking numbers.
    return f"XC9{(48271 * global_index + 10007) % 100_000:05d}"


def _recording_specs(args: _Args) -> list[_RecordingSpec]:
    """Name, format, rate and channel count of every recording (a pure function of args)."""
    rates = tuple(dict.fromkeys((args.sample_rate, *EXTRA_SAMPLE_RATES)))
    specs: list[_RecordingSpec] = []
    fake_done = False
    for s, species in enumerate(DEMO_SPECIES):
        for i in range(args.recordings_per_species):
            g = s * args.recordings_per_species + i
            fmt = FORMAT_ROTATION[g % len(FORMAT_ROTATION)]
            if fmt == "mp3" and not fake_done:
                fmt, fake_done = "fake_mp3", True
            specs.append(
                _RecordingSpec(
                    species=species,
                    index=i,
                    name=_recording_name(g),
                    fmt=fmt,
                    # Rotating on g // 3 keeps rates from locking to formats (both cycle by 3).
                    sample_rate=rates[(g // len(FORMAT_ROTATION)) % len(rates)],
                    channels=2 if g % STEREO_EVERY == STEREO_EVERY - 1 else 1,
                )
            )
    return specs


def _background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Pink-ish noise, sometimes with a gusty wind rumble below 200 Hz."""
    bg = _pink_noise(rng, n, sr)
    if rng.random() < 0.35:
        gusts = 0.6 + 0.4 * np.tanh(_smooth_noise(rng, n, sr, 0.5))
        bg = bg + rng.uniform(1.0, 3.0) * _smooth_noise(rng, n, sr, 150.0) * gusts
    return 0.05 * bg


def _layout_calls(rng: np.random.Generator, lengths: list[int], n_total: int, sr: int) -> list[int]:
    """Start samples for calls of ``lengths`` with edge margins, >= MIN_GAP_S between calls
    and one >= QUIET_STRETCH_S quiet slot; the remaining slack is spread at random."""
    n_slots = len(lengths) + 1  # before the first call, between calls, after the last
    minimum = [_n(EDGE_MARGIN_S, sr)] + [_n(MIN_GAP_S, sr)] * (len(lengths) - 1)
    minimum.append(_n(EDGE_MARGIN_S, sr))
    quiet_slot = int(rng.integers(0, n_slots))
    minimum[quiet_slot] = _n(QUIET_STRETCH_S, sr)
    slack = n_total - sum(lengths) - sum(minimum)
    assert slack >= 0, "the caller sizes the recording with _required_samples"
    shares = np.floor(rng.dirichlet(np.ones(n_slots)) * slack).astype(int)
    starts, cursor = [], 0
    # One slot more than calls: the last (tail) slot needs no start of its own.
    for length, gap, extra in zip(lengths, minimum, shares, strict=False):
        cursor += gap + int(extra)
        starts.append(cursor)
        cursor += length
    return starts


def _required_samples(lengths: list[int], sr: int) -> int:
    gaps = 2 * _n(EDGE_MARGIN_S, sr) + (len(lengths) - 1) * _n(MIN_GAP_S, sr)
    # The quiet slot replaces one of the gaps; budgeting it on top is simpler and safe.
    return sum(lengths) + gaps + _n(QUIET_STRETCH_S, sr)


def _synthesise_recording(spec: _RecordingSpec, seed: int) -> tuple[np.ndarray, list[_Call]]:
    """Audio (frames,) or (frames, 2) and its planted calls, from this file's own stream."""
    rng = _species_stream(seed, spec.species, spec.index)
    sr = spec.sample_rate
    n_total = _n(rng.uniform(*RECORDING_SECONDS), sr)
    lo, hi = CALLS_PER_RECORDING
    calls = [CALL_SYNTHS[spec.species](rng, sr) for _ in range(int(rng.integers(lo, hi + 1)))]
    while len(calls) > lo and _required_samples([len(c) for c in calls], sr) > n_total:
        calls.pop()
    # Two long calls may still not fit a short file: lengthen it rather than drop the quiet part.
    n_total = max(n_total, _required_samples([len(c) for c in calls], sr) + _n(0.5, sr))
    starts = _layout_calls(rng, [len(c) for c in calls], n_total, sr)
    mix = _background(rng, n_total, sr)
    planted: list[_Call] = []
    for call, start in zip(calls, starts, strict=True):
        span = slice(start, start + len(call))
        snr_db = rng.uniform(*SNR_RANGE_DB)
        gain = 10.0 ** (snr_db / 20.0) * _rms(mix[span]) / (_rms(call) + 1e-12)
        mix[span] += gain * call
        planted.append(_Call(spec.species, start / sr, (start + len(call)) / sr))
    if spec.channels == 2:
        # Slightly different gains per channel, like a real stereo pair; downmixing undoes it.
        mix = np.stack([mix * rng.uniform(0.85, 1.0), mix * rng.uniform(0.85, 1.0)], axis=1)
    peak = rng.uniform(0.5, 0.9)
    return mix * (peak / np.max(np.abs(mix))), planted


# --------------------------------------------------------------------------------------------
# ESC-50-style noise clips


def _esc_rain(src: np.random.Generator, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Dense random droplet impulses (short decaying noise bursts) over a hissing bed."""
    density = src.uniform(200.0, 600.0)
    impulses = np.zeros(n)
    hits = rng.integers(0, n, size=rng.poisson(density * n / sr))
    np.add.at(impulses, hits, rng.exponential(1.0, size=hits.size))
    k = _n(0.005, sr)
    kernel = rng.standard_normal(k) * np.exp(-np.arange(k) / (0.2 * k))
    crackle = _bandpass(fftconvolve(impulses, kernel)[:n], sr, 800.0, 12000.0)
    bed = _bandpass(rng.standard_normal(n), sr, 1000.0, 10000.0)
    return crackle / (_rms(crackle) + 1e-12) + src.uniform(0.3, 0.7) * bed / _rms(bed)


def _esc_wind(src: np.random.Generator, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Low-passed noise whose level swells and drops slowly."""
    cutoff = src.uniform(200.0, 600.0)
    sos = butter(4, cutoff, btype="lowpass", fs=sr, output="sos")
    body = sosfilt(sos, rng.standard_normal(n))
    swell = 0.55 + 0.45 * np.tanh(_smooth_noise(rng, n, sr, src.uniform(0.2, 0.6)))
    return body * swell


def _esc_engine(src: np.random.Generator, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Harmonic series on a 30-60 Hz fundamental with speed jitter, plus broadband noise."""
    f0 = src.uniform(30.0, 60.0)
    contour = f0 * (1.0 + 0.01 * _smooth_noise(rng, n, sr, 2.0))
    hum = sum(
        (1.0 / k) * rng.uniform(0.5, 1.0) * _sweep(k * contour, sr, rng.uniform(0, 2 * np.pi))
        for k in range(1, 13)
    )
    noise = _bandpass(rng.standard_normal(n), sr, 50.0, 3000.0)
    return hum / _rms(hum) + 0.3 * noise / _rms(noise)


def _esc_clock_tick(
    src: np.random.Generator, rng: np.random.Generator, n: int, sr: int
) -> np.ndarray:
    """Regular 1-2 per second ticks (short damped resonances), alternating tick and tock."""
    rate = src.uniform(1.0, 2.0)
    tone = src.uniform(2000.0, 4000.0)
    k = _n(0.006, sr)
    t = np.arange(k) / sr
    out = 0.01 * rng.standard_normal(n)
    for i, at in enumerate(np.arange(rng.uniform(0.0, 1.0 / rate), n / sr, 1.0 / rate)):
        pos = int((at + rng.normal(0.0, 0.002)) * sr)
        if not 0 <= pos < n - k:
            continue
        pitch, level = (tone, 1.0) if i % 2 == 0 else (0.8 * tone, 0.6)
        out[pos : pos + k] += level * np.sin(2 * np.pi * pitch * t) * np.exp(-t / 0.0012)
    return out


def _esc_chirping_birds(
    src: np.random.Generator, rng: np.random.Generator, n: int, sr: int
) -> np.ndarray:
    """Random short chirps (20-120 ms sweeps, 2-8 kHz) at a few per second over faint noise."""
    out = 0.02 * _bandpass(rng.standard_normal(n), sr, 500.0, 8000.0)
    for _ in range(rng.poisson(src.uniform(4.0, 12.0) * n / sr)):
        m = _n(rng.uniform(0.02, 0.12), sr)
        pos = int(rng.integers(0, n - m))
        f_start, f_end = rng.uniform(2000.0, 8000.0, size=2)
        contour = np.linspace(f_start, f_end, m)
        out[pos : pos + m] += rng.uniform(0.2, 1.0) * _sweep(contour, sr) * np.hanning(m)
    return out


ESC50_SYNTHS: dict[str, Callable[..., np.ndarray]] = {
    "rain": _esc_rain,
    "wind": _esc_wind,
    "engine": _esc_engine,
    "clock_tick": _esc_clock_tick,
    "chirping_birds": _esc_chirping_birds,
}


@dataclass(frozen=True)
class _EscClip:
    filename: str
    fold: int
    target: int
    category: str
    esc10: bool
    src_file: int
    take: str
    source_index: int
    take_index: int


def _esc50_clips(clips_per_category: int) -> list[_EscClip]:
    """Every clip's metadata: 2 takes per source, folds assigned round-robin by source."""
    clips: list[_EscClip] = []
    sources_per_category = -(-clips_per_category // len(ESC50_TAKES))
    for c, (category, target, esc10) in enumerate(ESC50_CATEGORIES):
        for k in range(sources_per_category):
            src_file = 100_000 + 1000 * target + k
            fold = (c * sources_per_category + k) % ESC50_FOLDS + 1
            for t, take in enumerate(ESC50_TAKES):
                if k * len(ESC50_TAKES) + t >= clips_per_category:
                    break
                clips.append(
                    _EscClip(
                        f"{fold}-{src_file}-{take}-{target}.wav",
                        fold,
                        target,
                        category,
                        esc10,
                        src_file,
                        take,
                        k,
                        t,
                    )
                )
    return clips


def _synthesise_esc_clip(clip: _EscClip, seed: int) -> np.ndarray:
    # Source parameters come from a per-source stream, so takes A and B sound alike.
    base = [seed, ESC50_STREAM_TAG, clip.target, clip.source_index]
    src = np.random.default_rng(np.random.SeedSequence(base))
    rng = np.random.default_rng(np.random.SeedSequence([*base, clip.take_index]))
    n = int(round(ESC50_CLIP_S * ESC50_SR))
    audio = ESC50_SYNTHS[clip.category](src, rng, n, ESC50_SR)
    return audio * (rng.uniform(0.4, 0.9) / np.max(np.abs(audio)))


# --------------------------------------------------------------------------------------------
# Writing


def _temp_path(path: Path) -> Path:
    # Not mkstemp: its 0600 mode would survive the rename; a plain new file follows the umask.
    return path.with_name(f".{path.name}.{os.getpid()}.part")


def _write_atomic(path: Path, audio: np.ndarray, sr: int, fmt: str, subtype: str) -> None:
    """Write to a temp name in the same folder, then rename: readers never see half a file.

    ``format`` is always passed because the temp name's extension says nothing.
    """
    tmp = _temp_path(path)
    try:
        sf.write(tmp, audio, sr, format=fmt, subtype=subtype)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = _temp_path(path)
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_recording(folder: Path, spec: _RecordingSpec, audio: np.ndarray) -> Path:
    """Write in the spec's format; returns the path actually written (MP3 may fall back)."""
    if spec.fmt == "mp3":
        path = folder / f"{spec.name}.mp3"
        try:
            _write_atomic(path, audio, spec.sample_rate, "MP3", "MPEG_LAYER_III")
            return path
        except (RuntimeError, ValueError) as error:  # LibsndfileError is a RuntimeError
            log.warning("MP3 writing failed (%s); writing %s as WAV instead", error, spec.name)
    if spec.fmt == "fake_mp3":
        # Mimics the wild: a WAV file that was given a .mp3 name; decoders must go by content.
        path = folder / f"{spec.name}.mp3"
        _write_atomic(path, audio, spec.sample_rate, "WAV", "PCM_16")
        return path
    if spec.fmt == "flac":
        path = folder / f"{spec.name}.flac"
        _write_atomic(path, audio, spec.sample_rate, "FLAC", "PCM_16")
        return path
    path = folder / f"{spec.name}.wav"
    _write_atomic(path, audio, spec.sample_rate, "WAV", "PCM_16")
    return path


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _generate_birds(bird_dir: Path, args: _Args) -> tuple[list[str], list[_Call], list[str]]:
    """Write every recording; returns (relative paths, calls, path of each call)."""
    paths: list[str] = []
    calls: list[_Call] = []
    call_paths: list[str] = []
    for spec in _recording_specs(args):
        folder = bird_dir / spec.species
        folder.mkdir(parents=True, exist_ok=True)
        audio, planted = _synthesise_recording(spec, args.seed)
        rel = _write_recording(folder, spec, audio).relative_to(bird_dir).as_posix()
        paths.append(rel)
        calls += planted
        call_paths += [rel] * len(planted)
    return paths, calls, call_paths


def _generate_esc50(esc50_dir: Path, args: _Args) -> list[str]:
    audio_dir, meta_dir = esc50_dir / "audio", esc50_dir / "meta"
    audio_dir.mkdir(parents=True, exist_ok=True)
    meta_dir.mkdir(parents=True, exist_ok=True)
    clips = _esc50_clips(args.esc50_clips_per_category)
    for clip in clips:
        audio = _synthesise_esc_clip(clip, args.seed)
        _write_atomic(audio_dir / clip.filename, audio, ESC50_SR, "WAV", "PCM_16")
    rows = [
        (c.filename, c.fold, c.target, c.category, c.esc10, c.src_file, c.take)
        for c in sorted(clips, key=lambda c: c.filename)
    ]
    _write_text_atomic(meta_dir / "esc50.csv", _csv_text(ESC50_COLUMNS, rows))
    return [f"audio/{c.filename}" for c in clips]


def _write_annotations(path: Path, calls: list[_Call], call_paths: list[str]) -> None:
    ordered = sorted(zip(call_paths, calls, strict=True), key=lambda pc: (pc[0], pc[1].start_s))
    rows = [(p, c.species, f"{c.start_s:.6f}", f"{c.end_s:.6f}") for p, c in ordered]
    _write_text_atomic(path, _csv_text(ANNOTATION_COLUMNS, rows))


def _note_text(args: _Args) -> str:
    return (
        "SYNTHETIC DEMO CORPUS - not real bird recordings.\n"
        f"Made by demo/corpus.py (generator version {args.version}) with seed "
        f"{args.seed}, {args.recordings_per_species} recordings per species, base sample rate "
        f"{args.sample_rate} Hz, {args.esc50_clips_per_category} ESC-50-style clips per "
        "category.\nEvery planted call is listed in annotations.csv. The ESC-50 folder only "
        "copies the official layout and category names; its audio is synthetic too.\n"
    )


# --------------------------------------------------------------------------------------------
# Idempotency


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _marker_is_complete(root: Path, marker: dict) -> bool:
    bird_dir, esc50_dir = root / BIRD_DIRNAME, root / ESC50_DIRNAME
    files = [bird_dir / p for p in marker.get("bird_files", [])]
    files += [esc50_dir / p for p in marker.get("esc50_files", [])]
    files += [root / ANNOTATIONS_FILENAME, esc50_dir / "meta" / "esc50.csv"]
    return all(f.is_file() for f in files)


def _owned_entries(root: Path) -> list[Path]:
    names = (BIRD_DIRNAME, ESC50_DIRNAME, ANNOTATIONS_FILENAME, NOTE_FILENAME, MARKER_FILENAME)
    return [root / name for name in names if (root / name).exists()]


def _clear(root: Path) -> None:
    """Remove only what this generator writes; anything else in out_dir is left alone."""
    for entry in _owned_entries(root):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _prepare_out_dir(root: Path, args: _Args, overwrite: bool) -> bool:
    """True when a matching complete corpus is already there; otherwise clears the way.

    Raises FileExistsError when ``root`` holds other data and ``overwrite`` is False.
    """
    marker = _read_marker(root)
    wanted = asdict(args)
    if marker is not None and marker.get("args") == wanted and _marker_is_complete(root, marker):
        return True
    # Our own interrupted or damaged output is safe to redo; anything else needs consent.
    ours = (root / IN_PROGRESS_FILENAME).exists() or (
        marker is not None and marker.get("args") == wanted
    )
    if _owned_entries(root) and not (overwrite or ours):
        made_with = marker.get("args") if marker else "unknown arguments (no marker file)"
        raise FileExistsError(
            f"{root} already holds a demo corpus or dataset made with {made_with}, not "
            f"{wanted}; pass overwrite=True (--overwrite) to replace it, or use another folder"
        )
    if marker is not None and marker.get("args") == wanted:
        log.info("demo corpus in %s is incomplete; regenerating it", root)
    _clear(root)
    return False


# --------------------------------------------------------------------------------------------
# Public API


def _validate(args: _Args) -> None:
    if args.seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {args.seed!r}")
    if args.recordings_per_species < 1:
        raise ValueError("recordings_per_species must be at least 1")
    if args.esc50_clips_per_category < 1:
        raise ValueError("esc50_clips_per_category must be at least 1")
    if not MIN_SAMPLE_RATE <= args.sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"sample_rate must be within {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz "
            f"(calls reach 9 kHz), got {args.sample_rate}"
        )


def _corpus(root: Path) -> DemoCorpus:
    return DemoCorpus(
        root=root,
        bird_dir=root / BIRD_DIRNAME,
        esc50_dir=root / ESC50_DIRNAME,
        annotations_csv=root / ANNOTATIONS_FILENAME,
        species=DEMO_SPECIES,
    )


def generate_demo_corpus(
    out_dir: str | Path,
    *,
    seed: int = 0,
    recordings_per_species: int = 8,
    sample_rate: int = 32000,
    esc50_clips_per_category: int = 6,
    overwrite: bool = False,
) -> DemoCorpus:
    """Write (or reuse) the synthetic corpus under ``out_dir``; see the module docstring.

    The same arguments give byte-identical WAV/FLAC files and identical annotations. A
    complete corpus made with the same arguments is returned untouched; one made with other
    arguments raises FileExistsError unless ``overwrite`` is True.
    """
    # int() turns numpy integers into plain ones, which the JSON marker can store.
    args = _Args(
        int(seed), int(recordings_per_species), int(sample_rate), int(esc50_clips_per_category)
    )
    _validate(args)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(root)
    if _prepare_out_dir(root, args, overwrite):
        log.info("demo corpus already complete in %s (seed %d); not rewriting", root, seed)
        return corpus
    _write_text_atomic(root / IN_PROGRESS_FILENAME, "generation in progress\n")
    bird_files, calls, call_paths = _generate_birds(corpus.bird_dir, args)
    esc50_files = _generate_esc50(corpus.esc50_dir, args)
    _write_annotations(corpus.annotations_csv, calls, call_paths)
    _write_text_atomic(root / NOTE_FILENAME, _note_text(args))
    (root / IN_PROGRESS_FILENAME).unlink()
    marker = {"args": asdict(args), "bird_files": bird_files, "esc50_files": esc50_files}
    # Written last: its presence means every file above is complete.
    _write_text_atomic(root / MARKER_FILENAME, json.dumps(marker, indent=1) + "\n")
    log.info("wrote demo corpus to %s (seed %d)", root, seed)
    return corpus


def _summary(bird_files: Sequence[str], n_esc50: int) -> str:
    per_species = Counter(p.split("/", 1)[0] for p in bird_files)
    counts = ", ".join(f"{s}={per_species.get(s, 0)}" for s in DEMO_SPECIES)
    return f"bird files per species: {counts}; ESC-50 clips: {n_esc50}"


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo.corpus",
        description="Generate the synthetic demo bird-sound corpus (deterministic).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=_int_at_least(0), default=0)
    parser.add_argument("--recordings-per-species", type=_int_at_least(1), default=8)
    parser.add_argument("--sample-rate", type=_int_at_least(MIN_SAMPLE_RATE), default=32000)
    parser.add_argument("--esc50-clips-per-category", type=_int_at_least(1), default=6)
    parser.add_argument("--overwrite", action="store_true", help="replace a different corpus")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        corpus = generate_demo_corpus(
            args.out,
            seed=args.seed,
            recordings_per_species=args.recordings_per_species,
            sample_rate=args.sample_rate,
            esc50_clips_per_category=args.esc50_clips_per_category,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError) as error:
        log.error("%s", error)
        return 1
    marker = _read_marker(corpus.root) or {}
    log.info(
        "demo corpus ready in %s: %s",
        corpus.root,
        _summary(marker.get("bird_files", []), len(marker.get("esc50_files", []))),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------------------------
# A long "field recording" for the demo's inference step


def write_long_recording(
    path: str | Path,
    *,
    seed: int = 1,
    minutes: float = 2.0,
    sample_rate: int = 32000,
    call_interval_s: tuple[float, float] = (6.0, 14.0),
) -> Path:
    """A long recording with calls of every demo species at known times, plus its annotations.

    Writes ``path`` (WAV) and ``<path stem>.annotations.csv`` (species, start_s, end_s).
    Calls follow each other in random species order, ``call_interval_s`` apart (start to
    start), over the same kind of background as the corpus at 6-20 dB SNR. Idempotent: an
    existing file is left as it is.
    """
    path = Path(path)
    annotations = path.with_name(f"{path.stem}.annotations.csv")
    if path.exists() and annotations.exists():
        return path
    mix, rows = _field_mix(seed, minutes, sample_rate, call_interval_s)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, mix, sample_rate, "WAV", "PCM_16")
    _write_text_atomic(annotations, _csv_text(("species", "start_s", "end_s"), rows))
    return path


def write_unlabelled_field(
    folder: str | Path,
    *,
    files: int = 4,
    minutes: float = 1.0,
    seed: int = 100,
    sample_rate: int = 32000,
) -> list[Path]:
    """Unlabelled "field recordings" for the demo's teacher pool (``dataset.unlabelled_dirs``).

    The same kind of audio as :func:`write_long_recording` (the demo species calling over
    background, some stretches quiet) with no annotations written: BirdNET is their only
    label. Seeds start at ``seed`` so that they never repeat the long test recording (seed 1).
    Idempotent: existing files are left as they are.
    """
    folder = Path(folder)
    written = []
    for index in range(files):
        path = folder / f"field_{index + 1:02d}.wav"
        if not path.exists():
            mix, _ = _field_mix(seed + index, minutes, sample_rate, (6.0, 14.0))
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, mix, sample_rate, "WAV", "PCM_16")
        written.append(path)
    return written


def _field_mix(
    seed: int, minutes: float, sr: int, call_interval_s: tuple[float, float]
) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Background with demo calls planted ``call_interval_s`` apart; returns (audio, calls)."""
    rng = np.random.default_rng([seed, 7919])
    n_total = _n(minutes * 60.0, sr)
    mix = _background(rng, n_total, sr)
    rows = []
    t = rng.uniform(2.0, 5.0)
    while True:
        species = DEMO_SPECIES[int(rng.integers(len(DEMO_SPECIES)))]
        call = CALL_SYNTHS[species](rng, sr)
        start = _n(t, sr)
        if start + len(call) >= n_total - _n(1.0, sr):
            break
        span = slice(start, start + len(call))
        gain = 10.0 ** (rng.uniform(6.0, 20.0) / 20.0) * _rms(mix[span]) / (_rms(call) + 1e-12)
        mix[span] += gain * call
        rows.append((species, round(start / sr, 6), round((start + len(call)) / sr, 6)))
        t += rng.uniform(*call_interval_s)
    return mix * (0.9 / np.max(np.abs(mix))), rows
