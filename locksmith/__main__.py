"""``python -m locksmith``: the ``locksmith`` command line."""

from locksmith._cli import main

raise SystemExit(main())
