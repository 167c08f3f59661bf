"""``python -m kgzsl`` runs the command line."""

import sys

from kgzsl.cli import console

sys.exit(console())
