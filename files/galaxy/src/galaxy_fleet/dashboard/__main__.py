"""`python -m galaxy_fleet.dashboard [--config PATH] [--host H] [--port P] ...`: the same
as `galaxy dashboard`, for running it before (or without) the CLI entry point."""

from __future__ import annotations

import sys

from galaxy_fleet.dashboard import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    from galaxy_fleet.config import standalone_main

    return standalone_main("galaxy dashboard", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
