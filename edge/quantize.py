"""Static INT8 quantisation of an exported ONNX student (onnxruntime, QDQ, per channel).

Only the learned layers (Conv, MatMul, Gemm) are quantised. The front-end (STFT, filterbank,
log) and the per-example standardisation stay float: a log spectrogram spans ~100 dB that
8 bits cannot hold, and those nodes hold no learned weights anyway. The GRU stays float too
(onnxruntime has no static INT8 GRU); it is small.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")
# Module scopes (recorded by the dynamo exporter in each node's metadata) kept in float.
FLOAT_SCOPES = ("frontend", "normalize", "feature_augment")
SCOPE_KEY = "pkg.torch.onnx.name_scopes"
CALIBRATION_BATCH = 16


def float_nodes(onnx_path: str | Path) -> list[str]:
    """Names of the nodes that belong to the front-end scopes (never quantised)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    names = []
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == SCOPE_KEY), "")
        if any(f"'{scope}'" in scopes for scope in FLOAT_SCOPES):
            names.append(node.name)
    if not names:
        log.warning("no front-end scope metadata in %s; quantising every %s node",
                    onnx_path, "/".join(QUANTIZED_OP_TYPES))
    return names


class _DropPreprocessHint(logging.Filter):
    """onnxruntime suggests its shape-inference pre-pass on every call; that pass would
    rewrite the graph and lose the scope metadata the front-end exclusion relies on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def _reader(input_name: str, windows: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    class WindowReader(CalibrationDataReader):
        """Feeds calibration windows in small batches (the batch axis is dynamic)."""

        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(
                {input_name: np.ascontiguousarray(windows[i : i + CALIBRATION_BATCH])}
                for i in range(0, len(windows), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return WindowReader()


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, windows: np.ndarray,
                  per_channel: bool = True) -> Path:
    """Write the INT8 model calibrated on ``windows`` (n, clip_samples) float32."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if len(windows) == 0:
        raise ValueError("INT8 calibration needs at least one window")
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    excluded = float_nodes(fp32_path)
    log.info("INT8: calibrating on %d windows, %d front-end nodes kept float",
             len(windows), len(excluded))
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    # The calibrator writes an augmented copy of the model; keep it out of the output folder.
    hint_filter = _DropPreprocessHint()
    logging.getLogger().addFilter(hint_filter)
    try:
        with tempfile.TemporaryDirectory(prefix="calibration-") as scratch:
            tmp_out = Path(scratch) / int8_path.name
            quantize_static(
                str(fp32_path),
                str(tmp_out),
                _reader(input_name, windows.astype(np.float32)),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                nodes_to_exclude=excluded,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                calibration_providers=["CPUExecutionProvider"],
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
            onnx.save(onnx.load(str(tmp_out)), str(int8_path))
    finally:
        logging.getLogger().removeFilter(hint_filter)
    return int8_path
