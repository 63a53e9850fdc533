"""`python -m cspnet` runs the cspnet command."""

import sys

from cspnet.cli import main

sys.exit(main())
