"""The device runtime: run an exported student (ONNX) on recordings of any length.

numpy, soundfile, soxr, onnxruntime and tqdm only; the training-machine side (export,
quantisation, parity, latency, thresholds) is the ``export`` package.

Modules (one job each):
  sidecar           model.json next to the exported files; ONNX metadata
  runtime           one Classifier interface over ONNX files (and .pt through export/)
  streaming         windows of arbitrarily long files with bounded memory
  detections        window probabilities -> thresholded detections
  raven, tables     Raven selection tables; Audacity labels, Kaleidoscope CSV
  predict           the prediction run behind predict.py and the `predict` command
"""
