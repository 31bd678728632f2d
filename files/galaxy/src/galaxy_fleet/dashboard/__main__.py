"""`python -m galaxy_fleet.dashboard [--config PATH] [--host H] [--port P] ...`: the same
as `galaxy dashboard`, for running it before (or without) the CLI entry point."""

from __future__ import annotations

import argparse
import sys

from galaxy_fleet.dashboard import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    from galaxy_fleet.config import ConfigError, load

    parser = argparse.ArgumentParser(prog="galaxy dashboard", description=__doc__)
    parser.add_argument("--config", metavar="PATH", help="config file (default: $GALAXY_CONFIG or"
                        " /etc/galaxy/config.yml)")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"galaxy dashboard: config: {exc}", file=sys.stderr)
        return 2
    return run(args, config)


if __name__ == "__main__":
    sys.exit(main())
