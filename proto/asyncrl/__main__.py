"""`python -m asyncrl`: the same command line as the `asyncrl` console script."""

from asyncrl.common.cli import main

raise SystemExit(main())
