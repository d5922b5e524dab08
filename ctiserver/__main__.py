"""`python -m ctiserver`: the same as the `ctiserver` command."""

from ctiserver.cli import main

raise SystemExit(main())
