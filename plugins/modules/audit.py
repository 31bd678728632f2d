#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Galaxy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: audit
short_description: Read a Galaxy node's audit events after a cursor
version_added: 0.1.0
description:
  - Runs C(galaxy audit --json) on the target host and returns the audit events that follow
    a cursor, oldest first, with the cursor to pass next time.
  - With O(verify=true) the node also checks the hash chain of its audit trail and the
    module fails when the chain is broken.
  - The module only reads; it never reports a change.
author:
  - Galaxy maintainers (@galaxy-protocol)
extends_documentation_fragment:
  - galaxy_protocol.fleet.galaxy
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Reading the audit trail changes nothing, so it runs in check mode too.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  after:
    description:
      - Return only events after this cursor (the RV(cursor) of an earlier call, an event's C(seq)).
      - V(0) returns events from the start of the trail.
    type: int
    default: 0
  limit:
    description:
      - Return at most this many events, the oldest after O(after). Call again with the returned
        RV(cursor) for more.
      - V(0) returns every event after O(after).
    type: int
    default: 0
  verify:
    description:
      - Also check the audit trail's hash chain, and fail naming the first broken link when it is broken.
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: Read the first hundred events
  galaxy_protocol.fleet.audit:
    limit: 100
  register: __audit

- name: Read what happened since the last collection
  galaxy_protocol.fleet.audit:
    after: "{{ __audit.cursor }}"

- name: Check that nobody edited the audit trail
  galaxy_protocol.fleet.audit:
    verify: true
    after: "{{ __audit.cursor }}"
'''

RETURN = r'''
events:
  description: The audit events after O(after), oldest first, each as the node wrote it.
  returned: always
  type: list
  elements: dict
  sample:
    - {"seq": 41, "ts": "2026-11-28T19:27:49.123Z", "event": "order.done", "order": "20261128T192749.123456Z-3f9a1c2e"}
lines:
  description:
    - The same events as the exact JSON lines the node wrote, for stores that keep them verbatim
      (each line carries its hash-chain link, which re-serialising would break).
  returned: always
  type: list
  elements: str
  sample: ['{"ts":"2026-11-28T19:27:49.123Z","seq":41,"host":"web1","type":"order_done","prev":"...","hash":"..."}']
count:
  description: Number of events returned.
  returned: always
  type: int
  sample: 1
cursor:
  description:
    - The cursor to pass as O(after) next time, the C(seq) of the last event returned.
    - Equal to O(after) when there were no new events.
  returned: always
  type: int
  sample: 41
verification:
  description: The chain check's report (only with O(verify=true)).
  returned: when O(verify=true)
  type: dict
  sample: {"ok": true, "count": 41, "broken": null, "first_seq": 1, "last_seq": 41, "segments": 0}
rc:
  description: Exit code of C(galaxy audit).
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
    argument_spec.update(
        after=dict(type='int', default=0),
        limit=dict(type='int', default=0),
        verify=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    for option in ('after', 'limit'):
        if params[option] < 0:
            module.fail_json(msg='%s must be 0 or more, got %d' % (option, params[option]))
    cli = GalaxyCLI(module)
    result = dict(changed=False)

    if params['verify']:
        rc, out, err = cli.run(['audit', '--json', '--verify'])
        report = cli.parse_json('audit chain verification', rc, out, err) if out.strip() else None
        if not isinstance(report, dict):
            cli.fail('audit chain verification', rc, out, err)
        result['verification'] = report
        if rc != 0 or not report.get('ok'):
            broken = report.get('broken') or {}
            module.fail_json(msg='audit chain broken at seq %s (%s, line %s): %s' % (
                broken.get('seq'), broken.get('segment'), broken.get('line'),
                broken.get('detail') or broken.get('reason') or (err or '').strip()), rc=rc, **result)

    rc, out, err = cli.run(['audit', '--json', '--after', str(params['after']), '--limit', str(params['limit'])])
    if rc != 0:
        cli.fail('galaxy audit', rc, out, err)
    events = cli.parse_json_lines('galaxy audit', rc, out, err)
    cursor = params['after']
    for event in events:
        if isinstance(event, dict) and isinstance(event.get('seq'), int):
            cursor = max(cursor, event['seq'])
    lines = [line for line in out.splitlines() if line.strip()]
    result.update(events=events, lines=lines, count=len(events), cursor=cursor, rc=rc)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
