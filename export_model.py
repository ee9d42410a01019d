"""Export a checkpoint for edge devices: python export_model.py --checkpoint best.pt --out exported/

Writes ONNX FP32 and INT8 (front-end inside, raw 3 s audio in) and model.json; see
edge/README.md. The work is done by export.cli.
"""

import sys

from export.cli import main

if __name__ == "__main__":
    sys.exit(main())
