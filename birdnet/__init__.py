"""BirdNET V2.4, the teacher and the reference: model wrapper, species names, LiteRT adapter.

Used by soft-label extraction (distillation), the benchmark, the scoreboard and the export
tools alike, so none of them has to import another stage to reach BirdNET.
"""
