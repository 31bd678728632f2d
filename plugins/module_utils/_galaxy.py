# -*- coding: utf-8 -*-
# Copyright: Galaxy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the ``galaxy`` command on the target host and parse its JSON output.

Private to this collection: the modules order, health and audit share it.
"""

from __future__ import annotations

import json
import os
import pwd

# Exit codes of the galaxy CLI (see ``galaxy --help``).
EXIT_OK = 0
EXIT_NOT_DONE = 1
EXIT_INVALID = 2
EXIT_WAIT_GAVE_UP = 3
EXIT_BUSY = 5  # the node's queue is full: the order was not taken


def common_argument_spec():
    """Options every galaxy module takes (documented in the galaxy doc fragment)."""
    return dict(
        path=dict(type='path', default='/opt/galaxy/bin/galaxy'),
        config=dict(type='path'),
        run_as=dict(type='str', default='galaxy'),
    )


class GalaxyCLI:
    """The galaxy command of one host, run through ``module.run_command``."""

    def __init__(self, module):
        self.module = module
        self.path = module.params['path']
        self.config = module.params.get('config')

    def argv(self, args):
        if not (os.path.isfile(self.path) and os.access(self.path, os.X_OK)):
            self.module.fail_json(
                msg='galaxy command not found at %s: deploy the galaxy_protocol.fleet.node role '
                    'first, or set the path option' % self.path)
        argv = self.drop_privileges() + [self.path]
        if self.config:
            argv += ['--config', self.config]
        return argv + list(args)

    def drop_privileges(self):
        """The setpriv prefix that runs the command as ``run_as`` (empty when already that user).

        Files the command writes (orders, audit events) must belong to the
        account the worker runs as, not to root.
        """
        user = self.module.params.get('run_as')
        if not user:
            return []
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            self.module.fail_json(msg='run_as user %s does not exist on this host: set run_as to the account '
                                      'the galaxy services run as (galaxy_node_user)' % user)
        euid = os.geteuid()
        if euid == account.pw_uid:
            return []
        if euid != 0:
            self.module.fail_json(msg='running as uid %d cannot switch to %s: use become: true, or connect as %s'
                                      % (euid, user, user))
        setpriv = self.module.get_bin_path('setpriv', required=True)
        return [setpriv, '--reuid=%d' % account.pw_uid, '--regid=%d' % account.pw_gid, '--init-groups',
                '--reset-env', '--']

    def run(self, args, data=None):
        """Run ``galaxy ARGS``; return (rc, stdout, stderr). Never raises for a non-zero rc."""
        return self.module.run_command(self.argv(args), data=data, binary_data=data is not None,
                                       environ_update={'LC_ALL': 'C.UTF-8'})

    def fail(self, what, rc, out, err, **extra):
        """Fail the module with the CLI's own one-line explanation first."""
        reason = (err or '').strip() or (out or '').strip() or 'no output'
        self.module.fail_json(msg='%s failed (exit %s): %s' % (what, rc, reason),
                              rc=rc, stdout=out, stderr=err, **extra)

    def parse_json(self, what, rc, out, err):
        """Parse one JSON document from stdout, or fail the module saying what came back."""
        try:
            return json.loads(out)
        except ValueError as exc:
            self.fail('%s: unreadable JSON (%s)' % (what, exc), rc, out, err)

    def parse_json_lines(self, what, rc, out, err):
        """Parse stdout as JSON Lines (one object per non-empty line)."""
        records = []
        for number, line in enumerate(out.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                self.fail('%s: line %d is not JSON (%s)' % (what, number, exc), rc, out, err)
        return records
