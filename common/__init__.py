"""What every stage shares: file writing, the path rule, user errors, devices and seeds.

Nothing here imports torch, pandas or scipy at module level, so the edge runtime on a device
(numpy + onnxruntime) can use it too.
"""
