# Copyright: Galaxy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build (once) a wheelhouse archive of galaxy-fleet and its dependencies for a target.

Runs on the Ansible controller. The archive's name is a key made of the
package version, a fingerprint of its source tree, the target's Python and
platform and the extras, so an unchanged source reuses the cached archive and
any change (a new version, an edited file) builds a new one. Prints one JSON
object: {"changed", "key", "version", "archive"}.

The target never needs an index: the controller fetches binary wheels for the
target's Python and platform with ``pip download --only-binary=:all:``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

_SKIP_DIRS = {"__pycache__", ".pytest_cache", "build", "dist"}


def source_version(source: Path) -> str:
    text = (source / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'(?m)^version\s*=\s*"([^"]+)"', text)
    if not match:
        raise SystemExit(f"{source}/pyproject.toml: no version")
    return match.group(1)


def fingerprint(source: Path) -> str:
    """sha256 over the relative paths and contents of the files that go into the wheel."""
    digest = hashlib.sha256()
    files = [source / "pyproject.toml"]
    for root, dirs, names in os.walk(source / "src"):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        files += [Path(root) / n for n in sorted(names) if not n.endswith((".pyc", ".pyo"))]
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")


def build(source: Path, version: str, python: str, platform: str, extras: list[str], out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="wheelhouse-", dir=out.parent) as tmp:
        house = Path(tmp) / "wheels"
        # Build from a copy: setuptools writes build/ and *.egg-info next to the
        # sources, and an installed collection's files may be read-only.
        tree = Path(tmp) / "source"
        shutil.copytree(source, tree, ignore=shutil.ignore_patterns(
            "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache"))
        pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(house), str(tree))
        wheels = sorted(house.glob("galaxy_fleet-*.whl"))
        if len(wheels) != 1 or f"-{version}-" not in wheels[0].name:
            raise SystemExit(f"expected one galaxy_fleet {version} wheel, got {[w.name for w in wheels]}")
        spec = f"{wheels[0]}[{','.join(extras)}]" if extras else str(wheels[0])
        major, minor = python.split(".")
        pip("download", "--quiet", "--dest", str(house), "--only-binary=:all:",
            "--python-version", python, "--implementation", "cp", "--abi", f"cp{major}{minor}",
            "--platform", platform, spec)
        partial = out.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            for wheel in sorted(house.iterdir()):
                info = tar.gettarinfo(str(wheel), arcname=wheel.name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                info.mode = 0o644
                with wheel.open("rb") as f:
                    tar.addfile(info, f)
        os.replace(partial, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="galaxy-fleet source tree")
    parser.add_argument("--cache", type=Path, required=True, help="directory for the archives")
    parser.add_argument("--version", default="", help="expected version (default: the source's)")
    parser.add_argument("--python", required=True, help="target Python, e.g. 3.11")
    parser.add_argument("--platform", required=True, help="target platform tag, e.g. manylinux_2_17_x86_64")
    parser.add_argument("--extras", default="", help="comma-separated extras, e.g. control")
    args = parser.parse_args()

    source = args.source.resolve()
    version = source_version(source)
    if args.version and args.version != version:
        raise SystemExit(f"{source} is galaxy-fleet {version}, not the requested {args.version}")
    if not re.fullmatch(r"\d+\.\d+", args.python):
        raise SystemExit(f"--python must look like 3.11, got {args.python!r}")
    extras = sorted(e for e in args.extras.split(",") if e)
    key = "-".join([version, fingerprint(source), "py" + args.python, args.platform, "+".join(extras) or "core"])
    args.cache.mkdir(parents=True, exist_ok=True)
    archive = args.cache / f"{key}.tar"
    changed = False
    # Several hosts (forks) may ask for the same archive at once: build it once.
    with open(args.cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.exists():
            build(source, version, args.python, args.platform, extras, archive)
            changed = True
    print(json.dumps({"changed": changed, "key": key, "version": version, "archive": str(archive)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
