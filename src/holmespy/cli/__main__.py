"""`python -m holmespy.cli`, the same as the `holmespy` command."""

import sys

from holmespy.cli import main

sys.exit(main())
