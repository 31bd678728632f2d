#!/usr/bin/env python3
"""Deploy figures of the Ansible collection on a lab of its own (control + 2 nodes).

- fresh deploy of playbooks/site.yml vs an idempotent re-run (which must
  report changed=0): wall times and their ratio;
- a rolling update (playbooks/update.yml, serial 1, health gate) after a
  source change: time per node;
- one trivial command on web1: `ansible web1 -m ansible.builtin.command -a
  'echo hi'` (the baseline) vs `playbooks/order.yml` (order module, shell
  executor, wait for the answer): median of 3 and the ratio;
- `systemd-analyze security` of every unit the roles install.

The lab (lab id 9 unless GALAXY_BENCH_LAB_ID) is booted at the start and removed at
the end, even on failure. The wheelhouse cache (~/.cache/galaxy-fleet) is used as a
user's would be: the first run ever also downloads the wheels.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "collection"))
from collection import BIN, ansible_env  # noqa: E402 - the tests' helpers: tools and the collections path
# Lab ids are per machine and other checkouts may hold some: the first free one.
LAB_IDS = os.environ.get("GALAXY_BENCH_LAB_ID", "9 22 23 24").split()
LAB_ID = LAB_IDS[0]
STATE = REPO / "artifacts" / "bench-lab"
INVENTORY = STATE / "hosts.yml"
SOURCE = STATE / "galaxy-src"
UNITS = {"control": ["galaxy-bot.service", "galaxy-dashboard.service"],
         "web1": ["galaxy-worker.service", "galaxy-health.service"],
         "web2": ["opencode-serve.service"]}


def lab(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(["/usr/bin/python3", str(REPO / "lab" / "galaxy_lab.py"), "--lab-id", LAB_ID,
                         "--state-dir", str(STATE), "--inventory", str(INVENTORY), *args],
                        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if check and cp.returncode:
        raise SystemExit(f"galaxy_lab.py {' '.join(args)} failed:\n{cp.stderr}{cp.stdout}")
    return cp


def boot() -> None:
    """Boot control, web1, web2 on the first lab id no other checkout holds."""
    global LAB_ID
    for LAB_ID in LAB_IDS:  # noqa: B020 - the loop picks the module-wide id
        lab("down", check=False)  # machines left by an interrupted run of this checkout
        booted = lab("up", "--nodes", "2", check=False)
        if booted.returncode == 0:
            return
        if "already running from another state directory" not in booted.stderr:
            break
    raise SystemExit(f"galaxy_lab.py up failed:\n{booted.stderr}{booted.stdout}")


def timed(argv: list[str]) -> tuple[float, str, list[tuple[float, str]]]:
    """Run argv; return wall seconds, output, and (time, line) for every line as it arrived."""
    start = time.monotonic()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ansible_env(),
                          cwd=REPO, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - start, line.rstrip("\n")))
        rc = proc.wait()
    elapsed = time.monotonic() - start
    out = "\n".join(text for _, text in lines)
    if rc:
        raise SystemExit(f"{' '.join(argv)} failed (exit {rc}):\n{out[-4000:]}")
    return elapsed, out, lines


def playbook(name: str, *args: str) -> tuple[float, str, list[tuple[float, str]]]:
    return timed([str(BIN / "ansible-playbook"), "-i", str(INVENTORY), str(REPO / "playbooks" / name),
                  "-e", f"galaxy_node_source_dir={SOURCE} galaxy_control_source_dir={SOURCE}", *args])


def changed(out: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", out, re.M)}


def main() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(SOURCE, ignore_errors=True)
    shutil.copytree(REPO / "files" / "galaxy", SOURCE,
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    try:
        t0 = time.monotonic()
        boot()
        print(f"lab up (control, web1, web2):            {time.monotonic() - t0:6.1f} s")

        fresh, out, _ = playbook("site.yml")
        print(f"fresh deploy (site.yml):                 {fresh:6.1f} s   changed {changed(out)}")
        again, out, _ = playbook("site.yml")
        counts = changed(out)
        print(f"idempotent re-run (site.yml):            {again:6.1f} s   changed {counts}")
        if any(counts.values()):
            print("  FAIL: the re-run changed something")
            return 1
        print(f"  ratio fresh / re-run:                  {fresh / again:6.2f}")

        # A source change is a new build: the update rebuilds, ships and restarts.
        init = SOURCE / "src" / "galaxy_fleet" / "__init__.py"
        init.write_text(init.read_text() + "\n# bench: a new build\n")
        total, out, lines = playbook("update.yml")
        starts = [t for t, text in lines if text.startswith("PLAY [Roll the update over the Galaxy nodes]")]
        ends = starts[1:] + [next(t for t, text in lines if text.startswith("PLAY RECAP"))]
        per_node = [b - a for a, b in zip(starts, ends)]
        control = starts[0] - next(t for t, text in lines if text.startswith("PLAY [Update the Galaxy control node]"))
        print(f"rolling update (update.yml, serial 1):   {total:6.1f} s   control {control:.1f} s, per node "
              + ", ".join(f"{d:.1f} s" for d in per_node)
              + f" (mean {statistics.mean(per_node):.1f} s incl. health gate)")

        adhoc = [timed([str(BIN / "ansible"), "-i", str(INVENTORY), "web1", "-m", "ansible.builtin.command",
                        "-a", "echo hi"])[0] for _ in range(3)]
        orders = [playbook("order.yml", "-e", "target=web1", "-e", "payload=uptime", "-e", "executor=shell")[0]
                  for _ in range(3)]
        a, o = statistics.median(adhoc), statistics.median(orders)
        print(f"ansible web1 -m command -a 'echo hi':    {a:6.2f} s   (median of 3; baseline)")
        print(f"playbooks/order.yml (uptime, shell):     {o:6.2f} s   (median of 3); ratio {o / a:.2f}x the baseline")

        # opencode is installed separately: to score the unit, web2 gets it
        # with a stand-in program (the unit's sandbox is what is measured).
        playbook("site.yml", "--limit", "web2", "-e", "galaxy_node_opencode_enabled=true",
                 "-e", "galaxy_node_opencode_install=none", "-e", "galaxy_node_opencode_bin=/bin/sleep")
        print("systemd-analyze security (exposure, lower is better):")
        for host, units in UNITS.items():
            for unit in units:
                cp = lab("ssh", host, "--", f"systemd-analyze security --no-pager {unit} | tail -1", check=False)
                score = re.search(r"exposure level for \S+: ([0-9.]+) (\w+)", cp.stdout)
                print(f"  {unit:<28} {score.group(1) + ' ' + score.group(2) if score else cp.stdout.strip() or '-'}")
        return 0
    finally:
        lab("down", check=False)


if __name__ == "__main__":
    sys.exit(main())
