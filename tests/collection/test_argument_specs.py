"""Every role's argument specs document exactly its defaults (the check script), and bad copies fail it."""

from __future__ import annotations

import shutil
import subprocess
import sys

from collection import REPO

SCRIPT = REPO / "tests" / "collection" / "check_argument_specs.py"


def check(roles_dir) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(roles_dir)], capture_output=True, text=True, check=False)


def test_roles_in_the_repo_are_consistent():
    cp = check(REPO / "roles")
    assert cp.returncode == 0, cp.stderr
    assert "_common, control, node" in cp.stdout


def test_an_undocumented_default_is_caught(tmp_path):
    shutil.copytree(REPO / "roles", tmp_path / "roles")
    with (tmp_path / "roles" / "node" / "defaults" / "main.yml").open("a") as f:
        f.write("galaxy_node_surprise: 1\n")
    cp = check(tmp_path / "roles")
    assert cp.returncode == 1
    assert "galaxy_node_surprise is in defaults/main.yml but not in argument_specs.yml" in cp.stderr


def test_a_default_that_drifted_is_caught(tmp_path):
    shutil.copytree(REPO / "roles", tmp_path / "roles")
    defaults = tmp_path / "roles" / "control" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text().replace("galaxy_control_dashboard_port: 5000",
                                                     "galaxy_control_dashboard_port: 5001"))
    cp = check(tmp_path / "roles")
    assert cp.returncode == 1
    assert "galaxy_control_dashboard_port defaults to 5001 but argument_specs.yml says 5000" in cp.stderr


def test_the_example_inventory_passes_the_argument_specs():
    """Every galaxy_node_*/galaxy_control_* value in inventory/example has the type its role declares."""
    import yaml
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!vault", lambda loader, node: "<vaulted>")
    example = REPO / "inventory" / "example"
    values = {}
    for path in sorted(example.rglob("*.yml")):
        data = yaml.load(path.read_text(), Loader=Loader) or {}
        if path.name != "hosts.yml":
            values.update({k: v for k, v in data.items() if k.startswith("galaxy_node_") or k.startswith("galaxy_control_")})
    assert {"galaxy_node_user", "galaxy_control_bot_token", "galaxy_node_executors"} <= set(values)
    for role in ("node", "control"):
        spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
        options = spec["argument_specs"]["main"]["options"]
        mine = {k: v for k, v in values.items() if k in options and "{{" not in str(v)}
        unknown = [k for k in values if k.startswith(f"galaxy_{role}_") and k not in options]
        assert not unknown, f"inventory/example sets variables the {role} role does not have: {unknown}"
        argument_spec = {k: {kk: vv for kk, vv in v.items() if kk in ("type", "elements", "choices")}
                         for k, v in options.items()}
        result = ArgumentSpecValidator(argument_spec).validate(mine)
        assert not result.error_messages, result.error_messages


def test_a_wrong_type_is_rejected_by_the_spec():
    import yaml
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    options = yaml.safe_load((REPO / "roles" / "node" / "meta" / "argument_specs.yml").read_text())[
        "argument_specs"]["main"]["options"]
    argument_spec = {k: {kk: vv for kk, vv in v.items() if kk in ("type", "elements", "choices")}
                     for k, v in options.items()}
    result = ArgumentSpecValidator(argument_spec).validate(
        {"galaxy_node_worker_runners": "many", "galaxy_node_projects": ["not", "a", "dict"],
         "galaxy_node_install_method": "curl"})
    text = " ".join(result.error_messages)
    assert "galaxy_node_worker_runners" in text and "galaxy_node_projects" in text
    assert "galaxy_node_install_method" in text
