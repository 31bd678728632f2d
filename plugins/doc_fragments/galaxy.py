# -*- coding: utf-8 -*-
# Copyright: Galaxy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Options shared by every module that runs the galaxy CLI on the target."""

    DOCUMENTATION = r'''
options:
  path:
    description:
      - Path of the C(galaxy) command on the target host.
      - The node and control roles install it in the C(/opt/galaxy) virtual environment.
    type: path
    default: /opt/galaxy/bin/galaxy
  config:
    description:
      - Configuration file passed to C(galaxy --config).
      - When omitted the command uses C($GALAXY_CONFIG) or C(/etc/galaxy/config.yml).
    type: path
  run_as:
    description:
      - Account to run the command as, so that what it writes (orders, audit events) belongs to the
        account the Galaxy services run as. The module must run as root (with C(become)) to switch,
        or already as that account.
      - Set to an empty string to run as whatever user the module runs as.
    type: str
    default: galaxy
requirements:
  - The C(galaxy) command of the C(galaxy-fleet) Python package on the target host
    (deployed by the P(galaxy_protocol.fleet.node#role) role).
  - C(setpriv) (util-linux) on the target host when O(run_as) names another account.
notes:
  - The module runs the C(galaxy) command on the target host and parses its JSON output;
    it never reads the node's spool or audit files directly.
'''
