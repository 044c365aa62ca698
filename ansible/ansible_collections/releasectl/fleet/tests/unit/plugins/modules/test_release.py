# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

# The module's argument handling: what AnsibleModule refuses before releasectl runs, and,
# when RELEASECTL_BINARY names a releasectl executable, one real query of an empty root.

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os

import pytest

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes
from ansible_collections.releasectl.fleet.plugins.modules import release


def run_module(monkeypatch, capsys, args):
    """Run the module's main() with args; return its exit status and its JSON answer."""
    args = dict(args, _ansible_remote_tmp='/tmp', _ansible_keep_remote_files=False)
    monkeypatch.setattr(basic, '_ANSIBLE_ARGS', to_bytes(json.dumps({'ANSIBLE_MODULE_ARGS': args})))
    with pytest.raises(SystemExit) as info:
        release.main()
    return info.value.code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('args, message', [
    ({'state': 'active'}, 'state is active but all of the following are missing: release'),
    ({'state': 'staged', 'src': '/tmp/x'}, 'state is staged but all of the following are missing: release'),
    ({'state': 'staged', 'release': 'v1'}, 'state is staged but any of the following are missing: src, artifact'),
    ({'app': 'web', 'root': '/srv/web'}, 'parameters are mutually exclusive: app|root'),
    ({'root': '/srv/web', 'config_dir': '/etc/x'}, 'parameters are mutually exclusive: root|config_dir'),
    ({'state': 'deployed'}, 'value of state must be one of: query, staged, active, rolled_back, got: deployed'),
    ({'state': 'staged', 'release': 'v1', 'artifact': '/tmp/a.tar'},
     'artifact is handled on the controller by the action plugin releasectl.fleet.release; call the module through it'),
])
def test_refused_before_releasectl_runs(monkeypatch, capsys, args, message):
    # The binary does not exist: any of these reaching releasectl would fail differently.
    code, out = run_module(monkeypatch, capsys, dict(args, binary='/nonexistent/releasectl'))
    assert code == 1
    assert out['failed'] is True
    assert out['msg'] == message


def test_a_binary_that_is_not_there_is_named(monkeypatch, capsys):
    code, out = run_module(monkeypatch, capsys, {'binary': 'releasectl-not-installed-anywhere'})
    assert code == 1
    assert 'releasectl-not-installed-anywhere' in out['msg']


@pytest.mark.skipif(not os.environ.get('RELEASECTL_BINARY'), reason='RELEASECTL_BINARY is not set')
def test_query_of_an_empty_root_with_real_releasectl(monkeypatch, capsys, tmp_path):
    code, out = run_module(monkeypatch, capsys, {'binary': os.environ['RELEASECTL_BINARY'], 'root': str(tmp_path)})
    assert code == 0, out
    assert out['changed'] is False
    assert out['current'] is None and out['releases'] == []
    assert out['before'] == out['after'] == out['state']
    assert out['rc'] == 0
