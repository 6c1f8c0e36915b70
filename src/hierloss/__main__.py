"""``python -m hierloss`` runs the command line."""

import sys

from hierloss.cli import main

sys.exit(main())
