# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

# The controller's checks of the `artifact` option (plugin_utils/artifact.py).

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib

import pytest

from ansible_collections.releasectl.fleet.plugins.plugin_utils.artifact import (
    artifact_args_problem,
    sha256_mismatch,
    sha256_of,
)


def test_sha256_of_a_file_larger_than_one_block(tmp_path):
    data = b'releasectl\n' * 200000  # 2.2 MB: three 1 MiB reads
    path = tmp_path / 'web.tar.gz'
    path.write_bytes(data)
    assert sha256_of(str(path)) == hashlib.sha256(data).hexdigest()


def test_sha256_of_an_empty_file(tmp_path):
    path = tmp_path / 'empty.tar'
    path.write_bytes(b'')
    assert sha256_of(str(path)) == hashlib.sha256(b'').hexdigest()


@pytest.mark.parametrize('args, async_val, problem', [
    ({'state': 'staged', 'release': 'v1'}, 0, None),
    ({'state': 'staged', 'release': 'v1'}, 30, 'artifact cannot be used with async'),
    ({'state': 'active', 'release': 'v1'}, 0, 'artifact is only for state=staged'),
    ({'release': 'v1'}, 0, 'artifact is only for state=staged'),
    ({'state': 'staged', 'release': 'v1', 'src': '/tmp/x'}, 0, 'parameters are mutually exclusive: src|artifact'),
])
def test_artifact_args_problem(args, async_val, problem):
    assert artifact_args_problem(args, async_val) == problem


DIGEST = hashlib.sha256(b'x').hexdigest()


def test_sha256_given_in_another_case_or_with_blanks_matches():
    assert sha256_mismatch('a.tar', DIGEST, None) is None
    assert sha256_mismatch('a.tar', DIGEST, '') is None
    assert sha256_mismatch('a.tar', DIGEST, ' %s\n' % DIGEST.upper()) is None


def test_another_sha256_is_refused_naming_both():
    assert sha256_mismatch('a.tar', DIGEST, '0' * 64) == \
        'artifact a.tar has SHA-256 %s, not the expected %s' % (DIGEST, '0' * 64)
