"""Make this checkout importable as ``ansible_collections.galaxy_protocol.fleet``.

Unit tests import the modules the way Ansible does, by their collection path,
so the repository root (the collection root) is linked into a temporary
``ansible_collections`` tree for the test session.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
_TREE = Path(tempfile.mkdtemp(prefix="galaxy-collections-"))
(_TREE / "ansible_collections" / "galaxy_protocol").mkdir(parents=True)
(_TREE / "ansible_collections" / "galaxy_protocol" / "fleet").symlink_to(_ROOT)
sys.path.insert(0, str(_TREE))
atexit.register(shutil.rmtree, _TREE, True)
