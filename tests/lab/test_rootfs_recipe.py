"""The lab's root file system recipe and the choice of Debian mirror from apt sources."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))

import lab_rootfs  # noqa: E402
from lab_host import LabError  # noqa: E402


def apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    etc_apt = tmp_path / "apt"
    (etc_apt / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (etc_apt / name).write_text(text)
    return etc_apt


def test_mirror_from_deb822_sources_skips_security_and_disabled(tmp_path, monkeypatch):
    monkeypatch.delenv("GALAXY_LAB_MIRROR", raising=False)
    etc_apt = apt_dir(tmp_path, {
        "sources.list.d/debian.sources": (
            "Types: deb\n# a comment\nURIs: http://mirror.invalid/disabled\nSuites: bookworm\n"
            "Components: main\nEnabled: no\n\n"
            "Types: deb-src\nURIs: http://mirror.invalid/src\nSuites: bookworm\nComponents: main\n\n"
            "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
            "Components: main\n\n"
            "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
            "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    })
    assert lab_rootfs.find_mirror("bookworm", etc_apt) == "http://mirror.invalid/debian"


def test_mirror_from_one_line_sources_list_with_options(tmp_path, monkeypatch):
    monkeypatch.delenv("GALAXY_LAB_MIRROR", raising=False)
    etc_apt = apt_dir(tmp_path, {
        "sources.list": (
            "# deb http://mirror.invalid/commented bookworm main\n"
            "deb-src http://mirror.invalid/src bookworm main\n"
            "deb [arch=amd64 signed-by=/k.gpg] https://mirror.invalid/debian bookworm main non-free\n"
        ),
    })
    assert lab_rootfs.find_mirror("bookworm", etc_apt) == "https://mirror.invalid/debian"


def test_mirror_of_another_debian_release_is_the_same_archive(tmp_path, monkeypatch):
    monkeypatch.delenv("GALAXY_LAB_MIRROR", raising=False)
    etc_apt = apt_dir(tmp_path, {"sources.list.d/a.list": "deb http://mirror.invalid/debian trixie main\n"})
    assert lab_rootfs.find_mirror("bookworm", etc_apt) == "http://mirror.invalid/debian"


def test_no_usable_mirror_is_a_clear_error_and_the_variable_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("GALAXY_LAB_MIRROR", raising=False)
    etc_apt = apt_dir(tmp_path, {})
    with pytest.raises(LabError, match="GALAXY_LAB_MIRROR"):
        lab_rootfs.find_mirror("bookworm", etc_apt)
    monkeypatch.setenv("GALAXY_LAB_MIRROR", "http://mirror.invalid/override")
    assert lab_rootfs.find_mirror("bookworm", etc_apt) == "http://mirror.invalid/override"


def test_recipe_id_follows_the_recipe(monkeypatch):
    first = lab_rootfs.recipe_id()
    assert first == lab_rootfs.recipe_id()
    monkeypatch.setattr(lab_rootfs, "PACKAGES", lab_rootfs.PACKAGES + ("less",))
    assert lab_rootfs.recipe_id() != first


def test_the_host_apt_sources_name_a_mirror():
    # The machine that builds the lab must have one; this is where the lab takes it from.
    assert lab_rootfs.find_mirror().split(":", 1)[0] in ("http", "https", "file")


def test_customize_makes_an_identity_free_lean_image(tmp_path):
    root = tmp_path / "root"
    for d in ("etc/ssh/sshd_config.d", "etc/systemd/system/timers.target.wants", "var/cache/apt/archives",
              "var/lib/dbus", "root"):
        (root / d).mkdir(parents=True)
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("secret")
    (root / "etc/machine-id").write_text("0123\n")
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.53\n")
    (root / "etc/systemd/system/timers.target.wants/apt-daily.timer").symlink_to("/lib/systemd/system/x")
    (root / "var/cache/apt/archives/x.deb").write_text("")
    lab_rootfs.customize(root)
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    assert (root / "etc/machine-id").read_text() == ""
    assert "nameserver" not in (root / "etc/resolv.conf").read_text()
    assert not (root / "etc/systemd/system/timers.target.wants/apt-daily.timer").is_symlink()
    for unit in lab_rootfs.MASKED_UNITS:
        assert (root / "etc/systemd/system" / unit).readlink() == Path("/dev/null")
    assert "HostKey /etc/ssh/ssh_host_ed25519_key" in (root / "etc/ssh/sshd_config.d/galaxy-lab.conf").read_text()
    assert not list((root / "var/cache/apt/archives").glob("*.deb"))
