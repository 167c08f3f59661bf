"""``python -m kgzsl`` runs the command line."""

import sys

from kgzsl.cli import main

sys.exit(main())
