"""``python -m pink_client``: the same as the ``pink`` command."""

import sys

from .main import main

sys.exit(main())
