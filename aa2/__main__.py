"""`python -m aa2 ...`: see `aa2.cli`."""

from .cli import main

raise SystemExit(main())
