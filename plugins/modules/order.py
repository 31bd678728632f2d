#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Galaxy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
---
module: order
short_description: Submit a Galaxy order on a node and optionally wait for its response
version_added: 0.1.0
description:
  - Submits an order to the Galaxy worker of the host the task runs against, through
    C(galaxy order submit) on that host.
  - With O(wait=true) (the default) the module waits until the order ends and returns
    its state, the executor's response, its details and timings.
  - The payload travels on standard input, never on a command line.
  - Fails cleanly, with the node's own message, when the node rejects the order
    (an unknown executor, a payload over the node's size limit, a bad option).
author:
  - Galaxy maintainers (@galaxy-protocol)
extends_documentation_fragment:
  - galaxy_protocol.fleet.galaxy
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode nothing is submitted; the module reports that an order would be submitted.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  payload:
    description:
      - What the order asks for, given to the executor as it is.
      - For the C(shell) executor, the name of an allowed command such as C(uptime).
    type: str
    required: true
  target:
    description:
      - The machine name the order is addressed to. Defaults to the node's own name.
    type: str
  executor:
    description:
      - The executor that runs the order (for example C(opencode), C(shell) or a configured
        C(command) executor). Defaults to the node's C(worker.default_executor).
    type: str
  timeout:
    description:
      - Seconds the executor may run before the order ends as C(timed_out).
      - Defaults to the node's C(worker.default_timeout).
    type: float
  session:
    description:
      - A session key; orders with the same key continue one conversation where the executor supports it.
    type: str
  priority:
    description:
      - Queue priority; higher runs first.
    type: int
  sender:
    description:
      - Who the order is from, recorded in the order's C(from) field and the audit trail.
    type: str
    default: ansible
  options:
    description:
      - Executor options, each passed as C(--option KEY=VALUE).
    type: dict
    default: {}
  wait:
    description:
      - Wait for the order to end and return its response.
      - When V(false) the module returns as soon as the order is queued.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the order to end when O(wait=true).
      - When they pass the module fails with the node's message, which names the order and its
        last known state; the order keeps running on the node.
    type: float
'''

EXAMPLES = r'''
- name: Ask web1 for its uptime through the shell executor
  galaxy_protocol.fleet.order:
    payload: uptime
    executor: shell
  register: __uptime

- name: Show the answer
  ansible.builtin.debug:
    msg: "{{ __uptime.answer }}"

- name: Give the coding agent a task and come back later
  galaxy_protocol.fleet.order:
    payload: Fix the failing test in the api project
    executor: opencode
    options:
      project: api
    wait: false
  register: __queued

- name: Wait at most ten minutes for a long order
  galaxy_protocol.fleet.order:
    payload: Run the full test suite and summarise failures
    timeout: 3600
    wait_timeout: 600
'''

RETURN = r'''
busy:
  description: True when the node refused the order because its queue was full (nothing was queued; retry later).
  returned: when the node was busy
  type: bool
  sample: true
id:
  description: The order id the node assigned.
  returned: when the order was submitted
  type: str
  sample: 20261128T192749.123456Z-3f9a1c2e
state:
  description:
    - The order's state when the module returned.
    - C(queued) when O(wait=false); otherwise one of C(done), C(failed), C(cancelled),
      C(timed_out), C(interrupted).
  returned: when the order was submitted
  type: str
  sample: done
exit_code:
  description: The exit code of the executor's process, where it has one.
  returned: when O(wait=true) and the order ended
  type: int
  sample: 0
answer:
  description:
    - The executor's answer (its output, capped at the node's C(worker.max_output_bytes)), as
      the node's worker recorded it.
  returned: when O(wait=true) and the order ended
  type: str
  sample: " 19:27:49 up 3 days,  2:01,  0 users,  load average: 0.00, 0.01, 0.00"
response:
  description:
    - The node's Markdown document of the order for people to read (the order, its figures and
      RV(answer) under a C(Response) heading). Read RV(answer) for the answer itself.
  returned: when O(wait=true) and the order ended
  type: str
  sample: "# Order 20261128T192749.123456Z-3f9a1c2e: done ..."
details:
  description: Executor-specific figures (tokens, cost, model, truncation, the reason of a failure).
  returned: when O(wait=true) and the order ended
  type: dict
  sample: {"truncated": false, "bytes_out": 71}
timings:
  description: Time stamps and durations of the order's life cycle.
  returned: when O(wait=true) and the order ended
  type: dict
  sample: {"started": "2026-11-28T19:27:49.123Z", "finished": "2026-11-28T19:27:49.301Z", "run_s": 0.01}
error:
  description: A one-line reason when the order did not end C(done).
  returned: when O(wait=true) and the order ended
  type: str
  sample: null
host:
  description: The node that ran the order.
  returned: when O(wait=true) and the order ended
  type: str
  sample: web1
executor:
  description: The executor that ran the order.
  returned: when O(wait=true) and the order ended
  type: str
  sample: shell
truncated:
  description: Whether the output was cut at the node's output limit.
  returned: when O(wait=true) and the order ended
  type: bool
  sample: false
rc:
  description: Exit code of C(galaxy order submit).
  returned: when the command ran
  type: int
  sample: 0
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.galaxy_protocol.fleet.plugins.module_utils._galaxy import (
    EXIT_BUSY,
    EXIT_INVALID,
    EXIT_NOT_DONE,
    EXIT_OK,
    EXIT_WAIT_GAVE_UP,
    GalaxyCLI,
    common_argument_spec,
)


def build_args(params):
    """The ``galaxy order submit`` arguments for the module's parameters; payload on stdin."""
    args = ['order', 'submit', '--json']
    for option, flag in (('target', '--target'), ('executor', '--executor'), ('timeout', '--timeout'),
                         ('session', '--session'), ('priority', '--priority'), ('sender', '--from')):
        if params[option] is not None:
            args += [flag, str(params[option])]
    for key in sorted(params['options']):
        args += ['--option', '%s=%s' % (key, params['options'][key])]
    if params['wait']:
        args.append('--wait')
        if params['wait_timeout'] is not None:
            args += ['--wait-timeout', str(params['wait_timeout'])]
    args.append('-')
    return args


def main():
    argument_spec = common_argument_spec()
    argument_spec.update(
        payload=dict(type='str', required=True),
        target=dict(type='str'),
        executor=dict(type='str'),
        timeout=dict(type='float'),
        session=dict(type='str'),
        priority=dict(type='int'),
        sender=dict(type='str', default='ansible'),
        options=dict(type='dict', default={}),
        wait=dict(type='bool', default=True),
        wait_timeout=dict(type='float'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if not params['payload'].strip():
        module.fail_json(msg='payload is empty: say what the order should do')
    for option in ('timeout', 'wait_timeout'):
        if params[option] is not None and params[option] <= 0:
            module.fail_json(msg='%s must be a positive number of seconds, got %s' % (option, params[option]))

    cli = GalaxyCLI(module)
    if module.check_mode:
        cli.argv([])  # still fail early when the command is missing
        module.exit_json(changed=True, msg='check mode: an order would be submitted')

    rc, out, err = cli.run(build_args(params), data=params['payload'])
    if rc == EXIT_INVALID:
        cli.fail('galaxy rejected the order', rc, out, err)
    if rc == EXIT_BUSY:
        # The node's queue is full: nothing was queued, so a later retry is safe.
        cli.fail('the node is busy, the order was not queued', rc, out, err, busy=True)
    if rc == EXIT_WAIT_GAVE_UP:
        # The order keeps running on the node; the CLI's message names it.
        cli.fail('waiting for the order', rc, out, err)
    if rc not in (EXIT_OK, EXIT_NOT_DONE) or (rc == EXIT_NOT_DONE and not out.strip()):
        cli.fail('galaxy order submit', rc, out, err)

    record = cli.parse_json('galaxy order submit', rc, out, err)
    if not isinstance(record, dict) or 'id' not in record:
        cli.fail('galaxy order submit: no order id in the answer', rc, out, err)
    result = dict(record, changed=True, rc=rc)

    if rc == EXIT_NOT_DONE:
        reason = record.get('error')
        details = record.get('details')
        if not reason and isinstance(details, dict):
            reason = details.get('error')
        answer = (record.get('answer') or '').strip()
        why = reason or answer[:500] or 'no answer'
        module.fail_json(msg='order %s ended %s: %s' % (result['id'], record.get('state'), why), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
