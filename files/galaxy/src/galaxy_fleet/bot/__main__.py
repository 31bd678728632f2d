"""``python -m galaxy_fleet.bot``: the bot without the rest of the CLI."""

import sys

from galaxy_fleet.bot.cli import main

if __name__ == "__main__":
    sys.exit(main())
