"""ESC-50 no_birds source: category choice, src_file grouping, and the download path.

Downloads are served by a local HTTP server on 127.0.0.1 started by the test itself.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from common.classes import NO_BIRDS
from common.skipped_files import SkippedFile
from datasets.esc50_dataset import (
    BIRD_CATEGORIES,
    ESC50_COLUMNS,
    ESC50_GROUP_REGEX,
    ESC50_SOURCE,
    ESC50_URL,
    ensure_esc50,
    esc50_group,
    esc50_split_manifest,
    load_esc50_metadata,
    no_bird_clips,
)
from datasets.split_manifest import SPLITS, DatasetError, SourceFile, build_split_manifest

# (filename, category, src_file) of a tiny ESC-50-layout folder.
TINY_ROWS = [
    ("1-100032-A-0.wav", "dog", "100032"),
    ("1-100032-B-0.wav", "dog", "100032"),
    ("2-200001-A-10.wav", "rain", "200001"),
    ("3-300002-A-14.wav", "chirping_birds", "300002"),
]


def _wav_bytes(seed: int) -> bytes:
    noise = np.random.default_rng(seed).normal(0, 0.1, 1600).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, noise, 8000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _csv_text(rows: list[tuple[str, str, str]]) -> str:
    lines = [",".join(ESC50_COLUMNS)]
    for name, category, src in rows:
        fold, _, take, target = name[:-4].split("-")
        lines.append(f"{name},{fold},{target},{category},False,{src},{take}")
    return "\n".join(lines) + "\n"


def make_esc50_folder(root: Path, rows: list[tuple[str, str, str]] = TINY_ROWS) -> Path:
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    for i, (name, _, _) in enumerate(rows):
        (root / "audio" / name).write_bytes(_wav_bytes(i))
    (root / "meta" / "esc50.csv").write_text(_csv_text(rows))
    return root


def make_esc50_zip(top: str = "ESC-50-master/", rows=TINY_ROWS[:2], meta: bool = True) -> bytes:
    """An archive shaped like GitHub's: everything under one top folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{top}README.md", "ESC-50 test archive\n")
        for i, (name, _, _) in enumerate(rows):
            archive.writestr(f"{top}audio/{name}", _wav_bytes(i))
        if meta:
            archive.writestr(f"{top}meta/esc50.csv", _csv_text(rows))
    return buffer.getvalue()


# --- local HTTP server ----------------------------------------------------------------------


@dataclass
class Route:
    body: bytes
    declared_length: int | None = None  # a larger value than len(body) simulates truncation


@dataclass
class LocalServer:
    base_url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture
def server() -> Iterator[LocalServer]:
    state = LocalServer(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
            state.requests.append(self.path)
            route = state.routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            length = route.declared_length or len(route.body)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/master.zip"


# --- metadata and categories on the real subset ---------------------------------------------


def _categories_of(clips: list[SourceFile], meta: pd.DataFrame) -> set[str]:
    category = dict(zip("audio/" + meta["filename"], meta["category"], strict=True))
    return {category[c.path] for c in clips}


def test_default_is_every_non_bird_category(shared_esc50_dir: Path) -> None:
    meta = load_esc50_metadata(shared_esc50_dir)
    skipped: list[SkippedFile] = []
    clips = no_bird_clips(shared_esc50_dir, skipped=skipped)
    categories = _categories_of(clips, meta)
    assert not categories & set(BIRD_CATEGORIES)
    assert categories == set(meta["category"]) - set(BIRD_CATEGORIES)
    assert len(categories) == 46
    assert skipped == []
    assert all(c.label == NO_BIRDS and c.source == ESC50_SOURCE for c in clips)
    assert all(c.path.startswith("audio/") and (shared_esc50_dir / c.path).is_file()
               for c in clips)
    assert len(clips) == (~meta["category"].isin(BIRD_CATEGORIES)).sum()


def test_category_subset(shared_esc50_dir: Path) -> None:
    meta = load_esc50_metadata(shared_esc50_dir)
    clips = no_bird_clips(shared_esc50_dir, ["rain", "wind"])
    assert _categories_of(clips, meta) == {"rain", "wind"}
    assert len(clips) == meta["category"].isin(["rain", "wind"]).sum()


def test_unknown_category_lists_valid_ones(shared_esc50_dir: Path) -> None:
    with pytest.raises(DatasetError, match="Unknown ESC-50 categories") as info:
        no_bird_clips(shared_esc50_dir, ["rain", "jet_ski"])
    assert "jet_ski" in str(info.value) and "airplane" in str(info.value)


@pytest.mark.parametrize("bird", BIRD_CATEGORIES)
def test_bird_category_is_refused(shared_esc50_dir: Path, bird: str) -> None:
    with pytest.raises(DatasetError, match="bird sounds"):
        no_bird_clips(shared_esc50_dir, ["rain", bird])


def test_group_is_src_file(shared_esc50_dir: Path) -> None:
    meta = load_esc50_metadata(shared_esc50_dir)
    assert [esc50_group(f"audio/{n}") for n in meta["filename"]] == list(meta["src_file"])
    assert esc50_group("audio/1-100032-A-0.wav") == "100032"
    assert esc50_group(Path("5-9032-B-49.wav")) == "9032"
    assert esc50_group("audio/not_an_esc50_name.wav") == "not_an_esc50_name"


def test_splits_follow_src_file_and_are_deterministic(shared_esc50_dir: Path) -> None:
    meta = load_esc50_metadata(shared_esc50_dir)
    clips = no_bird_clips(shared_esc50_dir)
    manifest = esc50_split_manifest(clips, (0.7, 0.15, 0.15), seed=3)
    assert list(manifest.columns) == ["path", "label", "group", "split", "source"]
    src = dict(zip("audio/" + meta["filename"], meta["src_file"], strict=True))
    manifest["src_file"] = manifest["path"].map(src)
    assert (manifest["group"] == "esc50:" + manifest["src_file"]).all()
    assert (manifest.groupby("src_file")["split"].nunique() == 1).all()
    assert manifest["src_file"].duplicated().any()  # the subset does hold multi-clip sources
    assert set(manifest["split"]) == set(SPLITS)
    assert (manifest["label"] == NO_BIRDS).all()

    again = esc50_split_manifest(list(reversed(clips)), (0.7, 0.15, 0.15), seed=3)
    pd.testing.assert_frame_equal(manifest.drop(columns="src_file"), again)
    other = esc50_split_manifest(clips, (0.7, 0.15, 0.15), seed=4)
    assert not other["split"].equals(again["split"])


def test_group_regex_matches_group_of(shared_esc50_dir: Path) -> None:
    clips = no_bird_clips(shared_esc50_dir)
    by_regex = build_split_manifest(clips, seed=1, group_regex=ESC50_GROUP_REGEX)
    pd.testing.assert_frame_equal(by_regex, esc50_split_manifest(clips, seed=1))


def test_shared_names_match_project_constants() -> None:
    from datasets.no_birds import ESC50

    assert ESC50_SOURCE == ESC50


# --- metadata checks and missing files on small folders -------------------------------------


def test_demo_corpus_keeps_its_non_bird_categories(demo_corpus) -> None:
    meta = load_esc50_metadata(demo_corpus.esc50_dir)
    clips = no_bird_clips(demo_corpus.esc50_dir)
    assert _categories_of(clips, meta) == {"rain", "wind", "engine", "clock_tick"}


def test_missing_clip_is_reported(tmp_path: Path) -> None:
    root = make_esc50_folder(tmp_path / "esc50")
    (root / "audio" / "1-100032-B-0.wav").unlink()
    skipped: list[SkippedFile] = []
    clips = no_bird_clips(root, skipped=skipped)
    assert [c.path for c in clips] == ["audio/1-100032-A-0.wav", "audio/2-200001-A-10.wav"]
    assert [Path(s.path).name for s in skipped] == ["1-100032-B-0.wav"]
    assert "missing" in skipped[0].reason
    assert no_bird_clips(root) == clips  # no list given: still works, only logged


def test_metadata_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_esc50_metadata(tmp_path / "nowhere")
    root = make_esc50_folder(tmp_path / "esc50")
    (root / "meta" / "esc50.csv").write_text("filename,fold,category\n1-1-A-0.wav,1,dog\n")
    with pytest.raises(DatasetError, match=r"lacks columns \['target', 'esc10'"):
        load_esc50_metadata(root)
    (root / "meta" / "esc50.csv").unlink()
    with pytest.raises(DatasetError, match="meta/esc50.csv' is missing"):
        load_esc50_metadata(root)


def test_empty_category_list_is_refused(tmp_path: Path) -> None:
    root = make_esc50_folder(tmp_path / "esc50")
    with pytest.raises(DatasetError, match="empty"):
        no_bird_clips(root, [])
    assert [c.path for c in no_bird_clips(root, "rain")] == ["audio/2-200001-A-10.wav"]


# --- ensure_esc50 -----------------------------------------------------------------------------


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_existing_folder_needs_no_network(tmp_path: Path) -> None:
    root = make_esc50_folder(tmp_path / "esc50")
    assert ensure_esc50(root, download=False) == root
    assert ensure_esc50(root, download=True, url=_closed_port_url()) == root


def test_missing_folder_without_download_explains(tmp_path: Path) -> None:
    target = tmp_path / "esc-50"
    with pytest.raises(DatasetError) as info:
        ensure_esc50(target, download=False)
    message = str(info.value)
    assert f"{target}/audio/*.wav" in message
    assert f"{target}/meta/esc50.csv" in message
    assert ESC50_URL in message
    assert "dataset.esc50_download=true" in message
    assert not target.exists()


def test_incomplete_folder_is_not_overwritten(tmp_path: Path, server: LocalServer) -> None:
    target = make_esc50_folder(tmp_path / "esc50")
    (target / "meta" / "esc50.csv").unlink()
    server.routes["/master.zip"] = Route(make_esc50_zip())
    with pytest.raises(DatasetError, match="not overwritten"):
        ensure_esc50(target, download=True, url=server.url("/master.zip"))
    assert server.requests == []
    assert (target / "audio" / "1-100032-A-0.wav").is_file()


def test_download_success(tmp_path: Path, server: LocalServer) -> None:
    body = make_esc50_zip()
    server.routes["/master.zip"] = Route(body)
    target = tmp_path / "data" / "esc50"
    url = server.url("/master.zip")
    result = ensure_esc50(target, download=True, url=url,
                          expected_sha256=hashlib.sha256(body).hexdigest().upper())
    assert result == target
    assert sorted(p.name for p in (target / "audio").iterdir()) == [
        "1-100032-A-0.wav", "1-100032-B-0.wav"
    ]
    assert not (target / "ESC-50-master").exists()
    assert len(load_esc50_metadata(target)) == 2
    assert _leftovers(target.parent) == ["esc50"]
    assert server.requests == ["/master.zip"]

    assert ensure_esc50(target, download=True, url=url) == target
    assert server.requests == ["/master.zip"]  # the second call did not download again
    assert len(no_bird_clips(target)) == 2


def test_download_into_empty_placeholder_folder(tmp_path: Path, server: LocalServer) -> None:
    server.routes["/flat.zip"] = Route(make_esc50_zip(top=""))
    target = tmp_path / "esc50"
    target.mkdir()
    ensure_esc50(target, download=True, url=server.url("/flat.zip"))
    assert load_esc50_metadata(target)["filename"].tolist() == [r[0] for r in TINY_ROWS[:2]]
    assert _leftovers(tmp_path) == ["esc50"]


def _corrupt(body: bytes) -> bytes:
    """Flip one byte inside a stored member so only its CRC check (testzip) notices."""
    payload = _wav_bytes(0)
    start = body.index(payload) + len(payload) // 2
    return body[:start] + bytes([body[start] ^ 0xFF]) + body[start + 1:]


FAILURES = {
    "truncated_transfer": (lambda b: Route(b, declared_length=len(b) + 5000), "truncated"),
    "cut_zip": (lambda b: Route(b[: len(b) // 2]), "not a readable zip"),
    "not_a_zip": (lambda b: Route(b"<html>rate limited</html>"), "not a readable zip"),
    "corrupt_member": (lambda b: Route(_corrupt(b)), "corrupt"),
    "no_metadata": (lambda b: Route(make_esc50_zip(meta=False)), "no 'meta/esc50.csv'"),
    "no_audio": (lambda b: Route(make_esc50_zip(rows=[])), "no 'ESC-50-master/audio/"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_bad_archive_leaves_nothing(tmp_path: Path, server: LocalServer, case: str) -> None:
    make_route, reason = FAILURES[case]
    server.routes["/master.zip"] = make_route(make_esc50_zip())
    target = tmp_path / "data" / "esc50"
    with pytest.raises(DatasetError, match="ESC-50 download failed") as info:
        ensure_esc50(target, download=True, url=server.url("/master.zip"))
    assert reason in str(info.value)
    assert f"{target}/meta/esc50.csv" in str(info.value)  # manual instructions included
    assert not target.exists()
    assert _leftovers(target.parent) == []


def test_http_404(tmp_path: Path, server: LocalServer) -> None:
    target = tmp_path / "esc50"
    with pytest.raises(DatasetError, match="HTTP 404"):
        ensure_esc50(target, download=True, url=server.url("/missing.zip"))
    assert server.requests == ["/missing.zip"]
    assert _leftovers(tmp_path) == []


def test_sha256_mismatch(tmp_path: Path, server: LocalServer) -> None:
    server.routes["/master.zip"] = Route(make_esc50_zip())
    target = tmp_path / "esc50"
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        ensure_esc50(target, download=True, url=server.url("/master.zip"),
                     expected_sha256="0" * 64)
    assert _leftovers(tmp_path) == []


def test_offline_gives_a_clear_message(tmp_path: Path) -> None:
    target = tmp_path / "esc50"
    with pytest.raises(DatasetError, match="offline") as info:
        ensure_esc50(target, download=True, url=_closed_port_url(), timeout=5)
    assert ESC50_URL in str(info.value)
    assert _leftovers(tmp_path) == []


def test_config_checksum_reaches_the_download(tmp_path: Path, monkeypatch) -> None:
    """dataset.esc50_sha256 is what the download is checked against."""
    import datasets.dataset_factory as factory
    from tests.training.helpers import compose_config, fast_overrides

    seen = {}

    def fake_ensure(esc50_dir, download, url=None, expected_sha256=None, **kwargs):
        seen.update(download=download, expected_sha256=expected_sha256)
        raise DatasetError("offline in this test")

    monkeypatch.setattr(factory, "ensure_esc50", fake_ensure)
    cfg = compose_config([*fast_overrides(tmp_path / "birds", tmp_path),
                          f"dataset.esc50_dir={tmp_path / 'esc50'}", "dataset.esc50_download=true",
                          "dataset.esc50_sha256=" + "ab" * 32])
    assert factory.esc50_manifest(cfg, []) is None
    assert seen == {"download": True, "expected_sha256": "ab" * 32}
