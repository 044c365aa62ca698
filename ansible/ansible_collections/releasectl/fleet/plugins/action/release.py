# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

# The controller side of releasectl.fleet.release. Without `artifact` it only runs the
# module. With `artifact` (state=staged) it hashes the file on the controller, puts it in
# the remote temporary directory, and stages it from there in the same module run: one
# module execution instead of a stat, a copy and a stage.

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible.errors import AnsibleAction, AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible_collections.releasectl.fleet.plugins.plugin_utils.artifact import (
    artifact_args_problem,
    sha256_mismatch,
    sha256_of,
)

MODULE = 'releasectl.fleet.release'


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # no longer has any effect

        args = self._task.args.copy()
        artifact = args.pop('artifact', None)
        if artifact is None:
            wrap_async = self._task.async_val and not self._connection.has_native_async
            result = merge_hash(result, self._execute_module(module_name=MODULE, module_args=args,
                                                             task_vars=task_vars, wrap_async=wrap_async))
            if not wrap_async:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            return result

        try:
            problem = artifact_args_problem(args, self._task.async_val)
            if problem:
                raise AnsibleActionFail(problem)
            try:
                found = self._find_needle('files', artifact)
                if not os.path.isfile(found):
                    raise AnsibleActionFail('artifact %s is not a file on the controller' % artifact)
                # A vault-encrypted artifact is decrypted into a temporary file.
                source = self._loader.get_real_file(found)
            except AnsibleActionFail:
                raise
            except AnsibleError as e:
                # Its first line; the rest is about remote_src, an option of copy.
                raise AnsibleActionFail('artifact: %s' % to_text(e).splitlines()[0])
            digest = sha256_of(source)
            mismatch = sha256_mismatch(artifact, digest, args.get('sha256'))
            if mismatch:
                raise AnsibleActionFail(mismatch)

            # The file keeps its name: releasectl tells .tar, .tar.gz and .tar.zst apart by it.
            # A transfer into the temporary directory changes nothing on the host, so it is
            # done in check mode too: stage --dry-run compares the content with an already
            # staged release of the same id.
            if self._connection._shell.tmpdir is None:
                self._make_tmp_path()
            remote = self._connection._shell.join_path(self._connection._shell.tmpdir, os.path.basename(found))
            self._transfer_file(source, remote)
            self._fixup_perms2((self._connection._shell.tmpdir, remote))

            args.update(src=remote, sha256=digest)
            result = merge_hash(result, self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
        except AnsibleAction as e:
            result = merge_hash(result, e.result)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
            self._loader.cleanup_all_tmp_files()
        return result
