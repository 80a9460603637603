"""``python -m lrpc ...`` runs the ``lrpc`` command line."""
import sys

from .cli import main

sys.exit(main())
