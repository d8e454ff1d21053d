"""``python -m pytaskstats`` runs the ``taskstats`` command."""

import sys

from .cli.main import main

sys.exit(main())
