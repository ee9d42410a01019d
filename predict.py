"""Detect species in recordings: python predict.py --model exported/ --input FILE_OR_DIR --out DIR

See edge/README.md; the work is done by edge.predict.
"""

import sys

from edge.predict import main

if __name__ == "__main__":
    sys.exit(main())
