"""pytest plugin (loaded by atomskill with `-p atomskill_cov`): records which functions of the
project each test calls, as (root-relative file, first line of the code object).

Calls made outside any test (at import or collection time) are recorded under "<outside>": a
mutation of such a function can change every test, so its validation runs the whole suite.
"""
import json
import os
import sys
import threading

import pytest

_ROOT = os.environ["ATOMSKILL_COV_ROOT"].rstrip("/") + "/"
_OUT = os.environ["ATOMSKILL_COV_OUT"]
_current = ["<outside>"]
_calls = {}


def _profile(frame, event, arg):
    if event == "call":
        code = frame.f_code
        filename = code.co_filename
        if filename.startswith(_ROOT):
            key = (filename[len(_ROOT):], code.co_firstlineno)
            _calls.setdefault(_current[0], set()).add(key)


def pytest_configure(config):
    sys.setprofile(_profile)
    threading.setprofile(_profile)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current[0] = item.nodeid
    yield
    _current[0] = "<outside>"


def pytest_unconfigure(config):
    sys.setprofile(None)
    threading.setprofile(None)
    data = {test: sorted([list(k) for k in keys]) for test, keys in _calls.items()}
    with open(_OUT, "w") as out:
        json.dump(data, out)
