"""Check that every role's meta/argument_specs.yml documents exactly its defaults.

For each role with a defaults/main.yml, the options of the ``main`` entry
point must have the same names as the variables in defaults/main.yml, and a
literal default given in the spec must equal the one in defaults/main.yml
(templated defaults are documented in prose). Roles whose name starts with an
underscore are internal: their defaults must be empty and every entry point
must document its options.

Usage: python check_argument_specs.py [ROLES_DIR]   (exit 0 = consistent)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def check_role(role: Path) -> list[str]:
    problems: list[str] = []
    defaults_file = role / "defaults" / "main.yml"
    specs_file = role / "meta" / "argument_specs.yml"
    if not specs_file.exists():
        return [f"{role.name}: no meta/argument_specs.yml"]
    defaults = (_load(defaults_file) if defaults_file.exists() else None) or {}
    specs = (_load(specs_file) or {}).get("argument_specs") or {}
    if "main" not in specs:
        return [f"{role.name}: argument_specs has no main entry point"]
    options = specs["main"].get("options") or {}
    for name in sorted(set(defaults) - set(options)):
        problems.append(f"{role.name}: {name} is in defaults/main.yml but not in argument_specs.yml")
    for name in sorted(set(options) - set(defaults)):
        problems.append(f"{role.name}: {name} is in argument_specs.yml but not in defaults/main.yml")
    for name in sorted(set(options) & set(defaults)):
        spec = options[name] or {}
        if "type" not in spec or not spec.get("description"):
            problems.append(f"{role.name}: {name} needs a type and a description")
        value = defaults[name]
        templated = isinstance(value, str) and "{{" in value
        if "default" in spec and templated:
            problems.append(f"{role.name}: {name} has a templated default; describe it instead of repeating it")
        elif "default" in spec and spec["default"] != value:
            problems.append(f"{role.name}: {name} defaults to {value!r} but argument_specs.yml says {spec['default']!r}")
        elif "default" not in spec and not templated:
            problems.append(f"{role.name}: {name} defaults to {value!r}; say so in argument_specs.yml")
    if role.name.startswith("_"):
        for entry, spec in specs.items():
            if not spec.get("short_description"):
                problems.append(f"{role.name}: entry point {entry} has no short_description")
    return problems


def main(argv: list[str]) -> int:
    roles_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[2] / "roles"
    roles = sorted(p for p in roles_dir.iterdir() if p.is_dir())
    if not roles:
        print(f"no roles in {roles_dir}", file=sys.stderr)
        return 2
    problems = [problem for role in roles for problem in check_role(role)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"argument specs match the defaults of {len(roles)} roles: {', '.join(r.name for r in roles)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
