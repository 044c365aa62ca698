# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

# The module's decisions (module_utils/plan.py): the command line for each state, changed
# or not, the state a dry run predicts, and the diff text.

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.releasectl.fleet.plugins.module_utils.plan import (
    changed_by,
    command,
    predict,
    render,
)


def params(**kw):
    """The module's parameters with its defaults, as AnsibleModule hands them over."""
    p = dict(app=None, root=None, config_dir=None, binary='releasectl', state='query', release=None,
             src=None, artifact=None, sha256=None, meta=None, expect_current=None,
             no_health=False, no_reload=False, lock_timeout=None)
    p.update(kw)
    return p


# --- command -------------------------------------------------------------------------

def test_stage_with_app_sha256_and_sorted_meta():
    p = params(state='staged', app='web', release='v2', src='/tmp/web.tar.zst', sha256='ab' * 32,
               meta={'git': '3f9c2e1', 'by': 'ci'})
    assert command(p, False) == ['stage', '--id', 'v2', '--app', 'web', '--sha256', 'ab' * 32,
                                 '--meta', 'by=ci', '--meta', 'git=3f9c2e1', '/tmp/web.tar.zst']


def test_stage_in_check_mode_is_a_dry_run_and_ignores_switch_options():
    p = params(state='staged', release='v2', src='/tmp/src', expect_current='v1', no_health=True, lock_timeout=5)
    assert command(p, True) == ['stage', '--id', 'v2', '--dry-run', '/tmp/src']


def test_activate_names_app_and_release_together():
    assert command(params(state='active', app='web', release='v2'), False) == ['activate', 'web:v2']
    assert command(params(state='active', release='v2'), False) == ['activate', 'v2']


def test_activate_with_every_switch_option():
    p = params(state='active', release='v2', expect_current='v1', no_health=True, no_reload=True, lock_timeout=0)
    assert command(p, True) == ['activate', 'v2', '--expect-current', 'v1', '--dry-run',
                                '--no-health', '--no-reload', '--lock-timeout', '0']


def test_empty_expect_current_is_a_guard_none_is_not():
    assert command(params(state='active', release='v1', expect_current=''), False) == \
        ['activate', 'v1', '--expect-current', '']
    assert '--expect-current' not in command(params(state='active', release='v1'), False)


def test_rollback_with_and_without_to():
    assert command(params(state='rolled_back', app='web', release='v1', expect_current='v2'), False) == \
        ['rollback', 'web', '--to', 'v1', '--expect-current', 'v2']
    assert command(params(state='rolled_back'), False) == ['rollback']


# --- changed_by ----------------------------------------------------------------------

@pytest.mark.parametrize('state, result, check_mode, changed', [
    ('staged', {'release': 'v2', 'unchanged': False}, False, True),
    ('staged', {'release': 'v2', 'unchanged': True}, False, False),
    ('staged', {'release': 'v2'}, False, True),
    ('staged', {'release': 'v2', 'outcome': 'would_stage'}, True, True),
    ('staged', {'release': 'v2', 'outcome': 'unchanged'}, True, False),
    ('active', {'outcome': 'activated'}, False, True),
    ('active', {'outcome': 'already_active'}, False, False),
    ('active', {'outcome': 'would_activate'}, True, True),
    ('active', {'outcome': 'would_deploy'}, True, False),
    ('rolled_back', {'outcome': 'activated'}, False, True),
    ('rolled_back', {'outcome': 'already_active'}, False, False),
])
def test_changed_by(state, result, check_mode, changed):
    assert changed_by(state, result, check_mode) is changed


# --- predict -------------------------------------------------------------------------

BEFORE = {'current': 'v1', 'previous': 'v0', 'last_good': 'v1', 'bad': [], 'releases': ['v1', 'v0'],
          'pending': None, 'lock_holder': None, 'interrupted': False}


def test_predict_would_stage_adds_the_release_newest_first():
    after = predict(BEFORE, 'staged', {'release': 'v2', 'outcome': 'would_stage'})
    assert after['releases'] == ['v2', 'v1', 'v0']
    assert after['current'] == 'v1'
    assert BEFORE['releases'] == ['v1', 'v0'], 'before must not be changed'


def test_predict_unchanged_stage_changes_nothing():
    assert predict(BEFORE, 'staged', {'release': 'v1', 'outcome': 'unchanged'}) == BEFORE


def test_predict_activation_moves_current_and_previous():
    after = predict(BEFORE, 'active', {'release': 'v0', 'outcome': 'would_activate'})
    assert (after['current'], after['previous']) == ('v0', 'v1')
    assert after['bad'] == []


def test_predict_already_active_changes_nothing():
    assert predict(BEFORE, 'active', {'release': 'v1', 'outcome': 'already_active'}) == BEFORE


def test_predict_rollback_marks_the_release_left_bad_once():
    after = predict(BEFORE, 'rolled_back', {'release': 'v0', 'outcome': 'would_activate'})
    assert (after['current'], after['previous'], after['bad']) == ('v0', 'v1', ['v1'])
    assert BEFORE['bad'] == [], 'before must not be changed'
    again = predict(dict(BEFORE, bad=['v1']), 'rolled_back', {'release': 'v0', 'outcome': 'would_activate'})
    assert again['bad'] == ['v1']


def test_predict_rollback_from_no_release_marks_nothing():
    before = dict(BEFORE, current=None)
    after = predict(before, 'rolled_back', {'release': 'v0', 'outcome': 'would_activate'})
    assert after['bad'] == [] and after['current'] == 'v0'


# --- render --------------------------------------------------------------------------

def test_render():
    assert render(None) == ''
    assert render(BEFORE) == 'current: v1\nreleases: v1 v0\n'
    assert render(dict(BEFORE, current=None, releases=[])) == 'current: (none)\nreleases: (none)\n'
