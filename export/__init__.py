"""From a trained checkpoint to the files the device runs (training machine, needs torch).

Modules (one job each):
  onnx_export, cli      checkpoint -> ONNX FP32 + INT8 + model.json (export_model.py)
  fast_frontend         export-time STFT that onnxruntime runs fast (same numbers)
  calibration_windows   labelled windows of one split of the checkpoint's manifest
  quantize              static INT8 quantisation (QDQ, per channel, front-end kept in float)
  torch_classifier      a .pt checkpoint behind the edge runtime's Classifier interface
  calibrate             python -m export.calibrate (per-species thresholds)
  parity                python -m export.parity
  latency               python -m export.latency
"""
