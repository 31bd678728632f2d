"""Stand-in for the get-pip.py script that ansible-test downloads to bootstrap pip.

ansible-test creates its sanity virtual environments without pip and fetches
get-pip.py from a host outside the package registries. This stand-in does the
same job with the pip wheel that Debian's python3-venv ships
(/usr/share/python-wheels): it runs that pip to ``pip install`` what
ansible-test asked for (the pinned pip, from the package index). It is placed
in ansible-test's cache under a throw-away HOME by tests/collection.
"""

from __future__ import annotations

import glob
import os
import sys


def main() -> int:
    wheels = sorted(glob.glob("/usr/share/python-wheels/pip-*.whl"))
    if not wheels:
        print("get-pip stand-in: no pip wheel in /usr/share/python-wheels (install python3-pip-whl)", file=sys.stderr)
        return 1
    sys.path.insert(0, wheels[-1])
    from pip._internal.cli.main import main as pip_main  # noqa: E402 - from the wheel just added

    # get-pip.py options that are not pip options.
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return pip_main(["install", "--upgrade", "--force-reinstall", *args])


if __name__ == "__main__":
    sys.exit(main())
