#!/usr/bin/env python
"""Launch a rosearch search from a config file: ``python run_search.py --config configs/sst2.yaml``.

Same as ``rosearch search``; accepts ``--set key=value`` overrides, ``--resume`` and
``--ray-address``.
"""

import sys

from rosearch.cli import main

if __name__ == "__main__":
    sys.exit(main(["search", *sys.argv[1:]]))
