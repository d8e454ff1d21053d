"""``python -m pytaskstats.daemon`` runs taskstatsd."""

import sys

from .main import main

sys.exit(main())
