"""``python -m memsave``: the command-line interface (see memsave.cli)."""
from memsave.cli import main

raise SystemExit(main())
