"""`python -m aimd` is the same program as the `aimd` console script."""

from aimd.cli import main

raise SystemExit(main())
