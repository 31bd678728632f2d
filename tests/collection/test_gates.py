"""The collection's quality gates: yamllint, ansible-lint (production profile), ansible-test
sanity (empty ignore files), and build + install into a clean path + ansible-doc."""

from __future__ import annotations

import shutil
import tarfile

from collection import BIN, REPO, ansible_env, collection_copy, run, tool

YAML_PATHS = ["galaxy.yml", "meta", "roles", "playbooks", "molecule", "inventory/example", "changelogs",
              "plugins/filter", "tests/collection", ".config"]
MODULES = ("order", "health", "audit")
ROLES = ("node", "control")


def test_yamllint():
    cp = run([tool("yamllint"), "--strict", "-c", ".config/yamllint.yml", *YAML_PATHS])
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_ansible_lint_production_profile(tmp_path):
    copy = collection_copy(tmp_path)
    cp = run([tool("ansible-lint"), "--nocolor", "--profile", "production", "-c", ".config/ansible-lint.yml"],
             cwd=copy, env=ansible_env(ANSIBLE_COLLECTIONS_PATH=str(tmp_path), HOME=str(tmp_path / "home")),
             timeout=600)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "Profile 'production' was required, and it passed" in cp.stdout + cp.stderr


def test_sanity_ignore_files_are_empty():
    ignores = sorted((REPO / "tests" / "sanity").glob("ignore-*.txt"))
    assert ignores, "tests/sanity/ignore-<version>.txt files exist (and stay empty)"
    for ignore in ignores:
        assert ignore.read_text().strip() == "", f"{ignore.name} must stay empty: fix the code instead"


def test_ansible_test_sanity(tmp_path):
    copy = collection_copy(tmp_path)
    # ansible-test caches its per-test virtual environments under ~/.ansible/test;
    # keep them in artifacts/ (reused between runs) and bootstrap their pip with
    # the stand-in for get-pip.py (see get_pip_shim.py).
    home = REPO / "artifacts" / "ansible-test-home"
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    import ansible_test._internal.python_requirements as requirements  # noqa: PLC0415 - the pinned pip version

    pip_version = _pinned_pip(requirements)
    shutil.copy2(REPO / "tests" / "collection" / "get_pip_shim.py", cache / f"get_pip_{pip_version.replace('.', '_')}.py")
    cp = run([tool("ansible-test"), "sanity", "--python", "3.11", "--local", "--requirements", "--color", "no"],
             cwd=copy, env=ansible_env(HOME=str(home)), timeout=1800)
    output = cp.stdout + cp.stderr
    assert cp.returncode == 0, output[-8000:]
    assert 'Running sanity test "validate-modules"' in output
    assert 'Running sanity test "pylint"' in output


def _pinned_pip(requirements) -> str:
    import inspect
    import re

    match = re.search(r"pip='([0-9.]+)'", inspect.getsource(requirements))
    assert match, "cannot find the pip version ansible-test pins"
    return match.group(1)


def test_build_install_and_document(tmp_path):
    dist = tmp_path / "dist"
    cp = run([tool("ansible-galaxy"), "collection", "build", str(REPO), "--output-path", str(dist)])
    assert cp.returncode == 0, cp.stdout + cp.stderr
    (tarball,) = dist.glob("galaxy_protocol-fleet-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for wanted in ("MANIFEST.json", "meta/runtime.yml", "plugins/modules/order.py",
                   "plugins/module_utils/_galaxy.py", "roles/node/meta/argument_specs.yml",
                   "roles/_common/files/wheelhouse.py", "playbooks/site.yml", "files/galaxy/pyproject.toml",
                   "files/galaxy/src/galaxy_fleet/cli.py"):
        assert wanted in names or f"./{wanted}" in names, f"{wanted} missing from {tarball.name}"
    for unwanted in ("tests/", "molecule/", "bench/", "lab-state/", ".venv/", "inventory/lab/", "artifacts/",
                     ".pytest_cache/", "files/galaxy/build/"):
        assert not any(n.startswith(unwanted) for n in names), f"{unwanted} must not ship in {tarball.name}"

    clean = tmp_path / "clean"
    env = ansible_env(ANSIBLE_COLLECTIONS_PATH=str(clean))
    cp = run([tool("ansible-galaxy"), "collection", "install", str(tarball), "-p", str(clean)], env=env)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert (clean / "ansible_collections" / "galaxy_protocol" / "fleet" / "MANIFEST.json").exists()

    listing = run([tool("ansible-doc"), "-t", "module", "-l", "galaxy_protocol.fleet"], env=env)
    assert listing.returncode == 0, listing.stderr
    for module in MODULES:
        assert f"galaxy_protocol.fleet.{module}" in listing.stdout
        doc = run([tool("ansible-doc"), "-t", "module", f"galaxy_protocol.fleet.{module}"], env=env)
        assert doc.returncode == 0, doc.stderr
        assert "EXAMPLES" in doc.stdout and "RETURN VALUES" in doc.stdout, doc.stdout[:2000]
        assert "check_mode" in doc.stdout and "run_as" in doc.stdout
    for role in ROLES:
        doc = run([tool("ansible-doc"), "-t", "role", f"galaxy_protocol.fleet.{role}"], env=env)
        assert doc.returncode == 0, doc.stderr
        assert f"galaxy_{role}_user" in doc.stdout and "ENTRY POINT:" in doc.stdout, doc.stdout[:2000]
        assert "Deploy" in doc.stdout and "default: galaxy" in doc.stdout
    doc = run([tool("ansible-doc"), "-t", "filter", "galaxy_protocol.fleet.health_table"], env=env)
    assert doc.returncode == 0 and "health_table" in doc.stdout, doc.stderr
    assert BIN.exists()
