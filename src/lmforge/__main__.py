"""`python -m lmforge` (and `torchrun -m lmforge`) runs the CLI."""

import sys

from lmforge.cli.__main__ import main

sys.exit(main())
