"""Runs exported SWE-bench records the way the official harness does, without Docker, and grades
the logs with the harness's own functions (`swebench` from PyPI).

usage: swebench_grade.py RECORDS.jsonl ANSWERS.json ARCHIVE WORK

For each answer ({"instance_id", "name", "patch"}; an empty patch is not applied, as with the
harness's --no-patch mode): the starting tree is rebuilt from the record alone, by the build
script inside its Dockerfile, on the source archive, and must be the record's base_commit; the
answer is applied with `git apply --verbose` (the harness's first try); the script
`make_test_spec(record).eval_script` runs in the tree, with the Dockerfile's ENV (its paths
moved under WORK, its virtualenv replaced by the interpreter running this file); its output is
graded with get_logs_eval, get_eval_tests_report and get_resolution_status. Prints one JSON line
per answer: instance_id, name, status (or NO_LOG when the log is not valid).
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from swebench.harness.constants import FAIL_TO_PASS, PASS_TO_PASS, EvalType
from swebench.harness.grading import (
    get_eval_tests_report,
    get_logs_eval,
    get_resolution_status,
    parse_test_exit_code,
)
from swebench.harness.log_parsers import PARSER_REGISTRY
from swebench.harness.utils import make_test_spec

OPT = "/opt/atomskill"
TESTBED = "/testbed"
COPY_FILE = re.compile(r"^COPY <<'(\w+)' (\S+)\n(.*?)^\1\n", re.M | re.S)
QUIET_GIT = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def image_env(dockerfile, opt, testbed):
    """The Dockerfile's ENV, with the image's paths moved to this machine."""
    text = dockerfile.replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, value = pair.split("=", 1)
                value = value.replace(f"{OPT}/venv", sys.prefix)
                value = value.replace(OPT, str(opt)).replace(TESTBED, str(testbed))
                env[key] = value
    return env


def main():
    records_path, answers_path, archive, work = sys.argv[1:5]
    work = Path(work)
    records = {}
    for line in Path(records_path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[record["instance_id"]] = record
    answers = json.loads(Path(answers_path).read_text())
    for index, answer in enumerate(answers):
        record = records[answer["instance_id"]]
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", record["repo"]), record["repo"]
        spec = make_test_spec(record)
        assert spec.log_parser in PARSER_REGISTRY, spec.log_parser
        root = work / str(index)
        opt, testbed = root / "opt", root / "testbed"
        for _, path, body in COPY_FILE.findall(record["dockerfile"]):
            assert path.startswith(OPT + "/"), path
            target = opt / path[len(OPT) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
        built = subprocess.run(
            ["bash", str(opt / "build_base.sh"), str(testbed), archive],
            capture_output=True,
            text=True,
            env={**os.environ, **QUIET_GIT},
        )
        assert built.returncode == 0, built.stderr
        commit = built.stdout.split()[-1]
        assert commit == record["base_commit"], (commit, record["base_commit"])
        if answer["patch"]:
            patch = root / "patch.diff"
            patch.write_text(answer["patch"])
            subprocess.run(
                ["git", "apply", "--verbose", str(patch)],
                cwd=testbed,
                check=True,
                capture_output=True,
                env={**os.environ, **QUIET_GIT},
            )
        script = root / "eval.sh"
        script.write_text(spec.eval_script)
        env = {**QUIET_GIT, "HOME": str(root), "SWEBENCH_TESTBED": str(testbed)}
        env.update(image_env(record["dockerfile"], opt, testbed))
        run = subprocess.run(
            ["bash", str(script)],
            cwd=testbed,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
        log = root / "test_output.txt"
        log.write_text(run.stdout)
        status_map, found = get_logs_eval(spec, str(log))
        if found:
            report = get_eval_tests_report(
                status_map,
                {FAIL_TO_PASS: spec.FAIL_TO_PASS, PASS_TO_PASS: spec.PASS_TO_PASS},
                eval_type=EvalType(spec.eval_type),
            )
            status = get_resolution_status(report)
        else:
            status = "NO_LOG"
        print(
            json.dumps(
                {
                    "instance_id": answer["instance_id"],
                    "name": answer["name"],
                    "status": status,
                    "exit_code": parse_test_exit_code(run.stdout),
                    "tests": len(status_map),
                    "log": str(log),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
