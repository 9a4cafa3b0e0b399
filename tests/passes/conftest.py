"""Makes ``pass_testing`` (the pass tests' shared helpers) importable: the tests
directory has no packages (pytest runs with --import-mode=importlib)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
