# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

# The decisions of releasectl.fleet.release, as pure functions of its parameters and of
# releasectl's documents: which command line to run, whether the run changed anything,
# what a dry run predicts, and the text of the diff. Nothing here runs a process.

from __future__ import absolute_import, division, print_function
__metaclass__ = type

FACT_KEYS = ('current', 'previous', 'last_good', 'bad', 'releases', 'pending', 'lock_holder', 'interrupted')
# The outcomes of activate and rollback (real and dry run) that switch `current`.
SWITCHED = ('activated', 'would_activate')


def command(params, check_mode):
    """releasectl's arguments (after the base argv) for the module's state."""
    p = params
    state = p['state']
    app = [p['app']] if p['app'] else []
    dry = ['--dry-run'] if check_mode else []
    guard = ['--expect-current', p['expect_current']] if p['expect_current'] is not None else []
    switch = guard + dry
    if p['no_health']:
        switch.append('--no-health')
    if p['no_reload']:
        switch.append('--no-reload')
    if p['lock_timeout'] is not None:
        switch += ['--lock-timeout', str(p['lock_timeout'])]
    if state == 'staged':
        args = ['stage', '--id', p['release']] + (['--app'] + app if app else [])
        if p['sha256']:
            args += ['--sha256', p['sha256']]
        for key, value in sorted((p['meta'] or {}).items()):
            args += ['--meta', '%s=%s' % (key, value)]
        return args + dry + [p['src']]
    if state == 'active':
        target = '%s:%s' % (p['app'], p['release']) if p['app'] else p['release']
        return ['activate', target] + switch
    to = ['--to', p['release']] if p['release'] else []
    return ['rollback'] + app + to + switch


def changed_by(state, result, check_mode):
    """Whether the acting command's `result` is a change (or would be, in check mode)."""
    if state == 'staged':
        # A dry run reports would_stage or unchanged; a real one says `unchanged: true`
        # when the same content was already staged under the id.
        if check_mode:
            return result.get('outcome') != 'unchanged'
        return not result.get('unchanged', False)
    return result.get('outcome') in SWITCHED


def predict(before, state, result):
    """The state a dry run says the real run would leave."""
    after = dict(before, releases=list(before['releases']), bad=list(before['bad']))
    release = result.get('release')
    if state == 'staged' and result.get('outcome') == 'would_stage' and release not in after['releases']:
        after['releases'].insert(0, release)
    elif state in ('active', 'rolled_back') and result.get('outcome') in SWITCHED:
        after['previous'] = before['current']
        after['current'] = release
        if state == 'rolled_back' and before['current'] and before['current'] not in after['bad']:
            after['bad'].append(before['current'])
    return after


def render(facts):
    """The facts as the text of a diff side."""
    if facts is None:
        return ''
    return 'current: %s\nreleases: %s\n' % (facts['current'] or '(none)', ' '.join(facts['releases']) or '(none)')
