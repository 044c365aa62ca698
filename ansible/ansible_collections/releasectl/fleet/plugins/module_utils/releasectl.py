# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

# Running releasectl on the managed host for releasectl.fleet.release: the command line
# every call starts with, one run with --json and its single JSON document, and the facts
# (`status` plus `list`) the module reports before and after. Everything the module
# decides from those documents is in plan.py; this file only runs and reads.

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json


class ReleasectlError(Exception):
    """A releasectl run that failed: its message, exit status, document and output."""

    def __init__(self, msg, rc, doc, out, err):
        super(ReleasectlError, self).__init__(msg)
        self.msg = msg
        self.rc = rc
        self.doc = doc or {}
        self.out = out
        self.err = err


def base_argv(binary, root=None, config_dir=None):
    """The start of every command line: the executable, the app selection, --json."""
    argv = [binary]
    if root:
        argv += ['--root', root]
    if config_dir:
        argv += ['--config-dir', config_dir]
    argv.append('--json')
    return argv


def parse_document(command, rc, out, err, accept=(0,)):
    """The `result` of one run's JSON document, or ReleasectlError with its `error`.

    releasectl prints exactly one JSON object on stdout, also on failure; a run counts
    as a success only when its exit status is accepted and the document says so (`ok`,
    or a `result`). Anything else is a failure with releasectl's own one-line message
    when it gave one.
    """
    try:
        doc = json.loads(out)
    except ValueError:
        # No document: the last line of stderr is the best explanation there is.
        raise ReleasectlError('releasectl %s printed no JSON document (exit %d): %s'
                              % (command, rc, (err.strip().splitlines() or [''])[-1]), rc, None, out, err)
    if not isinstance(doc, dict):
        raise ReleasectlError('releasectl %s printed something other than a JSON object' % command, rc, None, out, err)
    if rc in accept and (doc.get('ok') or doc.get('result') is not None):
        return doc.get('result') or {}
    error = doc.get('error') or {}
    raise ReleasectlError(error.get('message') or 'releasectl %s failed (exit %d)' % (command, rc), rc, doc, out, err)


def facts_from(status, listing):
    """The module's facts from the `result`s of `status` and `list` for one app."""
    if 'apps' in status or 'apps' in listing:
        # Without an app, several configured apps give one report per app.
        raise ReleasectlError('several apps are configured; set app', 2, None, '', '')
    rels = listing.get('releases') or []
    return {
        'current': status.get('current'),
        'previous': status.get('previous'),
        'last_good': status.get('last_good'),
        'bad': [r['id'] for r in rels if r.get('bad')],
        'releases': [r['id'] for r in rels],
        'pending': status.get('pending'),
        'lock_holder': status.get('lock_holder'),
        'interrupted': bool(status.get('interrupted')),
    }


class Releasectl(object):
    """releasectl for one module run: runs commands, keeps their stderr."""

    def __init__(self, module):
        self.module = module
        p = module.params
        binary = p['binary']
        if '/' not in binary:
            binary = module.get_bin_path(binary, required=True)
        self.argv = base_argv(binary, p['root'], p['config_dir'])
        self.stderr = []

    def run(self, args, accept=(0,)):
        """Run one command; return its `result`, or raise ReleasectlError with its `error`."""
        rc, out, err = self.module.run_command(self.argv + args)
        if err:
            self.stderr.append(err)
        return parse_document(args[0], rc, out, err, accept)

    def query(self):
        app = [self.module.params['app']] if self.module.params['app'] else []
        # status exits 13 for an interrupted activation, still with its report.
        status = self.run(['status'] + app, accept=(0, 13))
        listing = self.run(['list'] + app)
        return facts_from(status, listing)
