"""Makes ``fuse_testing`` and ``prune_testing`` (helpers of these tests only) importable:
the tests directory has no packages (pytest runs with --import-mode=importlib). The
generic pass-testing helpers are `edgec.testing.passes`."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
