"""Imports between rosearch modules go one way: down the declared layers, with no cycle, counting
imports inside functions too.

Own AST walk over rosearch/**/*.py (no dependency on tools outside the repository). Every
``import rosearch.x`` / ``from rosearch.x import y`` / ``from . import y`` anywhere in a module
(module level, in functions, under ``if TYPE_CHECKING``) is an edge to the module it names; a
name imported from a package is an edge to that package's ``__init__`` unless it is a submodule.
Importing a submodule also runs its package's ``__init__``, but that implicit edge is not counted
(it would make every package that re-exports its submodules a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rosearch"


def module_files() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    mods = module_files()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                # `from pkg import sub` names the submodule; `from pkg import name` the package itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                while target and target not in mods:  # `import rosearch.x.y` where y is an attribute
                    target = target.rpartition(".")[0]
                if target and target != mod and target.split(".")[0] == "rosearch":
                    graph[mod].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, recursive: the graph is small)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def describe(graph: dict[str, set[str]], cycle: list[str]) -> str:
    members = set(cycle)
    return "\n".join(f"  {m} -> {', '.join(sorted(graph[m] & members))}" for m in cycle)


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "rosearch.choices" in graph["rosearch.config.sections"]
    assert "rosearch.distill.inputs" in graph["rosearch.distill.trainer"]


def test_find_cycles_reports_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_rosearch_modules():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles between rosearch modules:\n" + "\n\n".join(describe(graph, c) for c in cycles)


def test_leaf_modules_import_no_other_rosearch_module():
    graph = import_graph()
    assert graph["rosearch.errors"] == set()
    assert graph["rosearch.files.cache"] == set()
    assert graph["rosearch.choices"] == set()
    config_modules = {mod for mod in graph if mod.startswith("rosearch.config")}
    for mod in config_modules:  # the config package reads only the names it validates against
        assert graph[mod] <= {"rosearch.errors", "rosearch.choices"} | config_modules, f"{mod} imports {sorted(graph[mod])}"


def test_defense_is_a_leaf_package():
    graph = import_graph()
    for mod in graph:
        if mod.startswith("rosearch.defense"):
            outside = {t for t in graph[mod] if not t.startswith("rosearch.defense")}
            assert outside <= {"rosearch.choices"}, f"{mod} imports {sorted(outside)}"


# The layers, lowest first. A module may import modules of its own layer (no cycle) and of the
# layers below it, never above: module level, in functions and under TYPE_CHECKING alike. Every
# rosearch module belongs to exactly one layer (the longest prefix that names it).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("leaves", ("rosearch.errors", "rosearch.choices", "rosearch.files")),  # standard library: the CLI checks paths fast
    ("config and process", ("rosearch.config", "rosearch.runtime")),  # one validated config; logs, progress, threads
    ("data", ("rosearch.data",)),  # tasks, tokenised splits, batches, predictions over a split
    ("input defenses", ("rosearch.defense",)),  # a genome names the defenses it carries
    ("search space", ("rosearch.search_space",)),  # genomes, op families, analytic cost: no torch
    ("student network", ("rosearch.student",)),
    ("attacks", ("rosearch.attack",)),
    ("training", ("rosearch.distill",)),
    ("preparation", ("rosearch.prepare",)),  # once per run: checks, teacher, teacher outputs, defense tables
    ("evaluation", ("rosearch.evaluate", "rosearch.supernet")),
    ("run records", ("rosearch.records",)),  # the SQLite store, kept weights, trackers that watch
    ("workers", ("rosearch.workers",)),
    ("search strategies", ("rosearch.evolution",)),
    ("search", ("rosearch.search",)),
    ("analysis", ("rosearch.results",)),  # reads the records, writes none
    ("application", ("rosearch.commands", "rosearch.deploy", "rosearch.cli", "rosearch")),
)


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix naming ``module`` (KeyError: no layer declares it)."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    if best is None:
        raise KeyError(module)
    return best[1]


def wrong_directions(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{mod} ({LAYERS[layer_of(mod)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                  for mod, targets in graph.items() for target in targets if layer_of(target) > layer_of(mod))


def test_every_module_belongs_to_a_declared_layer():
    undeclared = []
    for mod in import_graph():
        try:
            layer_of(mod)
        except KeyError:
            undeclared.append(mod)
    assert not undeclared, f"modules in no layer of LAYERS (declare them): {undeclared}"


def test_every_import_goes_down_the_layers():
    bad = wrong_directions(import_graph())
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_direction_check_sees_an_upward_import():
    graph = {"rosearch.search_space.genome": {"rosearch.student.modeling"}, "rosearch.student.modeling": set(),
             "rosearch.search": {"rosearch.config"}, "rosearch.config": set()}
    assert wrong_directions(graph) == [
        "rosearch.search_space.genome (search space) imports rosearch.student.modeling (student network)"]
    assert layer_of("rosearch.search_space") != layer_of("rosearch.search")  # a prefix is a whole name


def test_the_analysis_writes_no_record():
    """rosearch.results only reads a run: no call of the store's writing methods."""
    writers = {"record_candidate", "record_generation", "save_checkpoint", "write_run_config", "write_candidate_files"}
    calls = []
    for mod, path in module_files().items():
        if mod.startswith("rosearch.results"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                name = getattr(node.func, "attr", getattr(node.func, "id", None)) if isinstance(node, ast.Call) else None
                if name in writers:
                    calls.append(f"{mod}:{node.lineno} {name}")
    assert not calls, f"the analysis writes records: {calls}"


def test_every_lazy_import_says_why():
    """An import inside a function (of rosearch or of a third-party package) carries a ``# lazy:`` reason,
    on one of its lines or on the comment line above its group of imports."""
    import sys

    missing = []
    for mod, path in module_files().items():
        lines = path.read_text(encoding="utf-8").split("\n")
        tree = ast.parse("\n".join(lines), str(path))
        top = {id(n) for n in tree.body}
        type_checking = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                         and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for block in ast.walk(tree):
            body = getattr(block, "body", None)
            if not isinstance(body, list):
                continue
            group: list[ast.stmt] = []
            for stmt in [*body, None]:
                if (isinstance(stmt, (ast.Import, ast.ImportFrom)) and id(stmt) not in top
                        and id(stmt) not in type_checking):
                    group.append(stmt)
                    continue
                names = [a.name for s in group for a in (s.names if isinstance(s, ast.Import) else [])]
                names += [s.module or "." for s in group if isinstance(s, ast.ImportFrom)]
                if group and any(n.split(".")[0] not in sys.stdlib_module_names for n in names):
                    text = "\n".join(lines[group[0].lineno - 2:group[-1].end_lineno])
                    if "# lazy:" not in text:
                        missing.append(f"{path.relative_to(PACKAGE.parent)}:{group[0].lineno} {', '.join(names)}")
                group = []
    assert not missing, "function-level imports without a '# lazy:' reason:\n" + "\n".join(missing)


def test_the_run_directory_layout_is_defined_once():
    """Every run-directory file name is a constant of rosearch.files.rundir (a near-leaf the CLI loads fast)."""
    from rosearch.files import rundir

    graph = import_graph()
    assert graph["rosearch.files.rundir"] <= {"rosearch.errors"}
    names = {rundir.RESULTS_FILE, rundir.CONFIG_FILE, rundir.RUN_INFO_FILE, rundir.SUMMARY_FILE, rundir.BEST_GENOME_FILE,
             rundir.CANDIDATES_DIR, rundir.REPORT_FILE, rundir.LOCK_FILE}
    defined_elsewhere = []
    for mod, path in module_files().items():
        if mod == "rosearch.files.rundir":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and node.value.value in names
                    and any(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)):
                defined_elsewhere.append(f"{mod}:{node.lineno} {ast.unparse(node)}")
    assert not defined_elsewhere, "run-directory names defined outside rosearch.files.rundir:\n" + "\n".join(defined_elsewhere)
