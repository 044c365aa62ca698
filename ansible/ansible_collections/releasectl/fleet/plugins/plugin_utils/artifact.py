# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

# The controller's checks of releasectl.fleet.release's `artifact` option, for the action
# plugin: which task arguments it goes with, the SHA-256 of the file, and whether it is
# the one the task expects. Pure apart from reading the file.

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib

from ansible.module_utils.common.text.converters import to_bytes


def sha256_of(path):
    """The SHA-256 (hex) of the file at path, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(to_bytes(path, errors='surrogate_or_strict'), 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def artifact_args_problem(args, async_val):
    """Why the task's other arguments do not go with `artifact`, or None.

    args are the task's arguments without `artifact`.
    """
    if async_val:
        # The transferred copy is removed when the action ends, before an async job would run.
        return 'artifact cannot be used with async'
    if args.get('state') != 'staged':
        return 'artifact is only for state=staged'
    if args.get('src') is not None:
        return 'parameters are mutually exclusive: src|artifact'
    return None


def sha256_mismatch(artifact, digest, given):
    """The error when the task's `sha256` (any case, surrounding blanks) is not digest, or None."""
    if given and given.strip().lower() != digest:
        return 'artifact %s has SHA-256 %s, not the expected %s' % (artifact, digest, given)
    return None
