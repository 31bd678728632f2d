"""The controller-side wheelhouse builder (roles/_common/files/wheelhouse.py): real pip, real wheels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import threading

from collection import REPO

SCRIPT = REPO / "roles" / "_common" / "files" / "wheelhouse.py"


def build(source, cache, *extra: str) -> dict:
    cp = subprocess.run([sys.executable, str(SCRIPT), "--source", str(source), "--cache", str(cache),
                         "--python", "3.11", "--platform", "manylinux_2_17_x86_64", *extra],
                        capture_output=True, text=True, timeout=600, check=False)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def _dependencies(source) -> list[str]:
    """The normalised names of the runtime's core dependencies, from its pyproject.toml."""
    import re
    import tomllib

    deps = tomllib.loads((source / "pyproject.toml").read_text())["project"]["dependencies"]
    return [re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower().replace("-", "_") for d in deps]


def test_builds_once_and_rebuilds_when_the_source_changes(tmp_path):
    source = tmp_path / "galaxy"
    shutil.copytree(REPO / "files" / "galaxy", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    cache = tmp_path / "cache"

    first = build(source, cache)
    assert first["changed"] is True and first["key"].endswith("-py3.11-manylinux_2_17_x86_64-core")
    with tarfile.open(first["archive"]) as tar:
        names = tar.getnames()
        assert all(m.uid == 0 and m.mtime == 0 for m in tar.getmembers())
    assert f"galaxy_fleet-{first['version']}-py3-none-any.whl" in names
    for requirement in _dependencies(source):
        assert any(n.lower().startswith(requirement + "-") for n in names), f"{requirement} missing: {names}"
    assert not any(n.startswith("paramiko-") for n in names), "the core build has no control extras"
    assert not (source / "build").exists(), "the build must not write into the source tree"

    again = build(source, cache)
    assert again == dict(first, changed=False)

    (source / "src" / "galaxy_fleet" / "__init__.py").write_text(
        (source / "src" / "galaxy_fleet" / "__init__.py").read_text() + "\n# changed\n")
    changed = build(source, cache)
    assert changed["changed"] is True and changed["key"] != first["key"]


def test_control_extras_and_parallel_callers_share_one_build(tmp_path):
    cache = tmp_path / "cache"
    results: list[dict] = []

    def caller() -> None:
        results.append(build(REPO / "files" / "galaxy", cache, "--extras", "control"))

    threads = [threading.Thread(target=caller), threading.Thread(target=caller), threading.Thread(target=caller)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["changed"] for r in results) == [False, False, True]
    with tarfile.open(results[0]["archive"]) as tar:
        names = tar.getnames()
    assert any(n.startswith("paramiko-") for n in names) and any(n.startswith("cryptography-") for n in names)


def test_a_wrong_version_is_refused(tmp_path):
    cp = subprocess.run([sys.executable, str(SCRIPT), "--source", str(REPO / "files" / "galaxy"), "--cache",
                         str(tmp_path), "--python", "3.11", "--platform", "manylinux_2_17_x86_64", "--version", "99.0"],
                        capture_output=True, text=True, check=False)
    assert cp.returncode != 0 and "not the requested 99.0" in cp.stderr
