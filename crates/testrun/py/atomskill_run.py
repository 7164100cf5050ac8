"""Starts pytest so that neither pytest nor the modules it imports can come from the workspace.

Run as `python -P /workspace/.atomskill/atomskill_run.py ARGS` in place of `python -m pytest ARGS`.
The grader moves the project's import path out of `PYTHONPATH` (which the interpreter would put
ahead of the standard library at start-up) into `ATOMSKILL_PYTHONPATH`; `-P` keeps this file's
directory off the path. Then, in this order:

  1. pytest, its package `_pytest` and every module of it, pluggy, and the standard-library
     modules pytest reads lazily are imported from the environment, while the path holds only
     the standard library and site-packages;
  2. the working directory (as `python -m` would give it) and the project's directories are put
     on the path after the standard library and before site-packages: the project still shadows
     its own installed copy, as before, but no file of the workspace can stand in for a module of
     the standard library, and pytest's own modules are already loaded;
  3. `PYTHONPATH` is restored for processes the tests start, and pytest runs with ARGS.

An answer that adds a module named like one of the standard library or the environment is
refused by the grader before it ever gets here; this start makes such a module inert anyway.
"""
import os
import sys


def isolate():
    project_path = os.environ.pop("ATOMSKILL_PYTHONPATH", "")
    import importlib
    import pkgutil

    import _pytest
    import pluggy
    import pytest

    for info in pkgutil.walk_packages(_pytest.__path__, "_pytest."):
        try:
            importlib.import_module(info.name)
        except Exception:  # an optional part (a missing extra): pytest does without it too
            pass
    for name in ("xml.etree.ElementTree", "xml.sax.saxutils", "json", "platform", "traceback",
                 "inspect", "importlib.metadata", "unittest", "doctest", "pdb", "atexit"):
        try:
            importlib.import_module(name)
        except Exception:
            pass
    del pluggy
    site_index = next(
        (i for i, entry in enumerate(sys.path) if entry.endswith(("site-packages", "dist-packages"))),
        len(sys.path),
    )
    entries = [os.getcwd()] + [p for p in project_path.split(os.pathsep) if p]
    sys.path[site_index:site_index] = entries
    if project_path:
        os.environ["PYTHONPATH"] = project_path
    return pytest


def main():
    pytest = isolate()
    args = sys.argv[1:]
    sys.argv = ["pytest"] + args
    raise SystemExit(int(pytest.main(args)))


if __name__ == "__main__":
    main()
