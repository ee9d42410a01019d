"""BirdNET label lines and the species names people write: ``Genus species``, ``Genus_species``
(folder names) or ``Genus species_Common Name`` (BirdNET's own label lines)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from common.errors import UserError


class UnknownSpeciesError(UserError, ValueError):
    """A species name BirdNET does not know; the message lists the closest BirdNET names."""


def scientific_name(label: str) -> str:
    """``Genus species_Common Name`` -> ``Genus species``."""
    return label.split("_", 1)[0].strip()


def common_name(label: str) -> str:
    """``Genus species_Common Name`` -> ``Common Name`` (empty when there is none)."""
    parts = label.split("_", 1)
    return parts[1].strip() if len(parts) == 2 else ""


def folder_name(label: str) -> str:
    """The dataset folder of a species: ``Genus species_Common Name`` -> ``Genus_species``."""
    return "_".join(scientific_name(label).split())


def _key(text: str) -> str:
    """Case- and whitespace-insensitive comparison key."""
    return " ".join(text.split()).lower()


def read_species_list(path: str | Path) -> list[str]:
    """Species names of a list file: one a line, ``#`` starts a comment, blank lines ignored."""
    names = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


class SpeciesNames:
    """Resolves user-written species names to BirdNET label lines."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self._index_of_label = {_key(label): i for i, label in enumerate(self.labels)}
        self._index_of_scientific = {
            _key(scientific_name(label)): i for i, label in enumerate(self.labels)
        }

    def index(self, name: str) -> int:
        """Position of ``name`` in BirdNET's output; raises UnknownSpeciesError."""
        text = " ".join(name.split())
        if "_" in text:
            head, tail = (part.strip() for part in text.split("_", 1))
            full = self._index_of_label.get(_key(f"{head}_{tail}"))
            if full is not None:
                return full
        # Folder names use "_" where the scientific name has a space.
        found = self._index_of_scientific.get(_key(text.replace("_", " ")))
        if found is not None:
            return found
        if "_" in text:
            # A label line whose common name is spelled differently: the scientific name decides.
            found = self._index_of_scientific.get(_key(text.split("_", 1)[0]))
            if found is not None:
                return found
        raise UnknownSpeciesError(self._unknown_message(name))

    def label(self, name: str) -> str:
        """The BirdNET label line (``Genus species_Common Name``) of ``name``."""
        return self.labels[self.index(name)]

    def close_matches(self, name: str, n: int = 5) -> list[str]:
        """BirdNET labels whose scientific or common name is closest to ``name``."""
        query = _key(name.replace("_", " "))
        by_text: dict[str, str] = {}
        for label in self.labels:
            by_text.setdefault(_key(scientific_name(label)), label)
            if common_name(label):
                by_text.setdefault(_key(common_name(label)), label)
        # Also compare the part before "_" alone, so "Bubo bubbo_Eagle Owl" finds "Bubo bubo".
        queries = [query] + ([_key(name.split("_", 1)[0])] if "_" in name else [])
        matches: list[str] = []
        for q in queries:
            for text in difflib.get_close_matches(q, list(by_text), n=n, cutoff=0.6):
                if by_text[text] not in matches:
                    matches.append(by_text[text])
        return matches[:n]

    def _unknown_message(self, name: str) -> str:
        close = self.close_matches(name)
        hint = (
            "closest BirdNET names: " + "; ".join(close)
            if close
            else "no similar BirdNET name found"
        )
        return (
            f"Unknown species '{name}': BirdNET's label list has no such species ({hint}). Write "
            "'Genus species', 'Genus_species' or a BirdNET label line 'Genus species_Common Name'."
        )
