"""``python -m pyagentbench``: the same as the ``pyagentbench`` command."""

import sys

from pyagentbench.integrations.cli import main

if __name__ == "__main__":
    sys.exit(main())
