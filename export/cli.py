"""Command line of ``export_model.py``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from common.errors import exit_on_user_error
from export.onnx_export import (
    DEFAULT_CALIBRATION_WINDOWS,
    DEFAULT_HOP_S,
    DEFAULT_OPSET,
    DEFAULT_THRESHOLD,
    export_checkpoint,
)

log = logging.getLogger("export_model")


def data_root_arguments(parser: argparse.ArgumentParser) -> None:
    """--bird_dir/--esc50_dir/--no_birds_dir: where the checkpoint's manifest paths live now."""
    group = parser.add_argument_group(
        "data folders", "override the folders recorded in the checkpoint (data moved machines)"
    )
    group.add_argument("--bird_dir", help="species folders (dataset.bird_data_dir)")
    group.add_argument("--esc50_dir", help="ESC-50 folder (dataset.esc50_dir)")
    group.add_argument("--no_birds_dir", help="pregenerated no_birds clips")


def data_roots(args: argparse.Namespace) -> dict[str, str]:
    pairs = {"bird": args.bird_dir, "esc50": args.esc50_dir, "no_birds": args.no_birds_dir}
    return {key: value for key, value in pairs.items() if value}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="export_model.py",
        description="Export a trained checkpoint to ONNX FP32 + INT8 with a model.json sidecar.",
    )
    p.add_argument("--checkpoint", required=True, help="a .pt checkpoint saved by training")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--calibration_windows", type=int, default=DEFAULT_CALIBRATION_WINDOWS,
                   help="training-split windows used to calibrate INT8")
    p.add_argument("--no-int8", dest="int8", action="store_false", help="export FP32 only")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 18)")
    p.add_argument("--hop", type=float, default=DEFAULT_HOP_S,
                   help="default hop (s) stored for predict.py")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="default per-species threshold stored for predict.py")
    p.add_argument("--no-fast-frontend", dest="fast_frontend", action="store_false",
                   help="export the model's own STFT (ONNX STFT op; slower in onnxruntime)")
    data_root_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The exporter's own passes log every step at INFO; only our summary is useful here.
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "root"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.calibration_windows < 1:
        print("error: --calibration_windows must be at least 1", file=sys.stderr)
        return 2
    with exit_on_user_error(log):
        result = export_checkpoint(
            args.checkpoint, args.out, int8=args.int8,
            calibration_windows=args.calibration_windows, data_roots=data_roots(args),
            opset=args.opset, hop_s=args.hop, threshold=args.threshold,
            fast_frontend=args.fast_frontend,
        )
    sizes = result.info.export["sizes_bytes"]
    print(f"exported {args.checkpoint} -> {result.out_dir}")
    for kind, name in result.info.files.items():
        print(f"  {name:<18} {sizes[kind] / 1024:8.1f} KB")
    print(f"  model.json         classes: {', '.join(result.info.class_names)}")
    print(f"  ONNX FP32 vs PyTorch max |logit diff| on test audio: {result.max_abs_diff_fp32:.2e}")
    print("check INT8 parity on test-split windows with: python -m export.parity "
          f"--checkpoint {args.checkpoint} --exported {result.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
