"""The end-to-end demo on the synthetic corpus (``make demo`` / ``python -m demo``)."""
