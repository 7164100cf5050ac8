"""pytest plugin that every pytest run atomskill makes loads (`-p atomskill_seed`).

Before each phase of each test (setup, call, teardown) it seeds Python's global `random`
generator, and NumPy's legacy global generator when NumPy is already imported, with one fixed
seed, as pytest-randomly does (without reordering anything). A test that draws random numbers
then gets the same ones in every run, whichever tests ran before it and whichever process runs
it: the fresh pytest of a slow-path grading run, a forked child of the mutant runner, the
baseline's three runs. Without it a test's outcome on a mutant can depend on the draw (a cache
that evicts a random key, say), and a label or reward measured once would not hold the next
time.
"""
import random
import sys

import pytest

SEED = 20260422


def reseed():
    random.seed(SEED)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        try:
            numpy.random.seed(SEED)
        except Exception:  # an old or partial NumPy: Python's generator is still seeded
            pass


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    reseed()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    reseed()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    reseed()
