"""Mutation testing: one AST mutation of a module at a time, a chosen set of tests, killed or not.

    python3 tests/tools/mutate.py pyspdk_sys/_checks.py out.json -- tests/test_options.py ...
    python3 tests/tools/mutate.py pyspdk_sys/pybdev.py out.json --sample 60 --seed 1 -- ...

Mutations: comparisons flipped (< <=, == !=, in, is), and/or swapped, `not`
dropped, integer constants plus one, raise statements removed. Each mutant is
written into a copy of src/ that PYTHONPATH points at (subprocesses the tests
start see it too), and the tests run with -x; a failure or a time-out kills
it. Prints one line per mutant and the score; writes every result to out.json.
--sample N runs N mutants drawn at random (--seed S, default 0, picks which:
the same seed draws the same mutants, so a before/after pair compares alike)
where running every mutant would take hours; the score is then of the sample.
--timeout T (default 300 s) bounds one mutant's run; a run past it kills it.
--only 3,17,42 runs just those mutants (by the index printed as #N): the
survivors of an earlier run, against the tests written to kill them.
mutmut was tried first: its stats run skipped every test here (the compiled
extension and the tests' subprocesses defeat its trampolines).
"""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
SRC = PROJECT / "src"
SWAP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


class Mutator(ast.NodeTransformer):
    def __init__(self, target: int | None) -> None:
        self.target = target
        self.count = 0
        self.done: str | None = None

    def hit(self) -> bool:
        here = self.count
        self.count += 1
        return here == self.target

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        for i, op in enumerate(node.ops):
            if type(op) in SWAP and self.hit():
                node.ops[i] = SWAP[type(op)]()
                self.done = f"line {node.lineno}: {type(op).__name__} -> {SWAP[type(op)].__name__}"
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        if self.hit():
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self.done = f"line {node.lineno}: and/or swapped"
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not) and self.hit():
            self.done = f"line {node.lineno}: not removed"
            return node.operand
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if type(node.value) is int and self.hit():
            self.done = f"line {node.lineno}: {node.value} -> {node.value + 1}"
            return ast.copy_location(ast.Constant(node.value + 1), node)
        return node

    def visit_Raise(self, node: ast.Raise) -> ast.AST:
        self.generic_visit(node)
        if node.exc is not None and self.hit():
            self.done = f"line {node.lineno}: raise removed"
            return ast.copy_location(ast.Pass(), node)
        return node


def main() -> int:
    module, out = sys.argv[1], Path(sys.argv[2])
    split = sys.argv.index("--")
    options = sys.argv[3:split]
    pytest_args = sys.argv[split + 1 :]
    sample = int(options[options.index("--sample") + 1]) if "--sample" in options else None
    seed = int(options[options.index("--seed") + 1]) if "--seed" in options else 0
    limit = float(options[options.index("--timeout") + 1]) if "--timeout" in options else 300
    only = options[options.index("--only") + 1] if "--only" in options else None
    source = (SRC / module).read_text()
    counter = Mutator(None)
    counter.visit(ast.parse(source))
    total = counter.count
    chosen = list(range(total))
    if sample is not None and sample < total:
        # In the order drawn: a run stopped early is still a random sample.
        chosen = random.Random(seed).sample(chosen, sample)
    if only is not None:
        chosen = [int(index) for index in only.split(",")]
        if not all(0 <= index < total for index in chosen):
            raise SystemExit(f"--only: mutants are numbered 0 to {total - 1}")
    results = []
    work = Path(tempfile.mkdtemp(prefix="mutate-"))
    shutil.copytree(SRC, work / "src", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(work / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.monotonic()
    for step, index in enumerate(chosen):
        mutator = Mutator(index)
        tree = mutator.visit(ast.parse(source))
        ast.fix_missing_locations(tree)
        (work / "src" / module).write_text(ast.unparse(tree))
        try:
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-x",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    *pytest_args,
                ],
                cwd=PROJECT,
                env=env,
                capture_output=True,
                text=True,
                timeout=limit,
            )
            killed = run.returncode != 0
        except subprocess.TimeoutExpired:
            killed = True
        results.append({"index": index, "what": mutator.done, "killed": killed})
        print(
            f"{step + 1}/{len(chosen)} #{index}",
            "killed" if killed else "SURVIVED",
            mutator.done,
            flush=True,
        )
    (work / "src" / module).write_text(source)
    shutil.rmtree(work, ignore_errors=True)
    killed = sum(r["killed"] for r in results)
    summary = {
        "module": module,
        "mutants": total,
        "run": len(chosen),
        "seed": seed if sample is not None and only is None and len(chosen) < total else None,
        "killed": killed,
        "score": killed / len(chosen) if chosen else 1.0,
        "seconds": time.monotonic() - started,
        "results": results,
    }
    out.write_text(json.dumps(summary, indent=1))
    if only is not None:
        of = f"{len(chosen)} (chosen of {total})"
    elif len(chosen) < total:
        of = f"{len(chosen)} (a sample of {total}, seed {seed})"
    else:
        of = str(total)
    print(f"{module}: {killed}/{of} killed ({summary['score']:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
