"""``python -m relaycast``: the same as the ``relaycast`` command.

Like the console script, and unlike ``python -m``'s default, the current directory is not on
``sys.path``: a ``config.py`` or ``tasks.py`` of the user's there cannot stand in for
relaycast's own packages. The modules named in ``RELAYCAST_WORKFLOWS`` are still found there
(they are imported with it first on the path, as ``celery -A`` does).
"""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from relaycast.cli import main

raise SystemExit(main())
