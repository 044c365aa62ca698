#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: release
short_description: Stage, activate or roll back a release with releasectl
version_added: 0.1.0
description:
  - Runs the C(releasectl) command line on the managed host with C(--json) and reports its
    single JSON document. Nothing is decided here that releasectl does not decide itself -
    locking, the atomic switch of C(current), reloading the units, the health check and the
    rollback on failure all happen inside one releasectl run.
  - With O(state=query) it reads C(status) and C(list) and changes nothing.
  - With O(state=staged) it stages O(src) as release O(release). Staging the same content
    under the same id again is not a change; different content under an existing id fails.
  - With O(state=staged) and O(artifact) instead of O(src), the archive comes from the
    controller. The controller hashes it, puts it in the remote temporary directory and
    stages it from there with C(--sha256) in the same module run, then removes it.
  - With O(state=active) it activates O(release); with O(state=rolled_back) it goes back
    to the previous good release, or to O(release).
  - O(expect_current) makes the switch a compare-and-swap. releasectl refuses, changing
    nothing, unless C(current) is that release right now; the failure's RV(current) says
    what it found.
  - In check mode releasectl runs with C(--dry-run), which validates the request and
    changes nothing.
options:
  app:
    description:
      - Name of a configured app (C(/etc/releasectl/APP.toml), or in O(config_dir)).
      - Without O(app) and O(root), releasectl uses the single configured app.
    type: str
  root:
    description:
      - Root directory of an ad hoc app (no config file). The directory must exist.
    type: path
  config_dir:
    description:
      - Read app configs from this directory instead of C(/etc/releasectl).
    type: path
  binary:
    description:
      - The releasectl executable, a name looked up in E(PATH) and the usual sbin
        directories, or a path.
    type: str
    default: releasectl
  state:
    description:
      - V(query) reports the app's state and changes nothing.
      - V(staged) makes sure release O(release) exists with the content of O(src).
      - V(active) makes sure O(release) is the current release.
      - V(rolled_back) rolls back (C(releasectl rollback)), to O(release) if given.
        This always switches when it succeeds, and marks the release it leaves as bad.
    type: str
    choices: [query, staged, active, rolled_back]
    default: query
  release:
    description:
      - Release id. Required for O(state=staged) and O(state=active).
      - For O(state=rolled_back) the release to go back to (C(--to)); without it,
        releasectl picks the previous good release.
    type: str
  src:
    description:
      - Directory or C(.tar), C(.tar.gz) or C(.tar.zst) archive on the managed host to stage.
      - For O(state=staged) one of O(src) and O(artifact) is required.
    type: path
  artifact:
    description:
      - A C(.tar), C(.tar.gz) or C(.tar.zst) archive on the controller to stage, with
        O(state=staged). A relative path is searched for the way M(ansible.builtin.copy)
        searches for its C(src) (a C(files/) directory, then the playbook's directory). A
        vault-encrypted file is decrypted first.
      - The controller computes its SHA-256 and transfers it into Ansible's remote temporary
        directory (C(remote_tmp)), which is removed after the run; the file keeps its name,
        from which releasectl tells the archive format. Nothing is kept on the host but the
        staged release.
      - The transfer happens in check mode too (it changes nothing on the host), so that
        C(stage --dry-run) can compare the content with a release already staged under
        the same id.
      - Not with async.
    type: path
  sha256:
    description:
      - Expected SHA-256 (hex) of the O(src) archive; releasectl refuses other bytes.
      - With O(artifact), the controller computes it; if given, it must match the artifact.
    type: str
  meta:
    description:
      - Key/value pairs recorded with a newly staged release (C(--meta K=V)).
    type: dict
  expect_current:
    description:
      - Only switch if C(current) is this release right now (C(--expect-current)).
      - An empty string means there must be no current release.
      - Not set (null) means no guard.
      - Used with O(state=active) and O(state=rolled_back).
    type: str
  no_health:
    description:
      - Skip the configured health check (C(--no-health)).
    type: bool
    default: false
  no_reload:
    description:
      - Do not act on the configured units (C(--no-reload)).
    type: bool
    default: false
  lock_timeout:
    description:
      - Seconds to wait for the app's lock (C(--lock-timeout)); releasectl's default is 60.
    type: int
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
    details: O(artifact) is read, hashed and transferred by the controller.
  async:
    description: Supports being used with the C(async) keyword.
    support: partial
    details: Not with O(artifact).
  bypass_host_loop:
    description: Forces a 'global' task that does not execute per host.
    support: none
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: releasectl runs with C(--dry-run).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
notes:
  - Exit statuses and error kinds are releasectl's own; see C(releasectl(1)).
  - RV(before) and RV(after) come from C(releasectl status --json) and C(releasectl list --json).
    In check mode RV(after) is the predicted state.
requirements:
  - releasectl on the managed host
author:
  - releasectl maintainers <releasectl@lists.example.org> (!UNKNOWN)
'''

EXAMPLES = r'''
- name: What is live on each host
  releasectl.fleet.release:
    app: web
  register: web

- name: Stage an uploaded archive as release v2
  releasectl.fleet.release:
    app: web
    state: staged
    release: v2
    src: /var/tmp/releasectl/v2/web.tar.zst
    sha256: "{{ artifact_sha256 }}"
    meta:
      git: 3f9c2e1

- name: Copy an archive from the controller and stage it as release v2, in one module run
  releasectl.fleet.release:
    app: web
    state: staged
    release: v2
    artifact: build/web.tar.zst

- name: Switch to v2, but only if v1 is still what is live
  releasectl.fleet.release:
    app: web
    state: active
    release: v2
    expect_current: v1

- name: First release of a fresh host (there must be no current release)
  releasectl.fleet.release:
    root: /srv/static
    state: active
    release: v1
    expect_current: ''

- name: Go back to v1, unless someone moved the host off v2 meanwhile
  releasectl.fleet.release:
    app: web
    state: rolled_back
    release: v1
    expect_current: v2
'''

RETURN = r'''
current:
  description: The current release after the run (null when there is none).
  returned: always
  type: str
  sample: v2
previous:
  description: The release C(current) was last switched away from.
  returned: always
  type: str
  sample: v1
last_good:
  description: The newest release whose activation committed.
  returned: always
  type: str
  sample: v2
bad:
  description: Ids of releases marked bad.
  returned: always
  type: list
  elements: str
  sample: [v0]
releases:
  description: Ids of all releases, newest first.
  returned: always
  type: list
  elements: str
  sample: [v2, v1, v0]
pending:
  description: The intent record of an activation in flight or interrupted, else null.
  returned: always
  type: dict
lock_holder:
  description: Who holds the app's lock, else null.
  returned: always
  type: raw
interrupted:
  description: Whether an interrupted activation waits for C(releasectl recover).
  returned: always
  type: bool
state:
  description: The same facts (current ... interrupted) as one dictionary.
  returned: always
  type: dict
  sample: {current: v2, previous: v1, last_good: v2, bad: [], releases: [v2, v1], pending: null, lock_holder: null, interrupted: false}
before:
  description: The facts (as RV(state)) before the run; for V(query), the same as RV(after).
  returned: always, also on failure once they could be read
  type: dict
after:
  description: The facts after the run (predicted in check mode).
  returned: always, also on failure once they could be read
  type: dict
result:
  description: The C(result) object of releasectl's JSON document for the acting command.
  returned: when O(state) is not V(query) and releasectl made a report
  type: dict
  sample: {app: web, root: /srv/web, release: v2, previous: v1, outcome: activated}
rc:
  description: releasectl's exit status (0 ok, 1 operational, 2 usage or bad input, 10 lock busy,
    11 activation failed and previous restored, 12 rollback failed, 14 verify mismatch).
  returned: always
  type: int
  sample: 0
kind:
  description: releasectl's error kind (V(usage), V(lock_busy), V(activation_failed), V(rollback_failed),
    V(needs_recovery), V(verify_failed), V(operational)). An O(expect_current) mismatch is V(usage).
  returned: failure
  type: str
  sample: usage
stdout:
  description: releasectl's standard output (its JSON document).
  returned: failure
  type: str
stderr:
  description: releasectl's log lines.
  returned: always
  type: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.releasectl.fleet.plugins.module_utils.plan import changed_by, command, predict, render
from ansible_collections.releasectl.fleet.plugins.module_utils.releasectl import Releasectl, ReleasectlError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app=dict(type='str'),
            root=dict(type='path'),
            config_dir=dict(type='path'),
            binary=dict(type='str', default='releasectl'),
            state=dict(type='str', default='query', choices=['query', 'staged', 'active', 'rolled_back']),
            release=dict(type='str'),
            src=dict(type='path'),
            artifact=dict(type='path'),
            sha256=dict(type='str'),
            meta=dict(type='dict'),
            expect_current=dict(type='str'),
            no_health=dict(type='bool', default=False),
            no_reload=dict(type='bool', default=False),
            lock_timeout=dict(type='int'),
        ),
        mutually_exclusive=[('app', 'root'), ('root', 'config_dir'), ('src', 'artifact')],
        required_if=[
            ('state', 'staged', ('release',)),
            ('state', 'staged', ('src', 'artifact'), True),
            ('state', 'active', ('release',)),
        ],
        supports_check_mode=True,
    )
    state = module.params['state']
    if module.params['artifact'] is not None:
        # The action plugin of the same name replaces it with src before the module runs.
        module.fail_json(msg='artifact is handled on the controller by the action plugin '
                             'releasectl.fleet.release; call the module through it')
    ctl = Releasectl(module)
    before = after = result = None
    try:
        before = ctl.query()
        if state == 'query':
            after = before
            rc, changed = 0, False
        else:
            rc = 0
            result = ctl.run(command(module.params, module.check_mode))
            changed = changed_by(state, result, module.check_mode)
            after = predict(before, state, result) if module.check_mode else ctl.query()
    except ReleasectlError as e:
        if before is not None and after is None:
            try:
                after = ctl.query()
            except ReleasectlError:
                pass
        error = e.doc.get('error') or {}
        module.fail_json(msg=e.msg, rc=e.rc, kind=error.get('kind'), current=error.get('current'),
                         pending=error.get('pending'), result=e.doc.get('result'),
                         stdout=e.out, stderr=''.join(ctl.stderr), before=before, after=after)

    ret = dict(after)
    ret.update(changed=changed, rc=rc, state=after, before=before, after=after,
               stderr=''.join(ctl.stderr))
    if result is not None:
        ret['result'] = result
    if module._diff:
        ret['diff'] = {'before': render(before), 'after': render(after)}
    module.exit_json(**ret)


if __name__ == '__main__':
    main()
