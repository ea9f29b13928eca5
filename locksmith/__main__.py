# PYTHON_ARGCOMPLETE_OK: argcomplete's global completion looks for this marker.
"""``python -m locksmith``: the ``locksmith`` command line."""

from locksmith._cli import main

raise SystemExit(main())
