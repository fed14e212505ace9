"""``python -m benchmarks.loadgen``: see the package's docstring."""

import signal
import sys

from benchmarks.loadgen import main

if __name__ == "__main__":
    # Unwind on SIGTERM too, so that the server this started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
