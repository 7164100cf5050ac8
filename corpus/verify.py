#!/usr/bin/env python3
"""Re-run the checks behind a corpus manifest (default: corpus/default.toml).

Standard library only (Python >= 3.11 for tomllib). For every project in the
manifest it:

  1. downloads the pinned archive (sdist / .crate) into CACHE/archives,
     verifies its sha256 (falls back to `pip download --no-binary NAME` for
     PyPI projects if the recorded URL does not answer);
  2. unpacks it into a fresh CACHE/work/<root> (the pristine snapshot is
     never touched by a test run: it is unpacked again every time);
  3. PyPI: builds a virtualenv CACHE/venvs/<name>-<version> with the *system*
     interpreter (default /usr/bin/python3), installs `test_deps`, then the
     project itself as the manifest's `install` says, and checks that the
     import names in `packages` resolve inside the unpacked tree (so a
     mutation of the source is seen by the tests);
     crates: runs `cargo fetch` (network) so the test runs can be offline;
  4. runs the suite RUNS times (default 3), one at a time, parses the per-test
     outcome (pytest JUnit XML; `cargo test` stdout), and reports wall time
     (median), counts, failing ids and flaky ids (outcome differs between runs).

Usage:
  python3 corpus/verify.py [--manifest corpus/default.toml] [--cache DIR]
                           [--runs 3] [--only NAME ...] [--json OUT.json]
                           [--python /usr/bin/python3] [--keep-going]

Exit status: 0 when every selected project installs and has no failing test
(outside its `ignore`/`deselect` lists) in any run, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- fetch ----

def fetch(p: dict, cache: Path, python: str) -> Path:
    dest_dir = cache / "archives"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / p["archive"]
    if dest.exists() and sha256_of(dest) == p["sha256"]:
        return dest
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        log(f"  download {p['url']}")
        req = urllib.request.Request(p["url"], headers={"User-Agent": "atomskill-corpus-verify"})
        with urllib.request.urlopen(req, timeout=120) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        tmp.replace(dest)
    except Exception as e:  # noqa: BLE001
        if p["ecosystem"] != "pypi":
            raise
        log(f"  url failed ({e}); falling back to pip download --no-binary")
        subprocess.run(
            [python, "-m", "pip", "download", "--no-deps", "--no-binary", p["name"],
             f"{p['name']}=={p['version']}", "-d", str(dest_dir)],
            check=True,
        )
    got = sha256_of(dest)
    if got != p["sha256"]:
        raise RuntimeError(f"sha256 mismatch for {dest.name}: manifest {p['sha256']}, got {got}")
    return dest


def unpack(archive: Path, p: dict, cache: Path) -> Path:
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    root = work / p["root"]
    if root.exists():
        shutil.rmtree(root)
    with tarfile.open(archive, "r:gz") as tf:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12
            tf.extractall(work, filter="data")
        else:  # e.g. Debian 12's 3.11.2: refuse absolute paths, '..' and links by hand
            members = []
            for m in tf.getmembers():
                if m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise RuntimeError(f"unsafe path in archive: {m.name}")
                if m.issym() or m.islnk() or m.isdev():
                    continue
                members.append(m)
            tf.extractall(work, members=members)
    if not root.is_dir():
        raise RuntimeError(f"archive did not unpack to {p['root']}/")
    # tar keeps the archive's (old) mtimes. Give every file "now", as a harness
    # writing a mutant would: cargo decides staleness by mtime, and an old mtime
    # on a restored file would let it reuse a binary built from the mutant.
    now = time.time()
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (now, now))
    for t in p.get("tests", []):
        if not (root / t).exists():
            raise RuntimeError(f"test path {t!r} missing from the archive")
    return root


# -------------------------------------------------------------- install ----

def build_env(p: dict, root: Path, cache: Path, python: str, env: dict) -> Path | None:
    if p["ecosystem"] == "crates":
        subprocess.run(["cargo", "fetch"], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        return None
    venv = cache / "venvs" / f"{p['name']}-{p['version']}"
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    vpy = str(venv / "bin" / "python")
    pip = [vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if p.get("test_deps"):
        # test_deps is the complete pinned environment: install exactly that
        subprocess.run(pip + ["--no-deps"] + list(p["test_deps"]), check=True, env=env)
    mode = p.get("install", "editable")
    if mode == "editable":
        subprocess.run(pip + ["--no-deps", "-e", str(root)], check=True, env=env)
    elif mode == "pythonpath":
        # a normal install gives the dist-info (importlib.metadata, entry points);
        # source_dir on PYTHONPATH shadows the installed copy at run time
        subprocess.run(pip + ["--no-deps", str(root)], check=True, env=env)
    else:
        raise RuntimeError(f"unknown install mode {mode!r}")
    chk = subprocess.run([vpy, "-m", "pip", "check"], capture_output=True, text=True)
    if chk.returncode != 0:
        log(f"  pip check: {chk.stdout.strip()}")
    # the tests must import the code from the unpacked tree, not a copy
    src = (root / p.get("source_dir", ".")).resolve()
    for mod in p.get("packages", []):
        out = subprocess.run(
            [vpy, "-c", f"import {mod}, os; print(os.path.realpath({mod}.__file__))"],
            cwd="/", env=run_env(p, root, venv, env), capture_output=True, text=True,
        )
        if out.returncode != 0 or not Path(out.stdout.strip()).is_relative_to(src):
            raise RuntimeError(f"import {mod} does not resolve inside {src}: "
                               f"{out.stdout.strip() or out.stderr.strip()[-300:]}")
    return venv


def run_env(p: dict, root: Path, venv: Path | None, base: dict) -> dict:
    env = dict(base)
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["VIRTUAL_ENV"] = str(venv)
        if p.get("install", "editable") == "pythonpath":
            env["PYTHONPATH"] = str(root / p.get("source_dir", "."))
    env.update({k: str(v) for k, v in p.get("env", {}).items()})
    return env


# ------------------------------------------------------------------ run ----

def pytest_argv(p: dict, junit: Path) -> list[str]:
    argv = list(p["test_command"])
    for ig in p.get("ignore", []):
        argv.append(f"--ignore={ig['path']}")
    for ds in p.get("deselect", []):
        argv.append(f"--deselect={ds['id']}")
    argv.append(f"--junitxml={junit}")
    return argv


def parse_junit(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for tc in ET.parse(path).getroot().iter("testcase"):
        tid = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        status = "passed"
        for child in tc:
            if child.tag == "failure":
                status = "failed"
            elif child.tag == "error":
                status = "error"
            elif child.tag == "skipped":
                status = "xfail" if child.get("type") == "pytest.xfail" else "skipped"
        # a test can be reported twice (call failure + teardown error): keep the worst
        if tid in out and out[tid] in ("failed", "error"):
            continue
        out[tid] = status
    return out


CARGO_LINE = re.compile(r"^test (.+?) \.\.\. (ok|FAILED|ignored)(?:,.*)?$")
CARGO_SUITE = re.compile(r"^\s*(?:Running|Doc-tests) (\S+)")


def parse_cargo(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    suite = ""
    for line in stdout.splitlines():
        m = CARGO_SUITE.match(line)
        if m:
            suite = m.group(1)
            continue
        m = CARGO_LINE.match(line.strip())
        if m:
            out[f"{suite}::{m.group(1)}"] = {"ok": "passed", "FAILED": "failed",
                                             "ignored": "skipped"}[m.group(2)]
    return out


def run_once(p: dict, root: Path, env: dict, scratch: Path, timeout: int):
    junit = scratch / f"{p['name']}.xml"
    if junit.exists():
        junit.unlink()
    if p["ecosystem"] == "pypi":
        argv = pytest_argv(p, junit)
    else:
        argv = list(p["test_command"])
        skips = [a for ds in p.get("deselect", []) for a in ("--skip", ds["id"])]
        if skips:
            argv += ["--"] + skips
    t0 = time.monotonic()
    try:
        # one stream, so cargo's "Running <suite>" (stderr) stays next to its tests (stdout)
        cp = subprocess.run(argv, cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=timeout)
        rc, stdout = cp.returncode, cp.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ""
        rc, stdout = "timeout", out.decode(errors="replace") if isinstance(out, bytes) else out
    wall = time.monotonic() - t0
    results = parse_junit(junit) if p["ecosystem"] == "pypi" else parse_cargo(stdout)
    return wall, rc, results, stdout


def check_project(p: dict, args, base_env: dict) -> dict:
    rep = {"name": p["name"], "version": p["version"], "ecosystem": p["ecosystem"]}
    try:
        archive = fetch(p, args.cache, args.python)
        root = unpack(archive, p, args.cache)
        t0 = time.monotonic()
        venv = build_env(p, root, args.cache, args.python, base_env)
        rep["setup_seconds"] = round(time.monotonic() - t0, 1)
        env = run_env(p, root, venv, base_env)
        runs = []
        for i in range(args.runs):
            # every run starts from a pristine tree, as the harness will
            if i:
                root = unpack(archive, p, args.cache)
            wall, rc, res, out = run_once(p, root, env, args.cache, args.timeout)
            log(f"  run {i + 1}: {wall:.1f}s rc={rc} tests={len(res)}")
            if not res:
                log(out[-3000:])
            runs.append((wall, rc, res))
    except Exception as e:  # noqa: BLE001
        rep["error"] = str(e)
        return rep
    ids = set().union(*(r[2] for r in runs))
    # an id seen in only some runs is unstable (e.g. parametrize ids built from
    # datetime.now()): it cannot be used as a label, whatever its outcome
    unstable = sorted(t for t in ids if any(t not in r[2] for r in runs))
    flaky = sorted(t for t in ids if t not in unstable
                   and len({r[2][t] for r in runs}) > 1)
    first = runs[0][2]
    counts = {}
    for s in first.values():
        counts[s] = counts.get(s, 0) + 1
    failing = sorted(t for t in ids if t not in flaky and first.get(t) in ("failed", "error"))
    # pytest exits 5 when nothing was collected, 2/3/4 for interruption/internal/usage errors
    rep.update(
        seconds=[round(r[0], 2) for r in runs],
        median_seconds=round(statistics.median(r[0] for r in runs), 2),
        exit_codes=[r[1] for r in runs],
        collected=len(first),
        counts=counts,
        failing=failing,
        flaky=flaky,
        unstable_ids=unstable,
    )
    return rep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", type=Path, default=HERE / "default.toml")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/atomskill-corpus-cache"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter the virtualenvs are built from")
    ap.add_argument("--timeout", type=int, default=600, help="per suite run, seconds")
    ap.add_argument("--install", choices=["editable", "pythonpath"], default=None,
                    help="override every PyPI project's install mode")
    args = ap.parse_args()
    args.cache = args.cache.resolve()
    args.cache.mkdir(parents=True, exist_ok=True)

    with open(args.manifest, "rb") as f:
        manifest = tomllib.load(f)
    if manifest.get("schema_version") != 1:
        log(f"warning: unexpected schema_version {manifest.get('schema_version')!r}")
    base_env = dict(os.environ)
    base_env.update({k: str(v) for k, v in manifest.get("env", {}).items()})
    base_env.setdefault("CARGO_TARGET_DIR", str(args.cache / "target"))

    reports = []
    for p in manifest["project"]:
        if args.only and p["name"] not in args.only:
            continue
        if args.install and p["ecosystem"] == "pypi":
            p = dict(p, install=args.install)
        log(f"== {p['name']} {p['version']} ({p['ecosystem']})")
        reports.append(check_project(p, args, base_env))
        if args.json:
            args.json.write_text(json.dumps(reports, indent=2))

    ok = True
    hdr = f"{'project':<18} {'version':<10} {'tests':>6} {'pass':>6} {'fail':>5} {'skip':>5} {'xfail':>5} {'median s':>9}  runs (s)            flaky  note"
    print(hdr)
    print("-" * len(hdr))
    for r in reports:
        if "error" in r:
            ok = False
            print(f"{r['name']:<18} {r['version']:<10} ERROR: {r['error'][:200]}")
            continue
        c = r["counts"]
        fails = c.get("failed", 0) + c.get("error", 0)
        if r["failing"] or r["flaky"] or r["unstable_ids"] or any(rc != 0 for rc in r["exit_codes"]):
            ok = False
        note = "; ".join(r["failing"][:3]) + (" ..." if len(r["failing"]) > 3 else "")
        runs = ",".join(f"{s:.1f}" for s in r["seconds"])
        print(f"{r['name']:<18} {r['version']:<10} {r['collected']:>6} {c.get('passed', 0):>6} "
              f"{fails:>5} {c.get('skipped', 0):>5} {c.get('xfail', 0):>5} {r['median_seconds']:>9.1f}  "
              f"{runs:<19} {len(r['flaky']):>5}  {note}")
        for t in r["flaky"]:
            print(f"    flaky: {t}")
        for t in r["unstable_ids"]:
            print(f"    unstable id (not in every run): {t}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
