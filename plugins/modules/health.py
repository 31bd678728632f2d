#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Galaxy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: health
short_description: Run a Galaxy node's health checks and return their results
version_added: 0.1.0
description:
  - Runs C(galaxy health --json) on the target host and returns every check's result.
  - The module only reads; it never reports a change.
  - An unhealthy node is a successful result with RV(healthy=false), unless
    O(fail_on_unhealthy=true).
author:
  - Galaxy maintainers (@galaxy-protocol)
extends_documentation_fragment:
  - galaxy_protocol.fleet.galaxy
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - The checks only read, so they run in check mode too.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  fail_on_unhealthy:
    description:
      - Fail the task when any check fails, naming the failed checks.
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: Check every node
  galaxy_protocol.fleet.health:
  register: __health

- name: Show the failing checks
  ansible.builtin.debug:
    msg: "{{ __health.failed_checks }}"
  when: not __health.healthy

- name: Gate a rolling update on the node's health
  galaxy_protocol.fleet.health:
    fail_on_unhealthy: true
  register: __gate
  retries: 6
  delay: 5
  until: __gate.healthy
'''

RETURN = r'''
healthy:
  description: Whether every check passed.
  returned: always
  type: bool
  sample: true
status:
  description:
    - The node's status by the same rule the bot and the dashboard apply
      (C(healthy), C(degraded), C(down), C(unknown)), as the node's C(galaxy health) decides it.
  returned: always
  type: str
  sample: healthy
reason:
  description: Why the node has that status, in one line (the failing checks and their messages).
  returned: always
  type: str
  sample: "failing: worker: galaxy-worker.service is failed"
checks:
  description: Every check with its name, result and message, in the order the node ran them.
  returned: always
  type: list
  elements: dict
  sample:
    - {"name": "worker", "ok": true, "message": "galaxy-worker.service is active"}
    - {"name": "disk", "ok": true, "message": "spool has 12.1 GiB free"}
failed_checks:
  description: Names of the checks that failed.
  returned: always
  type: list
  elements: str
  sample: []
rc:
  description: Exit code of C(galaxy health).
  returned: always
  type: int
  sample: 0
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.galaxy_protocol.fleet.plugins.module_utils._galaxy import (
    GalaxyCLI,
    common_argument_spec,
)


def main():
    argument_spec = common_argument_spec()
    argument_spec.update(fail_on_unhealthy=dict(type='bool', default=False))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    cli = GalaxyCLI(module)

    rc, out, err = cli.run(['health', '--json'])
    if not out.strip():
        cli.fail('galaxy health', rc, out, err)
    report = cli.parse_json('galaxy health', rc, out, err)
    if not isinstance(report, dict) or not isinstance(report.get('checks'), list):
        cli.fail('galaxy health: no checks in the answer', rc, out, err)

    checks = report['checks']
    failed = [str(check.get('name', '?')) for check in checks if isinstance(check, dict) and not check.get('ok')]
    # The exit code and the report must agree; trust the stricter of the two.
    healthy = bool(report.get('healthy')) and rc == 0 and not failed
    # The status and its reason come from the node (galaxy_fleet.node_status, the rule the bot
    # and the dashboard use); a node too old to send them gets the same rule's two cases here.
    status = report.get('status') if report.get('status') in ('healthy', 'degraded', 'down', 'unknown') else None
    reason = report.get('reason') if isinstance(report.get('reason'), str) else None
    if status is None:
        status = 'healthy' if healthy else 'degraded'
        reason = 'all %d checks passed' % len(checks) if healthy else 'failing: ' + '; '.join(
            '%s: %s' % (check.get('name', '?'), check.get('message', 'failed'))
            for check in checks if isinstance(check, dict) and not check.get('ok'))
    if not healthy and status == 'healthy':
        status, reason = 'degraded', 'galaxy health exited with %d' % rc
    result = dict(changed=False, healthy=healthy, status=status, reason=reason, checks=checks,
                  failed_checks=failed, rc=rc)
    if not healthy and module.params['fail_on_unhealthy']:
        messages = ['%s: %s' % (check.get('name', '?'), check.get('message', 'failed'))
                    for check in checks if isinstance(check, dict) and not check.get('ok')]
        module.fail_json(msg='unhealthy: ' + ('; '.join(messages) or (err or '').strip() or 'rc=%d' % rc),
                         **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
