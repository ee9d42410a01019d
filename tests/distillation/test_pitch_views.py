"""Views that move a window's pitch: BirdNET labels the shifted audio, the student rebuilds it
at its own sample rate, and views made before the setting existed keep their recipe and hash.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from birdnet.teacher import SAMPLE_RATE, BirdNetTeacher
from datasets.audio_utils import load_audio
from distillation.soft_label_records import read_record
from distillation.soft_labels import extract_soft_labels
from distillation.views import (
    ViewError,
    ViewPool,
    ViewSettings,
    cut_window,
    mix_view,
    plan_views,
    read_views,
    speed_window,
)
from tests.conftest import REPO_ROOT, tone_burst, write_wav


def _peak_hz(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1.0 / sample_rate)[np.argmax(spectrum)])


def _pool() -> ViewPool:
    return ViewPool(keys=["a.wav", "b.wav", "c.wav"], durations=np.array([9.0, 9.0, 9.0]),
                    window_file=np.repeat(np.arange(3), 3),
                    window_start=np.tile([0.0, 3.0, 6.0], 3), background=np.array([6, 7]))


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_a_faster_window_is_higher_by_its_rate_and_keeps_its_length(rate):
    sample_rate = 22050
    t = np.arange(9 * sample_rate) / sample_rate
    tone = np.sin(2 * np.pi * 3000.0 * t).astype(np.float32)
    shifted = speed_window(tone, sample_rate, 3.0, 3.0, rate)
    assert shifted.shape == (3 * sample_rate,) and shifted.dtype == np.float32
    assert _peak_hz(shifted, sample_rate) == pytest.approx(3000.0 * rate, abs=5.0)
    np.testing.assert_array_equal(speed_window(tone, sample_rate, 3.0, 3.0, 1.0),
                                  cut_window(tone, sample_rate, 3.0, 3.0))


def test_speeding_up_does_not_fold_content_above_the_new_nyquist_back():
    sample_rate = 22050
    t = np.arange(9 * sample_rate) / sample_rate
    high = np.sin(2 * np.pi * 10000.0 * t).astype(np.float32)  # 12.5 kHz once sped up
    shifted = speed_window(high, sample_rate, 3.0, 3.0, 1.25)
    assert np.abs(shifted).max() < 0.05


def test_pitch_and_partner_settings_leave_the_rest_of_the_recipe_as_before():
    starts = np.array([0.0, 3.0, 6.0])
    before = plan_views("a.wav", starts, 9.0, _pool(), ViewSettings(views=4, seed=1))
    shifted = plan_views("a.wav", starts, 9.0, _pool(),
                         ViewSettings(views=4, seed=1, pitch_semitones=4.0, partner_prob=0.0))
    again = plan_views("a.wav", starts, 9.0, _pool(),
                       ViewSettings(views=4, seed=1, pitch_semitones=4.0, partner_prob=0.0))
    for name in shifted:
        np.testing.assert_array_equal(shifted[name], again[name])
    np.testing.assert_array_equal(before["rate"], np.ones(12))
    low, high = 2.0 ** (-4.0 / 12.0), 2.0 ** (4.0 / 12.0)
    assert np.all((shifted["rate"] >= low) & (shifted["rate"] <= high))
    assert len(np.unique(shifted["rate"])) == 12
    assert set(shifted["partner_key"]) == {""} and not shifted["partner_gain"].any()
    for name in ("window", "anchor_start", "gain", "background_key", "background_start",
                 "background_gain"):
        np.testing.assert_array_equal(before[name], shifted[name])
    # At their defaults the new settings are not part of the hash: older views stay valid.
    assert ViewSettings(views=2).as_dict() == {
        "views": 2, "seed": 0, "shift_s": 0.5, "gain_db": [-6.0, 6.0],
        "partner_gain_db": [-12.0, 0.0], "background_prob": 0.5,
        "background_gain_db": [-12.0, 0.0], "bird_free_below": 0.1}
    assert ViewSettings(views=2, pitch_semitones=3.0).as_dict()["pitch_semitones"] == 3.0


@pytest.mark.parametrize("settings", [{"pitch_semitones": -1.0}, {"pitch_semitones": 13.0},
                                      {"partner_prob": 1.5}])
def test_impossible_view_settings_are_refused(settings):
    with pytest.raises(ViewError):
        ViewSettings(views=1, **settings)


def test_cli_refuses_a_pitch_shift_out_of_range_before_labelling(tmp_path):
    species = tmp_path / "species.txt"
    species.write_text("Bubo bubo\n")
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "extract_soft_labels.py"), "--species_list",
         str(species), "--bird_dir", str(tmp_path), "--output_path", str(tmp_path / "out"),
         "--views", "1", "--view_pitch_semitones", "20"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "pitch shift must be 0-12 semitones, got 20" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "files").exists()


def test_a_pitch_view_is_labelled_by_birdnet_on_the_shifted_audio(tmp_path):
    birds = tmp_path / "birds"
    sample_rate = 32000
    for name, freq in [("Bubo_bubo", 500.0), ("Apus_apus", 6000.0)]:
        rng = np.random.default_rng(len(name))
        audio = rng.normal(0, 0.01, 6 * sample_rate).astype(np.float32)
        for start in (0.5, 3.5):
            burst = tone_burst(sample_rate, freq, 0.8, 0.4)
            first = int(start * sample_rate)
            audio[first : first + len(burst)] += burst
        write_wav(birds / name / "rec0.wav", audio, sample_rate)
    output = tmp_path / "soft_labels"
    teacher = BirdNetTeacher(num_threads=1)
    extract_soft_labels(["Bubo bubo", "Apus apus"], output, birds, hop=3.0, teacher=teacher,
                        progress=False, store_all_logits=True, views=2, seed=5,
                        view_pitch_semitones=6.0, view_partner_prob=0.0, cache_dir=None)
    key = "Apus_apus/rec0.wav"
    views = read_views(output, key, exclude=())
    assert views is not None and len(views["window"]) == 4
    assert set(views["partner_key"]) == {""}
    assert np.all(np.abs(np.log2(views["rate"]) * 12.0) <= 6.0)
    assert np.abs(np.log2(views["rate"]) * 12.0).max() > 1.0

    def audio_of(name: str) -> np.ndarray:
        return load_audio(birds / name, SAMPLE_RATE)[0]

    mixes = np.stack([mix_view(audio_of, SAMPLE_RATE, 3.0, key, views, row)
                      for row in range(4)])
    on_mixes = teacher.logits(mixes)
    np.testing.assert_allclose(views["all_logits"].astype(np.float32), on_mixes, atol=2e-2)
    # BirdNET heard something else than the unshifted window: the targets moved with it.
    record = read_record(output, key)
    unshifted = record["all_logits"].astype(np.float32)[views["window"]]
    strongest = int(np.argmax(np.abs(np.log2(views["rate"]))))
    assert np.abs(unshifted[strongest] - on_mixes[strongest]).max() > 0.5
    # The student rebuilds the same shifted window at its own rate.
    student = mix_view(lambda name: load_audio(birds / name, 22050)[0], 22050, 3.0, key,
                       views, strongest)
    teacher_copy = mix_view(audio_of, SAMPLE_RATE, 3.0, key, views, strongest)
    assert student.shape == (3 * 22050,)
    assert _peak_hz(student, 22050) == pytest.approx(_peak_hz(teacher_copy, SAMPLE_RATE),
                                                     rel=0.01)
