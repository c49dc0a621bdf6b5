"""fp8demo web app: `python app.py` serves the Generate and Compare tabs (or `--kiosk`) on a warm SD3.5 engine.

The same app as `python -m fp8demo serve` with the same flags; this file stays because Hugging Face Spaces runs it.
"""

import sys

from fp8demo.serve import main, parse_args  # noqa: F401  (parse_args: the flags, for tests and tools)

if __name__ == "__main__":
    sys.exit(main())
