# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

# Reading releasectl's JSON envelope (module_utils/releasectl.py): which runs count as a
# success, what a failure reports, and the facts taken from `status` and `list`.

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json

import pytest

from ansible_collections.releasectl.fleet.plugins.module_utils.releasectl import (
    ReleasectlError,
    base_argv,
    facts_from,
    parse_document,
)


def envelope(command, exit_code, result=None, error=None):
    """A document shaped like releasectl's `--json` output (schema releasectl.v1)."""
    doc = {'schema': 'releasectl.v1', 'command': command, 'ok': exit_code == 0, 'exit_code': exit_code}
    if result is not None:
        doc['result'] = result
    if error is not None:
        doc['error'] = error
    return json.dumps(doc, indent=2)


def test_base_argv_adds_root_or_config_dir_before_json():
    assert base_argv('/usr/bin/releasectl') == ['/usr/bin/releasectl', '--json']
    assert base_argv('rctl', root='/srv/web') == ['rctl', '--root', '/srv/web', '--json']
    assert base_argv('rctl', config_dir='/etc/x') == ['rctl', '--config-dir', '/etc/x', '--json']


def test_success_returns_the_result():
    result = {'app': 'web', 'release': 'v2', 'unchanged': False}
    assert parse_document('stage', 0, envelope('stage', 0, result), '') == result


def test_success_without_result_is_an_empty_result():
    out = json.dumps({'schema': 'releasectl.v1', 'command': 'prune', 'ok': True, 'exit_code': 0})
    assert parse_document('prune', 0, out, '') == {}


def test_failure_carries_releasectl_message_kind_and_document():
    error = {'kind': 'usage', 'message': 'current is v1, not v0 as --expect-current requires; nothing changed',
             'current': 'v1', 'pending': None}
    out = envelope('activate', 2, error=error)
    with pytest.raises(ReleasectlError) as info:
        parse_document('activate', 2, out, 'releasectl: error: ...\n')
    e = info.value
    assert e.msg == error['message']
    assert e.rc == 2
    assert e.doc['error']['kind'] == 'usage'
    assert e.doc['error']['current'] == 'v1'
    assert e.out == out
    assert e.err == 'releasectl: error: ...\n'


def test_failure_without_message_names_command_and_exit_status():
    with pytest.raises(ReleasectlError) as info:
        parse_document('activate', 11, envelope('activate', 11, error={'kind': 'activation_failed'}), '')
    assert info.value.msg == 'releasectl activate failed (exit 11)'
    assert info.value.rc == 11


def test_exit_status_not_accepted_is_a_failure_even_with_a_result():
    # status exits 13 for an interrupted activation with a full report: only accepted
    # where the caller says so.
    out = envelope('status', 13, result={'current': 'v1', 'interrupted': True})
    with pytest.raises(ReleasectlError) as info:
        parse_document('status', 13, out, '')
    assert info.value.rc == 13
    assert parse_document('status', 13, out, '', accept=(0, 13)) == {'current': 'v1', 'interrupted': True}


def test_exit_zero_with_ok_false_and_no_result_is_a_failure():
    out = json.dumps({'ok': False, 'error': {'message': 'odd'}})
    with pytest.raises(ReleasectlError) as info:
        parse_document('list', 0, out, '')
    assert info.value.msg == 'odd'


def test_no_json_reports_the_last_stderr_line():
    with pytest.raises(ReleasectlError) as info:
        parse_document('list', 127, '', 'sh: 1: something\nreleasectl: not found\n')
    assert info.value.msg == 'releasectl list printed no JSON document (exit 127): releasectl: not found'
    assert info.value.doc == {}
    with pytest.raises(ReleasectlError) as info:
        parse_document('list', 1, 'Segmentation fault', '')
    assert info.value.msg == 'releasectl list printed no JSON document (exit 1): '


def test_json_that_is_not_an_object_is_a_failure():
    with pytest.raises(ReleasectlError) as info:
        parse_document('list', 0, '[1, 2]', '')
    assert info.value.msg == 'releasectl list printed something other than a JSON object'


STATUS = {'app': 'web', 'current': 'v2', 'previous': 'v1', 'last_good': 'v2', 'pending': None,
          'lock_holder': None, 'interrupted': False}
LISTING = {'releases': [{'id': 'v3', 'bad': True}, {'id': 'v2'}, {'id': 'v1', 'bad': False}]}


def test_facts_from_status_and_list():
    assert facts_from(STATUS, LISTING) == {
        'current': 'v2', 'previous': 'v1', 'last_good': 'v2',
        'bad': ['v3'], 'releases': ['v3', 'v2', 'v1'],
        'pending': None, 'lock_holder': None, 'interrupted': False,
    }


def test_facts_of_an_empty_root():
    facts = facts_from({'current': None}, {'releases': []})
    assert facts['current'] is None
    assert facts['releases'] == [] and facts['bad'] == []
    assert facts['interrupted'] is False


def test_several_apps_need_app():
    with pytest.raises(ReleasectlError) as info:
        facts_from({'apps': [STATUS, STATUS]}, LISTING)
    assert info.value.msg == 'several apps are configured; set app'
    assert info.value.rc == 2
