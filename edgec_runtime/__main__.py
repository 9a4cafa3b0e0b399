import sys

from edgec_runtime.cli import main

sys.exit(main())
