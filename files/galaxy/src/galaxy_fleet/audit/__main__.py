"""``python -m galaxy_fleet.audit``: query and verify an audit trail without the rest of the CLI."""

import sys

from galaxy_fleet.audit import main

if __name__ == "__main__":
    sys.exit(main())
