"""``python -m gpuq.worker.devmodels ROOT`` builds every tiny dev model under ROOT."""

from __future__ import annotations

import sys

from gpuq.worker.devmodels.catalog import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
