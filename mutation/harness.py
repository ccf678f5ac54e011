"""Mutation-testing driver for agenthost, on cosmic-ray. Started by `.ci/mutation` (read its contract first).

It never touches the working tree it was started from: `.ci/mutation` hands it N worker folders
(WORKDIR/w1, WORKDIR/w2, ...), each a throwaway copy of the repository (`repo/`) with its own venv (`venv/`)
holding an editable install of THAT copy. cosmic-ray mutates a module in place inside a copy (and puts the original
bytes back after each mutant); the copy's editable import hook maps `agenthost.actors` etc. to the copy's folders,
so the tests run against the mutant.

Per module (a line of mutation/modules.txt):
1. `cosmic-ray init` lists every mutant of the module into OUT/NAME/session.sqlite (a normal cosmic-ray session:
   `cr-report`, `cr-html` work on it);
2. filters mark as skipped the mutants that cannot change behaviour by construction: those inside annotations that
   are never evaluated (`from __future__ import annotations`; class-level annotations are kept, msgspec reads them)
   and lines marked `# pragma: no mutate`;
3. a canary (a module that raises on import) must make the tests fail in every copy: it proves the tests import the
   copy's file, which is what fails with mutmut 3 on this layout;
4. a baseline run of the tests, unmutated, must pass in every copy; it sets the per-mutant timeout;
5. the mutants run in parallel, one per copy at a time: `pytest -x` on the module's test files; a run that exceeds
   the timeout has its process group killed and counts as killed ("timeout"); each mutant that timed out (the whole
   run, or one test at pytest-timeout's limit) is re-run once with twice the timeout, and the re-run decides (a
   loaded machine must not turn a surviving mutant into a kill);
6. OUT/NAME/report.json, OUT/report.json and OUT/summary.md list the counts, kill rates and every survivor
   (file:line, original -> mutated, diff, a stable key for mutation/equivalent.txt).
"""

from __future__ import annotations

import argparse
import ast
import configparser
import contextlib
import datetime
import hashlib
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cosmic_ray.mutating import mutate_and_test
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import MutationSpec, TestOutcome, WorkerOutcome, WorkResult

HERE = Path(__file__).resolve().parent
CANARY = "agenthost-mutation-canary"


@dataclass(frozen=True)
class Module:
    name: str
    path: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Worker:
    index: int
    repo: Path
    python: Path


def log(message: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[mutation {stamp}] {message}", flush=True)


# --- configuration -----------------------------------------------------------------------------------------------


def load_modules(path: Path) -> list[Module]:
    modules = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 3:
            raise SystemExit(f"{path}:{number}: expected NAME MODULE_FILE TEST_FILE..., got {raw!r}")
        modules.append(Module(fields[0], fields[1], tuple(fields[2:])))
    return modules


def load_equivalent(path: Path) -> dict[str, str]:
    known: dict[str, str] = {}
    if path.exists():
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                key, _, note = line.partition(" ")
                known[key] = note.strip()
    return known


def dotted_name(repo: Path, module_path: str) -> str | None:
    """`actors/_recovery.py` -> `agenthost.actors._recovery`, from setup.cfg's package_dir (None if unmapped)."""
    parser = configparser.ConfigParser()
    parser.read(repo / "setup.cfg")
    mapping = parser.get("options", "package_dir", fallback="")
    folder, _, filename = module_path.rpartition("/")
    for entry in mapping.splitlines():
        package, _, directory = (part.strip() for part in entry.partition("="))
        if package and directory.rstrip("/") == folder:
            return f"{package}.{filename.removesuffix('.py')}"
    return None


# --- test commands ------------------------------------------------------------------------------------------------


def test_command(worker: Worker, module: Module) -> str:
    """One pytest run in the worker's copy. `env -C` sets the cwd (cosmic-ray runs the command where it stands); the
    worker's own --basetemp keeps hundreds of runs from rotating out other sessions' /tmp/pytest-of-USER dirs."""
    return shlex.join(
        [
            "env",
            "-C",
            str(worker.repo),
            str(worker.python),
            "-m",
            "pytest",
            "-x",
            "-q",
            "--hypothesis-seed=0",
            f"--basetemp={worker.repo.parent / 'pytest-tmp'}",
            *module.tests,
        ]
    )


def run_plain(command: str, timeout: float) -> tuple[int | None, str, float]:
    """Run a test command unmutated: (exit code or None on timeout, output, seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        shlex.split(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, 9)
        output, _ = proc.communicate()
        return None, output.decode(errors="replace"), time.monotonic() - started
    return proc.returncode, output.decode(errors="replace"), time.monotonic() - started


def in_parallel(workers: list[Worker], job: Any) -> list[Any]:
    results: list[Any] = [None] * len(workers)

    def run(i: int) -> None:
        results[i] = job(workers[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def canary(workers: list[Worker], module: Module) -> str | None:
    """Make the module raise on import in every copy: the tests must fail. None when they do, else why not."""

    def check(worker: Worker) -> str | None:
        path = worker.repo / module.path
        original = path.read_bytes()
        try:
            path.write_bytes(original + f"\nraise ImportError({CANARY!r})\n".encode())
            code, output, _ = run_plain(test_command(worker, module), timeout=300)
        finally:
            path.write_bytes(original)
        if code == 0:
            return f"w{worker.index}: the tests PASSED with {module.path} raising on import: they do not import it"
        if CANARY not in output:
            return f"w{worker.index}: the tests failed, but not on the canary:\n{output[-3000:]}"
        return None

    problems = [p for p in in_parallel(workers, check) if p]
    return "\n".join(problems) or None


# --- filters --------------------------------------------------------------------------------------------------------


def _char_col(lines: list[str], lineno: int, byte_col: int) -> int:
    return len(lines[lineno - 1].encode()[:byte_col].decode(errors="replace"))


def unevaluated_annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Spans ((line, col), (line, col)) of annotations Python never evaluates in this file.

    Under `from __future__ import annotations` no annotation is evaluated at definition time; of those, only
    class-level ones are read back at run time (msgspec.Struct, dataclasses), so those are kept. Without the future
    import, only annotations of local variables are never evaluated.
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    future = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )
    class_level = {id(stmt) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for stmt in node.body}
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(inner) for inner in ast.walk(node) if inner is not node)
    annotations = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and future:
            arguments = node.args
            for arg in [
                *arguments.posonlyargs,
                *arguments.args,
                *arguments.kwonlyargs,
                arguments.vararg,
                arguments.kwarg,
            ]:
                if arg is not None and arg.annotation is not None:
                    annotations.append(arg.annotation)
            if node.returns is not None:
                annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign) and (id(node) in in_function or (future and id(node) not in class_level)):
            annotations.append(node.annotation)
    spans = []
    for annotation in annotations:
        assert annotation.end_lineno is not None and annotation.end_col_offset is not None
        start = (annotation.lineno, _char_col(lines, annotation.lineno, annotation.col_offset))
        end = (annotation.end_lineno, _char_col(lines, annotation.end_lineno, annotation.end_col_offset))
        spans.append((start, end))
    return spans


def apply_filters(db: WorkDB, source: str, limit: int | None) -> dict[str, int]:
    spans = unevaluated_annotation_spans(source)
    lines = source.splitlines()
    counts = {"annotation": 0, "pragma": 0, "not_sampled": 0}
    kept = []
    for item in db.pending_work_items:
        (mutation,) = item.mutations
        start, end = tuple(mutation.start_pos), tuple(mutation.end_pos)
        if any(s <= start and end <= e for s, e in spans):
            reason = "annotation"
            output = "skipped: inside an annotation that is never evaluated (from __future__ import annotations)"
        elif "pragma: no mutate" in lines[start[0] - 1]:
            reason, output = "pragma", "skipped: line marked '# pragma: no mutate'"
        else:
            kept.append(item)
            continue
        counts[reason] += 1
        db.set_result(item.job_id, WorkResult(output=output, worker_outcome=WorkerOutcome.SKIPPED))
    if limit is not None and limit < len(kept):
        kept.sort(key=lambda it: (tuple(it.mutations[0].start_pos), it.mutations[0].operator_name))
        chosen = {round(i * len(kept) / limit) for i in range(limit)}
        for index, item in enumerate(kept):
            if index not in chosen:
                counts["not_sampled"] += 1
                db.set_result(
                    item.job_id,
                    WorkResult(output="skipped: not in the --limit sample", worker_outcome=WorkerOutcome.SKIPPED),
                )
    return counts


# --- execution --------------------------------------------------------------------------------------------------------


RERUN_TAG = "[re-run]"
# A failure that may come from a loaded machine rather than from the mutant, so it is re-run once before it counts:
# the whole run's timeout (output "timeout") and pytest-timeout's per-test limit. The suite's own waits
# (conftest.wait_until, 20 s for what takes milliseconds) have ample margins; their failures count at once.
SUSPECT_RE = re.compile(r"^E\s+Failed: Timeout", re.MULTILINE)


def run_items(
    items: list[Any], workers: list[Worker], module: Module, timeout: float
) -> Iterator[tuple[str, WorkResult]]:
    """Yield (job_id, WorkResult) as the workers finish the items: one mutant per worker copy at a time."""
    jobs: queue.Queue[Any] = queue.Queue()
    for item in items:
        jobs.put(item)
    results: queue.Queue[tuple[str, WorkResult]] = queue.Queue()

    def work(worker: Worker) -> None:
        command = test_command(worker, module)
        while True:
            try:
                item = jobs.get_nowait()
            except queue.Empty:
                return
            (mutation,) = item.mutations
            local = MutationSpec(
                module_path=worker.repo / mutation.module_path,
                operator_name=mutation.operator_name,
                occurrence=mutation.occurrence,
                start_pos=mutation.start_pos,
                end_pos=mutation.end_pos,
                operator_args=mutation.operator_args,
                definition_name=mutation.definition_name,
            )
            results.put((item.job_id, mutate_and_test([local], command, timeout)))

    threads = [threading.Thread(target=work, args=(worker,), daemon=True) for worker in workers]
    for thread in threads:
        thread.start()
    for _ in items:
        yield results.get()
    for thread in threads:
        thread.join()


def execute(db: WorkDB, workers: list[Worker], module: Module, timeout: float) -> None:
    pending = sorted(db.pending_work_items, key=lambda it: tuple(it.mutations[0].start_pos))
    total = len(pending)
    started = time.monotonic()
    counts: dict[str, int] = {}
    for done, (job_id, result) in enumerate(run_items(pending, workers, module, timeout), 1):
        db.set_result(job_id, result)
        category = classify(result)[0]
        counts[category] = counts.get(category, 0) + 1
        if done % 10 == 0 or done == total:
            elapsed = time.monotonic() - started
            eta = elapsed / done * (total - done)
            summary = " ".join(f"{k}={v}" for k, v in counts.items())
            log(f"{module.name}: {done}/{total} {summary} ({elapsed:.0f} s, ~{eta:.0f} s left)")


def confirm(db: WorkDB, workers: list[Worker], module: Module, timeout: float) -> int:
    """Re-run, with twice the timeout, each mutant that timed out (whole run or pytest-timeout); the re-run decides
    (a flaky or overloaded first run must not count as a kill). Returns how many were re-run."""
    suspects, first_outputs = [], {}
    for item, result in db.completed_work_items:
        output = result.output or ""
        if result.worker_outcome != WorkerOutcome.NORMAL or result.test_outcome != TestOutcome.KILLED:
            continue
        if output.startswith(RERUN_TAG) or not (output.strip() == "timeout" or SUSPECT_RE.search(output)):
            continue
        suspects.append(item)
        first_outputs[item.job_id] = "timeout" if output.strip() == "timeout" else killed_by(output)
    if not suspects:
        return 0
    log(f"{module.name}: re-running {len(suspects)} mutant(s) that timed out")
    changed = 0
    for job_id, result in run_items(suspects, workers, module, 2 * timeout):
        note = f"{RERUN_TAG} first run: {first_outputs[job_id]}; re-run with timeout {2 * timeout:.0f} s:\n"
        db.set_result(
            job_id,
            WorkResult(
                worker_outcome=result.worker_outcome,
                output=note + (result.output or ""),
                test_outcome=result.test_outcome,
                diff=result.diff,
            ),
        )
        changed += result.test_outcome != TestOutcome.KILLED
    log(f"{module.name}: {changed} of {len(suspects)} re-run mutant(s) passed the tests on the re-run (survived)")
    return len(suspects)


def classify(result: WorkResult) -> tuple[str, str]:
    """(category, detail) of one result."""
    if result.worker_outcome == WorkerOutcome.SKIPPED:
        output = result.output or ""
        if "annotation" in output:
            return "skipped_annotation", output
        if "pragma" in output:
            return "skipped_pragma", output
        return "not_sampled", output
    if result.worker_outcome == WorkerOutcome.NO_TEST:
        return "no_op", "the operator found nothing to mutate"
    if result.worker_outcome != WorkerOutcome.NORMAL or result.test_outcome == TestOutcome.INCOMPETENT:
        return "error", (result.output or "")[-2000:]
    if result.test_outcome == TestOutcome.SURVIVED:
        return "survived", ""
    output = result.output or ""
    if output.startswith(RERUN_TAG):
        output = output.split("\n", 1)[1] if "\n" in output else ""
    if output.strip() == "timeout":
        return "timeout", "timeout"
    return "killed", killed_by(output)


def killed_by(output: str) -> str:
    for pattern in (r"^(?:FAILED|ERROR) (\S+)", r"^E\s+(.+)$"):
        match = re.search(pattern, output, re.MULTILINE)
        if match:
            return match.group(1)
    return output.strip().splitlines()[-1] if output.strip() else ""


# --- reporting --------------------------------------------------------------------------------------------------------


def diff_lines(diff: str) -> tuple[list[str], list[str], list[str]]:
    """(removed lines, added lines, hunk) of a cosmic-ray unified diff."""
    removed, added, hunk = [], [], []
    in_hunk = False
    for line in diff.splitlines():
        if line.startswith("@@"):
            in_hunk = True
        if not in_hunk or line.startswith(("---", "+++")):
            continue
        hunk.append(line)
        if line.startswith("-"):
            removed.append(line[1:])
        elif line.startswith("+"):
            added.append(line[1:])
    return removed, added, hunk


def collect(db: WorkDB, module: Module, source: str, equivalent: dict[str, str]) -> dict[str, Any]:
    lines = source.splitlines()
    counts: dict[str, int] = {}
    survivors: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    killers: dict[str, int] = {}
    seen: dict[str, int] = {}
    rows = sorted(
        db.completed_work_items, key=lambda r: (tuple(r[0].mutations[0].start_pos), r[0].mutations[0].operator_name)
    )
    for item, result in rows:
        (mutation,) = item.mutations
        category, detail = classify(result)
        line_no, col = mutation.start_pos
        if category == "killed" and detail:
            test = detail.split("::")[0] if detail.startswith("tests/") else "(other failure)"
            killers[test] = killers.get(test, 0) + 1
        if category not in ("survived", "error"):
            counts[category] = counts.get(category, 0) + 1
            continue
        removed, added, hunk = diff_lines(result.diff or "")
        original = removed[0].strip() if removed else lines[line_no - 1].strip()
        mutated = added[0].strip() if added else ""
        ident = f"{module.path}|{mutation.definition_name}|{mutation.operator_name}|{original}|{mutated}"
        seen[ident] = seen.get(ident, 0) + 1
        key = hashlib.sha1(f"{ident}|{seen[ident]}".encode()).hexdigest()[:12]
        entry = {
            "key": key,
            "job_id": item.job_id,
            "where": f"{module.path}:{line_no}:{col + 1}",
            "line": line_no,
            "function": mutation.definition_name,
            "operator": mutation.operator_name.removeprefix("core/"),
            "original": original,
            "mutated": mutated,
            "diff": "\n".join(hunk[:12]),
        }
        if (result.output or "").startswith(RERUN_TAG):
            entry["rerun"] = (result.output or "").split("\n", 1)[0]
        if category == "error":
            entry["detail"] = detail
            errors.append(entry)
            counts["error"] = counts.get("error", 0) + 1
        elif key in equivalent:
            entry["note"] = equivalent[key]
            counts["equivalent"] = counts.get("equivalent", 0) + 1
            survivors.append({**entry, "status": "equivalent"})
        else:
            counts["survived"] = counts.get("survived", 0) + 1
            survivors.append({**entry, "status": "survived"})
    detected = counts.get("killed", 0) + counts.get("timeout", 0)
    tested = detected + counts.get("survived", 0) + counts.get("equivalent", 0)
    return {
        "counts": {
            "total": sum(counts.values()),
            "tested": tested,
            "killed": counts.get("killed", 0),
            "timeout": counts.get("timeout", 0),
            "survived": counts.get("survived", 0),
            "equivalent": counts.get("equivalent", 0),
            "error": counts.get("error", 0),
            "no_op": counts.get("no_op", 0),
            "skipped_annotation": counts.get("skipped_annotation", 0),
            "skipped_pragma": counts.get("skipped_pragma", 0),
            "not_sampled": counts.get("not_sampled", 0),
        },
        "kill_rate_pct": round(100.0 * detected / tested, 1) if tested else None,
        "kill_rate_excluding_equivalent_pct": (
            round(100.0 * detected / (tested - counts.get("equivalent", 0)), 1)
            if tested - counts.get("equivalent", 0)
            else None
        ),
        "killed_by_test_file": dict(sorted(killers.items(), key=lambda kv: -kv[1])),
        "survivors": survivors,
        "errors": errors,
    }


def summary_markdown(report: dict[str, Any]) -> str:
    out = [
        "# Mutation testing report",
        "",
        f"cosmic-ray {report['tool_version']}, source {report['source']}, {report['workers']} worker(s), "
        f"started {report['started_at']}.",
        "",
        "| module | file | mutants | tested | killed | timed out | survived | equivalent | errors | skipped "
        "(annotations) | kill rate | excl. equivalent | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report["modules"]:
        if m.get("status") != "done":
            out.append(f"| {m['name']} | {m['path']} | {m.get('status')} | | | | | | | | | | |")
            continue
        c = m["counts"]
        out.append(
            f"| {m['name']} | {m['path']} | {c['total']} | {c['tested']} | {c['killed']} | {c['timeout']} | "
            f"{c['survived']} | {c['equivalent']} | {c['error']} | {c['skipped_annotation']} | "
            f"{m['kill_rate_pct']}% | {m['kill_rate_excluding_equivalent_pct']}% | {m['wall_s']:.0f} s |"
        )
    for m in report["modules"]:
        out += ["", f"## {m['name']}: {m['path']}", ""]
        if m.get("status") != "done":
            out += [f"Not run: {m.get('status')}", "", "```", str(m.get("detail", ""))[-3000:], "```"]
            continue
        out.append(
            f"Tests: `{' '.join(m['tests'])}` (pytest -x). Baseline {m['baseline_s']:.1f} s, per-mutant timeout "
            f"{m['timeout_s']:.0f} s, wall time {m['wall_s']:.0f} s; {m.get('rerun', 0)} mutant(s) re-run after a "
            "timeout (the re-run decides)."
        )
        out.append("")
        out.append(
            "Killed by (first failing test file): "
            + ", ".join(f"{k} {v}" for k, v in m["killed_by_test_file"].items())
            + "."
        )
        for title, status in (("Surviving mutants", "survived"), ("Known-equivalent survivors", "equivalent")):
            rows = [s for s in m["survivors"] if s["status"] == status]
            if not rows:
                continue
            out += ["", f"### {title} ({len(rows)})", ""]
            for s in rows:
                note = f" — {s['note']}" if s.get("note") else ""
                note += " (passed on a re-run after a first-run timeout)" if s.get("rerun") else ""
                out.append(
                    f"- `{s['key']}` {s['where']} in `{s['function']}` ({s['operator']}): "
                    f"`{s['original']}` -> `{s['mutated']}`{note}"
                )
        if m["errors"]:
            out += ["", f"### Errors ({len(m['errors'])})", ""]
            out += [f"- {e['where']} ({e['operator']}): {e['detail'][-300:]!r}" for e in m["errors"]]
    return "\n".join(out) + "\n"


# --- main -------------------------------------------------------------------------------------------------------------


def run_module(
    module: Module, workers: list[Worker], out: Path, args: argparse.Namespace, equivalent: dict[str, str]
) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": module.name, "path": module.path, "tests": list(module.tests)}
    lead = workers[0]
    source_path = lead.repo / module.path
    missing = [p for p in (module.path, *module.tests) if not (lead.repo / p).exists()]
    if missing:
        return {**entry, "status": "missing files", "detail": " ".join(missing)}
    started = time.monotonic()
    source = source_path.read_text(encoding="utf-8")
    folder = out / module.name
    folder.mkdir(parents=True, exist_ok=True)
    session = folder / "session.sqlite"
    config = folder / "cosmic-ray.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(module.path)}\n"
        "timeout = 600.0\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(test_command(lead, module))}\n"
        '\n[cosmic-ray.distributor]\nname = "local"\n',
        encoding="utf-8",
    )

    name = dotted_name(lead.repo, module.path)
    if name:
        code = f"import importlib.util as u; print(u.find_spec({name!r}).origin)"
        origin = subprocess.run(
            [str(lead.python), "-c", code], capture_output=True, text=True, cwd="/", check=False
        ).stdout.strip()
        log(f"{module.name}: {name} is imported from {origin}")

    problem = canary(workers, module)
    if problem:
        return {**entry, "status": "canary failed", "detail": problem}

    log(f"{module.name}: baseline run of {' '.join(module.tests)} in {len(workers)} copies")
    baselines = in_parallel(workers, lambda w: run_plain(test_command(w, module), timeout=1800))
    for worker, (code, output, _) in zip(workers, baselines, strict=True):
        if code != 0:
            return {**entry, "status": "baseline failed", "detail": f"w{worker.index} exit {code}:\n{output[-3000:]}"}
    baseline_s = max(seconds for _, _, seconds in baselines)
    timeout = args.timeout or max(args.min_timeout, args.timeout_factor * baseline_s)
    log(f"{module.name}: baseline {baseline_s:.1f} s -> per-mutant timeout {timeout:.0f} s")

    digest_file = folder / "source.sha256"
    digest = hashlib.sha256(source.encode()).hexdigest()
    if args.resume and session.exists():
        recorded = digest_file.read_text().strip() if digest_file.exists() else digest
        if recorded != digest:
            detail = f"{module.path} changed since {session} was made; run without --resume (or with that --rev)"
            return {**entry, "status": "resume refused", "detail": detail}
    else:
        session.unlink(missing_ok=True)
        subprocess.run(
            [str(lead.python), "-m", "cosmic_ray.cli", "init", str(config), str(session), "--force"],
            cwd=lead.repo,
            check=True,
        )
    digest_file.write_text(digest + "\n")
    with use_db(str(session), WorkDB.Mode.open) as db:
        filtered = apply_filters(db, source, args.limit)
        pending = len(db.pending_work_items)
        log(f"{module.name}: {db.num_work_items} mutants, filtered {filtered}, {pending} to run")
        execute(db, workers, module, timeout)
        rerun = confirm(db, workers, module, timeout) if args.confirm else 0
        result = collect(db, module, source, equivalent)
        result["rerun"] = rerun
    for worker in workers:  # cosmic-ray restores each file; make sure, for the next module
        if (worker.repo / module.path).read_text(encoding="utf-8") != source:
            (worker.repo / module.path).write_text(source, encoding="utf-8")
            log(f"WARNING: w{worker.index}: {module.path} was left mutated; restored")
    wall_s = time.monotonic() - started
    previous = folder / "report.json"
    if args.resume and previous.exists():  # the time of the runs that made the results kept
        wall_s += float(json.loads(previous.read_text(encoding="utf-8")).get("wall_s", 0.0))
    entry.update(
        status="done",
        baseline_s=round(baseline_s, 2),
        timeout_s=round(timeout, 1),
        wall_s=round(wall_s, 1),
        session=str(session),
        **result,
    )
    (folder / "report.json").write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", required=True, help="comma-separated worker folders (each holds repo/, venv/)")
    parser.add_argument("--modules", default="", help="comma-separated names from modules.txt (default: all)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--config", type=Path, default=HERE / "modules.txt")
    parser.add_argument("--equivalent", type=Path, default=HERE / "equivalent.txt")
    parser.add_argument("--timeout", type=float, default=None, help="per-mutant seconds (default: from baseline)")
    parser.add_argument("--timeout-factor", type=float, default=3.0)
    parser.add_argument("--min-timeout", type=float, default=60.0)
    parser.add_argument("--limit", type=int, default=None, help="run an evenly spread sample of N mutants")
    parser.add_argument("--resume", action="store_true", help="keep finished results of an earlier session")
    parser.add_argument(
        "--no-confirm", dest="confirm", action="store_false", help="do not re-run timed-out / timeout-failing mutants"
    )
    parser.add_argument(
        "--fail-under", type=float, default=None, help="exit 1 if a kill rate (excl. equivalent) is lower"
    )
    parser.add_argument("--source", default="", help="description of the snapshot (for the report)")
    args = parser.parse_args()

    modules = load_modules(args.config)
    by_name = {m.name: m for m in modules}
    wanted = [n for n in args.modules.split(",") if n] or [m.name for m in modules]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        print(f"unknown module(s) {unknown}; {args.config} has {sorted(by_name)}", file=sys.stderr)
        return 2
    workers = []
    for index, folder in enumerate(args.workers.split(","), 1):
        root = Path(folder)
        workers.append(Worker(index, root / "repo", root / "venv" / "bin" / "python"))
    equivalent = load_equivalent(args.equivalent)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AGENTHOST_TEST_SEED", "1")  # the suite's own random inputs: reproducible
    from importlib.metadata import version

    report: dict[str, Any] = {
        "tool": "cosmic-ray",
        "tool_version": version("cosmic-ray"),
        "source": args.source,
        "workers": len(workers),
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "modules": [],
    }
    status = 0
    for name in wanted:
        entry = run_module(by_name[name], workers, args.out, args, equivalent)
        report["modules"].append(entry)
        if entry["status"] != "done":
            log(f"{name}: {entry['status']}\n{entry.get('detail', '')}")
            status = 1
        else:
            c = entry["counts"]
            log(
                f"{name}: {c['tested']} tested, {c['killed']} killed, {c['timeout']} timed out, {c['survived']} "
                f"survived, {c['equivalent']} equivalent -> kill rate {entry['kill_rate_pct']}% "
                f"({entry['kill_rate_excluding_equivalent_pct']}% excl. equivalent) in {entry['wall_s']:.0f} s"
            )
            rate = entry["kill_rate_excluding_equivalent_pct"]
            if args.fail_under is not None and rate is not None and rate < args.fail_under:
                status = 1
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (args.out / "summary.md").write_text(summary_markdown(report), encoding="utf-8")
    log(f"report: {args.out / 'report.json'}, summary: {args.out / 'summary.md'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
