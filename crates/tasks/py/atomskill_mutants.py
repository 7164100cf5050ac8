"""Runs one pytest file against many mutants of one module, collecting it once.

Started by atomskill in a sandbox episode as `python -P atomskill_mutants.py SPEC.json` in place of
`python -P atomskill_run.py ARGS`, with the same ARGS (from the spec) and the same start. It imports pytest, collects the
test file against the pristine code, then for each mutant forks a child that

  1. writes the mutant's source over the target file when something may first read it (an
     audited open of the file, or a new process), so source reads, reloads and subprocesses see
     what the slow path's fresh episode would show them, and a child that reads nothing pays
     nothing for it (`LazyFile`),
  2. sets the `__code__` of every live function object whose code the mutant changed to the
     mutant's code object (so references held by decorators, classes, other modules and
     `from x import f` all see the mutant, as a fresh import would give them),
  3. runs the collected items as pytest's own loop does, then the end of a pytest process
     (session finish, unconfigure, non-daemon threads joined, atexit handlers).

A mutant is killed iff a test of the file fails or errors in any phase (a failed report: the
JUnit `failure`/`error` of the slow path), or the child dies or runs past its time budget; it
survives iff every item ran and the process would have ended normally with no failed report.
Skips and xfails are neither. The first failed report decides: the child stops there. The
canary tests the spec names (atomskill's `canary` module) are no kills: a must-fail one must fail
and a must-pass one pass, and a child that survives must have run both; otherwise its outcome is
"tampered".

Whatever this runner cannot model exactly is reported as "slow", and atomskill grades that
mutant in a fresh episode instead. Per mutant: the mutant changes code outside function bodies
(module or class body bytecode, or which functions and classes they define), changes a
docstring or a closure, changes a function that ran during import or collection, changes a
function no live object runs (and no changed enclosing function creates), or has a suspended
generator of changed code. For the whole file:
collection errors, threads alive after collection, the target file read after its import
began (other than by the import itself), or a pristine control child that does not survive.

The next mutant's child is compiled, matched, forked and swapped while the current one runs its
tests, and waits for a `go` byte: one child runs tests at a time, as one slow-path pytest would.

Once a child's report is in, the parent kills its process group (whatever the tests left running
dies with it, as the slow path's sandbox kills everything when pytest exits) and reaps it later.

What keeps a child cheap without changing an outcome: the parent's objects are frozen out of the
garbage collector (gc.freeze), caches every child would fill are filled once in the parent
(`warm_up`), a failure's text is the exception line instead of pytest's formatted traceback
(`short_failure`): the report's outcome is decided before its text is made, and a waiting child
copies in the pages the control child wrote in its first test (`prefault`). Per mutant, only
the changed top-level statement is compiled when that provably gives the whole module's code
(`Pristine.plan_region`).

Deliberately absent: running only the tests that call the function, or likely killers first.
A test that never calls it can still fail on state a mutant's code left behind, and a moved
test on state an earlier one would have set up, so every test runs, in file order.

The child's time budget is the slow path's test timeout minus what this process spent before
the first child (interpreter start, pytest start, collection), so the fast path never grants a
mutant more time than the slow path would.

Output: one JSON object per line in the result file: {"control": ...} first, then one line per
mutant {"id", "outcome": "killed"|"survived"|"slow"|"tampered", "reason", "seconds" (the time from the
previous report to this one: what one more mutant adds to the run)}, or {"fatal": reason}.
This file is the runner's only output; it never runs a test in its own (parent) process.
"""
import atexit
import gc
import json
import linecache
import os
import select
import signal
import sys
import threading
import time
import types

STARTED = time.monotonic()
CO_OPTIMIZED = 0x1


def code_tree(code, path=()):
    """Pre-order (path, code) over a code object and the code objects among its constants."""
    yield path, code
    index = 0
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from code_tree(const, path + (index,))
            index += 1


def qualname(code):
    return getattr(code, "co_qualname", code.co_name)


def is_function(code):
    return bool(code.co_flags & CO_OPTIMIZED)


def docstring(code):
    first = code.co_consts[0] if code.co_consts else None
    return first if isinstance(first, str) else None


def shallow(code):
    """A code object without its nested code objects and line numbers: what a module or class
    body executes at import."""
    consts = tuple(
        ("<code>", qualname(c)) if isinstance(c, types.CodeType) else (type(c).__name__, repr(c))
        for c in code.co_consts
    )
    return (
        code.co_code,
        consts,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        code.co_flags,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_exceptiontable,
    )


class Watch:
    """What happened to the target file before the test loop: the file names it was executed
    under, the code objects of it that ran, and reads of it after its import began."""

    def __init__(self, target):
        self.target = target
        self.basename = os.path.basename(target)
        self.active = True
        self.filenames = set()
        self.called = set()
        self.late_reads = []
        # In a mutant child: the mutant's file, written when something first looks at it.
        self.lazy = None

    def is_target(self, filename):
        return (
            isinstance(filename, str)
            and os.path.basename(filename) == self.basename
            and os.path.realpath(filename) == self.target
        )

    def audit(self, event, args):
        if self.lazy is not None:
            self.lazy.audit(event, args)
            return
        if not self.active:
            return
        if event == "exec":
            code = args[0]
            if isinstance(code, types.CodeType) and self.is_target(code.co_filename):
                if code.co_filename in self.filenames:
                    # Executed a second time (a reload during collection).
                    self.late_reads.append("the target module was executed twice")
                self.filenames.add(code.co_filename)
                sys.setprofile(self.profile)
                threading.setprofile(self.profile)
        elif event == "open" and self.filenames:
            path = args[0]
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            if self.is_target(path):
                self.late_reads.append("the target file was opened after its import began")

    def profile(self, frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code.co_filename in self.filenames:
                self.called.add(code)

    def stop(self):
        self.active = False
        sys.setprofile(None)
        threading.setprofile(None)


class LazyFile:
    """The mutant's source, written over the target file in a child only when something may
    read it: an open of the target file, or a new process (which could read it with no audit
    hook of ours). Until then the file holds the pristine text, which nothing has seen. Module
    code of the target file executed before the write (an import of a cached .pyc found by its
    pristine mtime) makes the child's outcome unsafe: the slow path decides that mutant."""

    SPAWNS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn")

    def __init__(self, watch, source, mtime):
        self.watch = watch
        self.source = source
        self.mtime = mtime
        self.written = False
        self.unsafe = None

    def audit(self, event, args):
        if self.written:
            return
        if event == "open":
            path = args[0]
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            if isinstance(path, str) and self.watch.is_target(path):
                self.write()
        elif event in self.SPAWNS:
            self.write()
        elif event == "exec":
            code = args[0]
            if isinstance(code, types.CodeType) and self.watch.is_target(code.co_filename):
                self.unsafe = "the target module was executed before the mutant's file was written"

    def write(self):
        self.written = True  # first: the write below opens the file, an audited event
        with open(self.watch.target, "w", encoding="utf-8", newline="") as file:
            file.write(self.source)
        # A distinct mtime per mutant: no bytecode cached for another one fits.
        os.utime(self.watch.target, (self.mtime, self.mtime))


class Pristine:
    """The live objects of the target module after collection, indexed by code object."""

    def __init__(self, watch, source):
        self.watch = watch
        self.source = source
        self.trees = {}
        # Compiled pristine statements by line range (`plan_region`), None where unusable.
        self.regions = {}
        self.imports = None
        for filename in sorted(watch.filenames):
            root = compile(source, filename, "exec", dont_inherit=True)
            self.trees[filename] = list(code_tree(root))
        self.functions = {}
        self.generators = {}
        is_target = {}
        for obj in gc.get_objects():
            kind = type(obj)
            if kind is types.FunctionType:
                code = obj.__code__
                if code.co_filename in self.trees:
                    self.functions.setdefault(code, []).append(obj)
                elif is_target.setdefault(code.co_filename, watch.is_target(code.co_filename)):
                    raise Unsafe("functions of the target file exist that no watched import made")
            elif kind in (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType):
                code = getattr(obj, "gi_code", None) or getattr(obj, "cr_code", None) or obj.ag_code
                if code.co_filename in self.trees:
                    self.generators[code] = self.generators.get(code, 0) + 1
        for module in list(sys.modules.values()):
            filename = getattr(module, "__file__", None)
            if watch.is_target(filename) and not self.trees:
                raise Unsafe("the target module was imported before the runner started")
        known = {code for tree in self.trees.values() for _, code in tree}
        if self.functions and not any(code in known for code in self.functions):
            raise Unsafe("the loaded functions do not match the pristine source compiled here")

    def plan(self, mutant_source):
        """The (function, new code) assignments that turn the loaded module into the mutant."""
        swaps = self.plan_region(mutant_source)
        if swaps is not None:
            return swaps
        swaps = []
        for filename, tree in self.trees.items():
            try:
                root = compile(mutant_source, filename, "exec", dont_inherit=True)
            except SyntaxError as error:
                raise Unsafe(f"the mutant does not compile: {error}")
            self.pair(tree[0][1], root, False, swaps)
        return swaps

    def plan_region(self, mutant_source):
        """`plan` by compiling only the top-level statement the mutant changes (a module of
        a thousand lines takes milliseconds to compile), or None when that is not certainly
        the same: the whole module is compiled then. It is when the mutant changes lines of
        one top-level statement, keeps every line number, the statement compiled alone gives
        exactly the pristine module's code objects for it, and the mutant's statement does at
        module level exactly what the pristine one does."""
        if len(self.trees) != 1:
            return None
        old_lines = self.source.splitlines(keepends=True)
        new_lines = mutant_source.splitlines(keepends=True)
        if len(old_lines) != len(new_lines):
            return None
        changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
        if not changed:
            return None
        region = self.region(old_lines, changed[0], changed[-1])
        if region is None:
            return None
        start, end = region
        (filename, tree), = self.trees.items()
        root = tree[0][1]
        flags = root.co_flags & FUTURE_FLAGS

        if self.imports is None:
            self.imports = imported_names(self.source, filename)
        # The compiler reads `x.f()` differently where `x` is a module-level import, so the
        # first padding line binds the module's imported names the same way.
        padding = ["\n"] * start
        if self.imports and start:
            padding[0] = "import " + ", ".join(self.imports) + "\n"

        def compile_region(lines):
            text = "".join(padding) + "".join(lines[start:end])
            return compile(text, filename, "exec", flags, dont_inherit=True)

        key = (start, end)
        if key not in self.regions:
            try:
                old_region = compile_region(old_lines)
            except SyntaxError:
                old_region = None
            full = [c for c in root.co_consts if isinstance(c, types.CodeType)]
            kids = [c for c in (old_region.co_consts if old_region else ()) if isinstance(c, types.CodeType)]
            # Each code object of the statement must be the whole module's, exactly.
            if old_region is None or not all(any(k == c for c in full) for k in kids):
                old_region = None
            self.regions[key] = old_region
        old_region = self.regions[key]
        if old_region is None:
            return None
        try:
            new_region = compile_region(new_lines)
        except SyntaxError:
            return None
        old_kids = [c for c in old_region.co_consts if isinstance(c, types.CodeType)]
        new_kids = [c for c in new_region.co_consts if isinstance(c, types.CodeType)]
        if shallow(old_region) != shallow(new_region) or [qualname(c) for c in old_kids] != [
            qualname(c) for c in new_kids
        ]:
            return None
        swaps = []
        for old_kid, new_kid in zip(old_kids, new_kids):
            self.pair(old_kid, new_kid, False, swaps)
        return swaps

    @staticmethod
    def region(lines, first, last):
        """The 0-based [start, end) line range of the top-level statement holding lines
        `first` to `last` (decorators included), found from indentation; `plan_region` checks
        it by compiling."""

        def opens_statement(line):
            return line[:1] not in ("", " ", "\t", "\n", "\r", "#", ")", "]", "}")

        start = first
        while start > 0 and not opens_statement(lines[start]):
            start -= 1
        if not opens_statement(lines[start]):
            return None
        while start > 0 and lines[start - 1].startswith("@"):
            start -= 1
        end = last + 1
        while end < len(lines) and not opens_statement(lines[end]):
            end += 1
        # Not the decorators of the next statement.
        while end - 1 > last and lines[end - 1].startswith("@"):
            end -= 1
        return start, end

    def pair(self, old, new, made_by_swapped, swaps):
        """Matches one pristine code object with the mutant's; `made_by_swapped` says whether a
        swapped enclosing function makes new function objects from `new` when it runs."""
        if old == new:
            return
        name = qualname(old)
        if qualname(new) != name:
            raise Unsafe(f"the mutant defines {qualname(new)} where the module defines {name}")
        old_kids = [c for c in old.co_consts if isinstance(c, types.CodeType)]
        new_kids = [c for c in new.co_consts if isinstance(c, types.CodeType)]
        same_shape = [qualname(c) for c in old_kids] == [qualname(c) for c in new_kids]
        if not is_function(old):
            # A module or class body ran once, at import: it must do exactly what it did.
            if shallow(old) != shallow(new) or not same_shape:
                raise Unsafe(f"the mutant changes code outside function bodies ({name})")
            for old_kid, new_kid in zip(old_kids, new_kids):
                self.pair(old_kid, new_kid, False, swaps)
            return
        self.check_unused(old)
        if docstring(old) != docstring(new):
            raise Unsafe(f"the mutant changes the docstring of {name}")
        live = self.functions.get(old, [])
        if live and old.co_freevars != new.co_freevars:
            raise Unsafe(f"the mutant changes the closure of {name}")
        if not live and not made_by_swapped:
            raise Unsafe(f"no live function object runs {name}")
        swaps.extend((function, new) for function in live)
        if same_shape:
            for old_kid, new_kid in zip(old_kids, new_kids):
                self.pair(old_kid, new_kid, True, swaps)
        else:
            # Nested functions, lambdas or comprehensions came or went: the swapped function
            # makes its nested objects from the mutant's code, provided none of the old ones
            # exists or ran.
            for _, code in code_tree(old):
                self.check_unused(code)
                if code is not old and code in self.functions:
                    raise Unsafe(f"a function object of {qualname(code)} exists")

    def check_unused(self, code):
        if code in self.watch.called:
            raise Unsafe(f"{qualname(code)} ran during import or collection")
        if self.generators.get(code):
            raise Unsafe(f"a suspended generator of {qualname(code)} exists")


def future_flags():
    """The compiler flags of every `from __future__ import`; `__future__` leaves sys.modules
    as it found it."""
    loaded = "__future__" in sys.modules
    import __future__

    if not loaded:
        del sys.modules["__future__"]
    return sum(getattr(__future__, name).compiler_flag for name in __future__.all_feature_names)


FUTURE_FLAGS = future_flags()


def imported_names(source, filename):
    """The module-level names of `source` that an import binds; symtable leaves sys.modules
    as it found it."""
    before = set(sys.modules)
    try:
        import symtable

        table = symtable.symtable(source, filename, "exec")
        return sorted(
            symbol.get_name()
            for symbol in table.get_symbols()
            if symbol.is_imported() and symbol.get_name().isidentifier()
        )
    except Exception:
        return []
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]


class Unsafe(Exception):
    """The fast path cannot decide this mutant exactly; the slow path must."""


def make_plugin(pytest, spec, watch, out):
    target = watch.target
    budget = float(spec["timeout"])
    canaries = spec.get("canaries") or {}
    must_fail = set(canaries.get("must_fail") or ())
    must_pass = set(canaries.get("must_pass") or ())

    class Plugin:
        def __init__(self):
            self.failure = None
            # Canary tests (atomskill's `canary` module): their outcomes as seen in this run,
            # and the first wrong one.
            self.canaries = {}
            self.tampered = None
            self.unreaped = []
            # Memory the control child wrote up to the end of its first test, as (address,
            # length) runs: each mutant's child copies it in (`prefault`) while it waits, off
            # the time of the run.
            self.pages = []
            self.maps = None
            self.populate = None

        def reap(self, block):
            for pid in list(self.unreaped):
                if os.waitpid(pid, 0 if block else os.WNOHANG)[0]:
                    self.unreaped.remove(pid)

        @pytest.hookimpl(tryfirst=True)
        def pytest_collection_finish(self, session):
            watch.stop()

        def pytest_runtest_logreport(self, report):
            nodeid = report.nodeid
            if nodeid in must_fail or nodeid in must_pass:
                # A canary's failure is not a kill; a wrong outcome is a forged run.
                wanted_failure = nodeid in must_fail
                if report.when == "call":
                    self.canaries[nodeid] = report.failed
                    if report.failed != wanted_failure and self.tampered is None:
                        self.tampered = f"a canary test was reported {report.outcome}"
                elif not report.passed and self.tampered is None:
                    self.tampered = f"a canary test was reported {report.outcome} in {report.when}"
                return
            if report.failed and self.failure is None:
                self.failure = f"{nodeid} ({report.when})"

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtestloop(self, session):
            try:
                self.mutants(session)
            except Unsafe as error:
                emit(out, {"fatal": str(error)})
            except BaseException as error:  # never let pytest run the tests itself
                emit(out, {"fatal": f"the runner failed: {error!r}"})
            return True

        def run_items(self, session):
            """What a slow-path pytest process does from its first test to its exit."""
            self.failure = None
            self.canaries = {}
            self.tampered = None
            items = session.items
            for index, item in enumerate(items):
                nextitem = items[index + 1] if index + 1 < len(items) else None
                item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
                if index == 0 and self.maps:
                    # Every child runs the first test; not every one runs the others.
                    self.pages = written_pages(self.maps)
                if self.tampered:
                    return {"outcome": "tampered", "reason": self.tampered}
                if self.failure:
                    return {"outcome": "killed", "reason": f"{self.failure} failed"}
                if session.shouldfail or session.shouldstop:
                    raise Unsafe(f"the session stopped: {session.shouldfail or session.shouldstop}")
            session.exitstatus = pytest.ExitCode.OK
            session.config.hook.pytest_sessionfinish(session=session, exitstatus=session.exitstatus)
            session.config._ensure_unconfigure()
            threading._shutdown()
            atexit._run_exitfuncs()
            if self.tampered:
                return {"outcome": "tampered", "reason": self.tampered}
            if self.failure:
                return {"outcome": "killed", "reason": f"{self.failure} failed"}
            missing = (must_fail | must_pass) - set(self.canaries)
            if missing:
                return {"outcome": "tampered", "reason": f"{len(missing)} canary tests did not run"}
            if session.exitstatus != pytest.ExitCode.OK:
                raise Unsafe(f"the session would exit with status {int(session.exitstatus)}")
            return {"outcome": "survived", "reason": "every test passed or was skipped"}

        def spawn(self, session, source, swaps, mtime):
            """Forks the child of one mutant (`source` None: the pristine control). It swaps
            the code in, then waits for `go` before it runs the items, so that its fork and
            preparation overlap the previous child's tests; one child runs tests at a time."""
            self.reap(block=False)
            sys.stdout.flush()
            sys.stderr.flush()
            read_end, write_end = os.pipe()
            go_read, go_write = os.pipe()
            pid = os.fork()
            if pid == 0:
                status = 0
                try:
                    os.close(read_end)
                    os.close(go_write)
                    os.close(out.fileno())
                    os.setpgid(0, 0)
                    try:
                        with open("/proc/self/oom_score_adj", "w") as adj:
                            adj.write("1000")  # the memory limit should end the child first
                    except OSError:
                        pass
                    for function, code in swaps:
                        function.__code__ = code
                    for item in session.items:
                        item._repr_failure_py = short_failure
                    for filename in watch.filenames:
                        linecache.cache.pop(filename, None)
                    lazy = LazyFile(watch, source, mtime) if source is not None else None
                    self.maps = writable_maps() if source is None else None
                    prefault(self.populate, self.pages)
                    if not os.read(go_read, 1):
                        os._exit(0)  # the runner is gone
                    os.close(go_read)
                    watch.lazy = lazy
                    result = self.run_items(session)
                    if self.maps:
                        result["pages"] = self.pages
                    if lazy is not None and lazy.unsafe:
                        result = {"outcome": "slow", "reason": lazy.unsafe}
                except Unsafe as error:
                    result = {"outcome": "slow", "reason": str(error)}
                except BaseException as error:
                    result = {"outcome": "slow", "reason": f"the child raised {error!r}"[:500]}
                try:
                    os.write(write_end, (json.dumps(result) + "\n").encode())
                finally:
                    os._exit(status)
            os.close(write_end)
            os.close(go_read)
            return Pending(pid, read_end, go_write)

        def finish(self, pending, timeout):
            """Waits for the report of a child that was told to go, kills it, returns its
            outcome."""
            pid, read_end = pending.pid, pending.read_end
            data, how = wait_report(pid, read_end, pending.started + timeout)
            os.close(read_end)
            # The report is the child's last act before os._exit: past it, only its exit (the
            # kernel freeing its memory) and whatever the tests left running remain. Both are
            # killed now; the exit is reaped later.
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            seconds = time.monotonic() - pending.started
            lines = data.decode(errors="replace").strip().splitlines()
            if how == "report":
                self.unreaped.append(pid)
                wait_status = None
            else:
                _, wait_status = os.waitpid(pid, 0)
            if how == "timeout":
                result = {"outcome": "killed", "reason": f"timed out after {timeout:.1f} s"}
            elif lines:
                try:
                    result = json.loads(lines[-1])
                except ValueError:
                    result = {"outcome": "slow", "reason": "the child's report is unreadable"}
            else:
                result = {
                    "outcome": "killed",
                    "reason": f"the child died without a report (wait status {wait_status})",
                }
            result["seconds"] = round(seconds, 6)
            return result

        def prepare(self, session, pristine, mutant, mtime):
            """Compiles and matches one mutant and forks its waiting child; a Pending, or the
            outcome of a mutant the fast path cannot run."""
            try:
                swaps = pristine.plan(mutant["source"])
            except Unsafe as error:
                return {"outcome": "slow", "reason": str(error)}
            return self.spawn(session, mutant["source"], swaps, mtime)

        def mutants(self, session):
            if session.testsfailed:
                raise Unsafe("the test file has collection errors")
            if not session.items:
                raise Unsafe("no test was collected")
            if threading.active_count() > 1:
                raise Unsafe("threads are alive after collection")
            if watch.late_reads:
                raise Unsafe(watch.late_reads[0])
            with open(target, encoding="utf-8", newline="") as file:
                pristine_source = file.read()
            pristine = Pristine(watch, pristine_source)
            warm_up()
            self.populate = populate_function()
            # Keep the collector away from the parent's objects in the children: a collection
            # there would write to every page of the heap (copy-on-write) for nothing, since
            # those objects are alive in the parent anyway.
            gc.freeze()
            timeout = budget - (time.monotonic() - STARTED)
            if timeout <= 0:
                raise Unsafe("the test timeout was spent before the first test")
            control = self.finish(self.spawn(session, None, [], 0).go(), timeout)
            self.pages = control.pop("pages", None) or []
            emit(out, {"control": control})
            if control["outcome"] != "survived":
                raise Unsafe(f"the pristine code does not survive in a child: {control['reason']}")
            base = int(time.time()) + 2
            mutants = spec["mutants"]
            last = time.monotonic()
            ready = self.prepare(session, pristine, mutants[0], base) if mutants else None
            for index, mutant in enumerate(mutants):
                current = ready.go() if isinstance(ready, Pending) else ready
                # The next mutant is compiled, matched and forked while this one's tests run.
                if index + 1 < len(mutants):
                    ready = self.prepare(session, pristine, mutants[index + 1], base + 2 * index + 2)
                result = self.finish(current, timeout) if isinstance(current, Pending) else current
                # The mutant's cost here: the time between two reports (so the costs add up to
                # the whole loop), its compiling, matching and fork overlapping the one before.
                now = time.monotonic()
                result["seconds"] = round(now - last, 6)
                last = now
                emit(out, {"id": mutant["id"], **result})
            self.reap(block=True)
            with open(target, "w", encoding="utf-8", newline="") as file:
                file.write(pristine_source)

    return Plugin()


class Pending:
    """A forked child waiting for `go`."""

    def __init__(self, pid, read_end, go_write):
        self.pid = pid
        self.read_end = read_end
        self.go_write = go_write
        self.started = None

    def go(self):
        self.started = time.monotonic()
        try:
            os.write(self.go_write, b"g")
        except OSError:
            pass  # the child is already gone: its report (none) says so
        os.close(self.go_write)
        return self


def wait_report(pid, read_end, deadline):
    """Waits for child `pid`'s report line on `read_end`, its exit, or `deadline`; returns what
    was read and which came first: "report", "exited" or "timeout"."""
    data = b""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    watched = [read_end] + ([pidfd] if pidfd is not None else [])
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return data, "timeout"
            if pidfd is None:
                remaining = min(remaining, 0.001)
            ready, _, _ = select.select(watched, [], [], remaining)
            if read_end in ready:
                chunk = os.read(read_end, 65536)
                if chunk:
                    data += chunk
                    if data.endswith(b"\n"):
                        return data, "report"
                else:
                    watched.remove(read_end)  # end of file: the child is gone or going
            exited = pidfd in ready if pidfd is not None else (
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            )
            if exited:
                os.set_blocking(read_end, False)
                try:
                    while chunk := os.read(read_end, 65536):
                        data += chunk
                except BlockingIOError:
                    pass
                return data, "exited"
    finally:
        if pidfd is not None:
            os.close(pidfd)


def warm_up():
    """Fills, in the parent, caches every child would otherwise fill on its own (each child's
    JUnit report compiles the same regular expression). Calls only pure functions."""
    try:
        from _pytest.junitxml import bin_xml_escape

        bin_xml_escape("")
    except Exception:
        pass


MADV_POPULATE_WRITE = 23


def populate_function():
    """libc's madvise, for `prefault`, or None. The modules ctypes imports are taken out of
    sys.modules again, so the tests see the module table a plain pytest would have."""
    before = set(sys.modules)
    try:
        import ctypes

        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        madvise.restype = ctypes.c_int
        return madvise
    except Exception:
        return None
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]


def writable_maps():
    """The private writable mappings of this process, as (start, end) address pairs."""
    ranges = []
    try:
        with open("/proc/self/maps", encoding="ascii") as maps:
            for line in maps:
                fields = line.split()
                name = fields[5] if len(fields) > 5 else ""
                if fields[1].startswith("rw") and fields[1][3] == "p" and not name.startswith("[v"):
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    ranges.append((start, end))
    except (OSError, ValueError, IndexError):
        return []
    return ranges


def written_pages(ranges):
    """The runs of pages of `ranges` this process has written since its fork (present and
    mapped by it alone, per /proc/self/pagemap), as [address, length] pairs."""
    page = os.sysconf("SC_PAGE_SIZE")
    runs = []
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return []
    try:
        for low, high in ranges:
            count = (high - low) // page
            entries = memoryview(os.pread(fd, 8 * count, low // page * 8)).cast("Q")
            start = None
            for index, entry in enumerate(entries):
                if entry >> 63 & 1 and entry >> 56 & 1:
                    if start is None:
                        start = index
                elif start is not None:
                    runs.append([low + start * page, (index - start) * page])
                    start = None
            if start is not None:
                runs.append([low + start * page, (len(entries) - start) * page])
    except (OSError, ValueError, TypeError):
        return []
    finally:
        os.close(fd)
    return runs


def prefault(madvise, runs):
    """Copies in the pages a test run will write (the control child's), so that the child does
    not take those copy-on-write faults one by one while its tests run. Changes no byte of
    memory, only when the copies are made; best effort."""
    if madvise is None:
        return
    for address, length in runs:
        if madvise(address, length, MADV_POPULATE_WRITE) != 0:
            if address == runs[0][0]:
                return  # not supported here: the first call says so


def short_failure(excinfo, style=None):
    """Stands in for pytest's failure formatting (source extraction, parsing, highlighting:
    most of a killed mutant's time) on the file's own items in a child. The outcome of a report
    is decided from the exception before its text is made, and the child stops at the first
    failed report, so only text nobody reads changes."""
    try:
        return excinfo.exconly()
    except Exception:
        return "a test failed"


def emit(out, record):
    out.write(json.dumps(record) + "\n")
    out.flush()


def main():
    with open(sys.argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    os.unlink(sys.argv[1])  # the tests have no business reading the other mutants
    watch = Watch(os.path.realpath(spec["target"]))
    sys.addaudithook(watch.audit)
    out = open(spec["result"], "w", encoding="utf-8")
    # The same start as every pytest run of atomskill's (atomskill_run.py, beside this file):
    # pytest from the environment, the project after the standard library.
    import importlib.util

    start_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "atomskill_run.py")
    start_spec = importlib.util.spec_from_file_location("atomskill_run", start_path)
    start = importlib.util.module_from_spec(start_spec)
    start_spec.loader.exec_module(start)
    pytest = start.isolate()

    plugin = make_plugin(pytest, spec, watch, out)
    pytest.main(spec["pytest_args"], plugins=[plugin])
    out.close()


if __name__ == "__main__":
    main()
