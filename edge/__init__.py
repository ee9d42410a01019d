"""Edge deployment: export a trained student to ONNX (FP32 and INT8), check parity, run it
on long recordings and benchmark it against BirdNET.

Modules (one job each):
  sidecar           model.json next to the exported files; ONNX metadata
  fast_frontend     export-time STFT that onnxruntime runs fast (same numbers)
  export            checkpoint -> ONNX FP32 + INT8 + sidecar
  manifest_windows  labelled 3 s windows of one split of the checkpoint's manifest
  quantize          static INT8 quantisation (QDQ, per channel, front-end kept in float)
  runtime           one Classifier interface over ONNX files and PyTorch checkpoints
  streaming         windows of arbitrarily long files with bounded memory
  detections        window probabilities -> thresholded detections
  raven             Raven selection tables in BirdNET-Analyzer's layout
  predict           the prediction run behind predict.py
  parity            python -m edge.parity
  latency           python -m edge.latency
"""
