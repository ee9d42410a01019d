"""The latency benchmark runs every engine and reports what the benchmark table needs."""

from __future__ import annotations

import json

from export.latency import ENGINES, format_table, main


def test_latency_reports_every_engine(demo_checkpoint, exported_dir, tmp_path, capsys):
    out = tmp_path / "latency.json"
    code = main(["--checkpoint", str(demo_checkpoint), "--exported", str(exported_dir),
                 "--json", str(out), "--repeats", "5", "--birdnet_repeats", "2", "--rounds", "1"])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["engines"]) == set(ENGINES)
    for name, engine in report["engines"].items():
        assert engine["ms"] > 0 and engine["rtf"] > 0 and engine["size_bytes"] > 0, name
        assert engine["peak_rss_mb"] > 0 and engine["parameters"] > 0, name
    assert report["engines"]["birdnet"]["parameters"] > 10_000_000
    assert report["int8_size_bytes"] == (exported_dir / "model_int8.onnx").stat().st_size
    assert report["speedup_int8_vs_birdnet"] == (
        report["birdnet_ms"] / report["engines"]["onnx_int8"]["ms"])
    printed = capsys.readouterr().out
    assert "BirdNET" in printed and "speed-up" in printed
    assert format_table(report).splitlines()[0] in printed
