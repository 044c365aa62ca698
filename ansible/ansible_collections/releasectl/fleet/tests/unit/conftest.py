# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

# Lets plain pytest import the collection the way Ansible does
# (ansible_collections.releasectl.fleet.plugins...): the directory holding
# `ansible_collections/` goes first on sys.path. ansible-test units sets that up itself,
# and then the path is already there.

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import sys

# tests/unit -> tests -> fleet -> releasectl -> ansible_collections -> the directory above
COLLECTIONS_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', '..'))

if COLLECTIONS_ROOT not in sys.path:
    sys.path.insert(0, COLLECTIONS_ROOT)
