# -*- coding: utf-8 -*-
# Copyright: Galaxy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""health_table: health results of many hosts as the lines of one text table."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def _row(host, result):
    if not isinstance(result, Mapping) or not result:
        return host, 'UNKNOWN', '-', 'not checked'
    if result.get('unreachable'):
        return host, 'UNREACHABLE', '-', ' '.join(str(result.get('msg', '')).split())[:120]
    checks = result.get('checks')
    if 'healthy' not in result or not isinstance(checks, list):
        return host, 'ERROR', '-', ' '.join(str(result.get('msg', 'no health report')).split())[:120]
    passed = sum(1 for check in checks if isinstance(check, Mapping) and check.get('ok'))
    failing = ['%s: %s' % (check.get('name', '?'), check.get('message', ''))
               for check in checks if isinstance(check, Mapping) and not check.get('ok')]
    # the node's status by the shared rule (galaxy_fleet.node_status); a problem in capitals
    status = str(result.get('status') or ('healthy' if result['healthy'] else 'degraded'))
    status = status if status == 'healthy' else status.upper()
    return host, status, '%d/%d' % (passed, len(checks)), '; '.join(failing) or '-'


def health_table(results):
    """Lines of a table, one row per host of a mapping of host to health module result."""
    if not isinstance(results, Mapping):
        raise AnsibleFilterError('health_table expects a mapping of host to health result, got %s'
                                 % type(results).__name__)
    rows = [('NODE', 'STATUS', 'CHECKS', 'FAILING')] + [_row(str(host), results[host]) for host in sorted(results)]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return ['%-*s  %-*s  %-*s  %s' % (widths[0], row[0], widths[1], row[1], widths[2], row[2], row[3])
            for row in rows]


class FilterModule:
    def filters(self):
        return {'health_table': health_table}
