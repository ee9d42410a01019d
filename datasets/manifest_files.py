"""The one mapping from split-manifest rows to audio files.

A manifest row names a file relative to the folder of its ``source``: the species folders
(``bird``), ESC-50 (``esc50``) or pre-generated no_birds clips (``no_birds``). Training, the
benchmark, the scoreboard and the export tools all resolve rows here, so a path read from a
manifest always stays inside its source's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from common.safe_paths import display_path, path_inside
from datasets.split_manifest import DatasetError

# Manifest "source" -> the dataset config key holding its folder.
SOURCE_CONFIG_KEYS: dict[str, str] = {
    "bird": "bird_data_dir",
    "esc50": "esc50_dir",
    "no_birds": "pregenerated_no_birds_dir",
}
# The command-line flag of the export tools that points to each source's folder.
SOURCE_FLAGS: dict[str, str] = {
    "bird": "--bird_dir", "esc50": "--esc50_dir", "no_birds": "--no_birds_dir",
}


def source_roots(dataset_cfg: Mapping, overrides: Mapping[str, str | Path | None] | None = None
                 ) -> dict[str, Path]:
    """Folder of each manifest source: an override first, else the dataset config (a source
    with neither is left out)."""
    roots: dict[str, Path] = {}
    for source, key in SOURCE_CONFIG_KEYS.items():
        value = (overrides or {}).get(source) or dataset_cfg.get(key)
        if value:
            roots[source] = Path(str(value))
    return roots


def source_file(roots: Mapping[str, Path], source: str, path: str,
                where: str = "split manifest") -> Path:
    """The file a manifest row names, always inside its source's folder."""
    if source not in roots:
        raise DatasetError(
            f"{where} row '{display_path(path)}' has source '{source}', which has no folder "
            f"here (known: {sorted(roots)}); set its folder or regenerate the manifest"
        )
    return path_inside(roots[source], path, f"{where} ({source})")


def missing_roots_hint(roots: Mapping[str, Path], sources: set[str]) -> str:
    """' Missing folders: ...' naming each needed source folder that is not on this machine."""
    missing = [f"{s} ({roots.get(s, 'not configured')}; {SOURCE_FLAGS.get(s, s)})"
               for s in sorted(sources) if s not in roots or not Path(roots[s]).is_dir()]
    return f" Missing folders: {', '.join(missing)}." if missing else ""
