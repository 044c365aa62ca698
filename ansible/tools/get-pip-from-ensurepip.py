# SPDX-License-Identifier: MIT OR Apache-2.0
"""Stand-in for the pip bootstrap script ansible-test downloads.

ansible-test builds each sanity test's virtualenv without pip, then runs
https://ci-files.testing.ansible.com/ansible-test/get-pip-VERSION.py in it, cached as
~/.ansible/test/cache/get_pip_VERSION.py. Where that host is unreachable (PyPI being
reachable), put this file at that cache path: it installs the pip that ships with the
interpreter (ensurepip), then lets it install the packages ansible-test asked for, the
pinned pip among them, from PyPI. Arguments are those of get-pip.py: pip install options.
"""
import ensurepip
import os
import subprocess
import sys

# ensurepip points PIP_CONFIG_FILE at /dev/null in os.environ; the install that follows must
# see the machine's pip configuration (index, CA certificates) again.
env = dict(os.environ)
ensurepip.bootstrap()
sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install'] + sys.argv[1:], env=env))
