"""The architecture, written as tests: what may import what, and how big a piece may grow.

These read the source (with `ast`), never import it, so they run in a fraction of a second and name the
file and line of each offence:

- no import cycle among the module-level imports of `mlx_dpo` and `tui`;
- no import placed inside a function in `mlx_dpo/` (the usual way to hide a cycle), except for the
  optional heavy dependencies listed in LAZY_IMPORTS_ALLOWED;
- no function over MAX_FUNCTION_LINES; a module past MODULE_LINES_GUIDE lines is named in a warning (a guide:
  one job per module matters more than its length), and only one past MAX_MODULE_LINES fails;
- the library never imports Textual or `tui`;
- the app has one boundary with the library: `tui/` imports `mlx_dpo.api` and the event, settings, metric
  name and error modules (TUI_LIBRARY_SURFACE), nothing deeper, and never mlx or mlx-lm itself;
- `mlx_dpo.api` loads no mlx when imported: its heavy names (LAZY) load on first use, and only the worker
  modules (TUI_WORKER_MODULES) use them, so the rest of the app never waits for MLX;
- nothing keeps state on a model module (`setattr`/`delattr`, or an attribute assigned on a `model`): what the
  self-checks find lives in the model session (mlx_dpo/models/session.py).

Each rule is checked on the real tree and, below, on a small made-up tree that breaks it, so a walker
that silently stopped seeing imports would fail too.
"""

from __future__ import annotations

import ast
import fnmatch
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("mlx_dpo", "tui")

MODULE_LINES_GUIDE = 400  # past it a module is named in a warning: worth a look, not a wall that shapes the design
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60  # lines that start a statement (statement_lines); the longest function today has 52

# Top-level names a function in mlx_dpo/ may import lazily: optional or heavy, and not needed by most
# commands (mlx_lm pulls in transformers; yaml, tomllib and tokenizers serve one file format each; pyarrow
# (Parquet) and trackio are optional extras).
LAZY_IMPORTS_ALLOWED = frozenset(
    {"mlx_lm", "huggingface_hub", "gguf", "tokenizers", "yaml", "tomllib", "pyarrow", "trackio"}
)
# ... and per file, on top of those: `mlx-dpo tui` is the one place the library starts the app.
# blas.py chooses which BLAS MLX binds to, so it must run before anything imports mlx.
# The CLI's command modules build their parsers from light modules only and load the library's heavy
# parts when a command runs: `mlx-dpo --help`, `data stats` and the app's first screen do not wait for MLX.
# mlx_dpo.api is light: its heavy names are resolved on first use, by the imports its functions make.
HEAVY_LIBRARY = frozenset({"mlx", "mlx_dpo.doctor", "mlx_dpo.models", "mlx_dpo.training", "mlx_dpo.export"})
LAZY_IMPORTS_ALLOWED_IN = {
    "mlx_dpo/api.py": HEAVY_LIBRARY | {"mlx_dpo.online"},
    "mlx_dpo/cli/app.py": frozenset({"tui", "textual"}),
    "mlx_dpo/cli/models.py": HEAVY_LIBRARY,
    "mlx_dpo/cli/train.py": HEAVY_LIBRARY,
    "mlx_dpo/cli/data.py": HEAVY_LIBRARY,
    "mlx_dpo/cli/export.py": HEAVY_LIBRARY,
    "mlx_dpo/cli/online.py": HEAVY_LIBRARY | {"mlx_dpo.online", "tui", "textual"},  # --judge human opens the app
    "mlx_dpo/blas.py": frozenset({"mlx"}),
}

# The tui modules that run library work (sampling, training, export) and so may import MLX and the
# heavy library packages; every other tui module stays light (fnmatch patterns over module names).
TUI_WORKER_MODULES = ("tui.workers", "tui.workers.*", "tui.workers_*")
# `python -m tui` is a launcher for `mlx-dpo tui`, not part of the app: it imports the CLI, which is heavy.
TUI_ENTRY_SCRIPTS = ("tui.__main__",)
# What the rest of tui must not reach: module names, each also forbidding its submodules.
HEAVY_FOR_TUI = ("mlx", "mlx_lm", "mlx_dpo.models", "mlx_dpo.training", "mlx_dpo.export")
# What the library must never import.
UI_PACKAGES = ("textual", "tui")
# The part of the library the app may import: the API and the types it speaks in (each with its submodules).
TUI_LIBRARY_SURFACE = (
    "mlx_dpo.api",
    "mlx_dpo.events",
    "mlx_dpo.settings",
    "mlx_dpo.options",
    "mlx_dpo.errors",
    "mlx_dpo.metric_names",
)
# Where the API's heavy names are listed: `LAZY = {name: defining module, ...}` in this module.
API_MODULE = "mlx_dpo.api"


# --- reading the tree -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One imported module, as the statement at `line` of `path` names it (absolute, relative ones resolved)."""

    module: str
    path: str  # relative to the root, with forward slashes
    line: int
    function: str | None  # the enclosing function (dotted through classes), or None at module level


@dataclass
class Module:
    name: str
    path: Path
    rel: str
    tree: ast.Module
    lines: int
    imports: list[Import] = field(default_factory=list)


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    """Every .py file of `packages` under `root`, parsed, with its imports resolved to module names."""
    modules: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            text = path.read_text(encoding="utf-8")
            modules[module_name(rel)] = Module(
                module_name(rel), path, rel.as_posix(), ast.parse(text, str(rel)), len(text.splitlines())
            )
    for mod in modules.values():
        mod.imports = list(_imports(mod, set(modules)))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(mod: Module, known: set[str]):
    """Yield each module an import statement of `mod` loads. `from x import y` names x.y when that is a
    module of the tree, else x; imports under `if TYPE_CHECKING:` never run and are skipped."""
    is_package = mod.path.name == "__init__.py"

    def visit(node: ast.AST, function: str | None, scope: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from visit(child, f"{scope}{child.name}", f"{scope}{child.name}.")
            elif isinstance(child, ast.Lambda):
                yield from visit(child, function or f"{scope}<lambda>", scope)
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, function, f"{scope}{child.name}.")
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for orelse in child.orelse:
                    yield from visit(ast.Module(body=[orelse], type_ignores=[]), function, scope)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(alias.name, mod.rel, child.lineno, function)
            elif isinstance(child, ast.ImportFrom):
                base = _from_base(mod.name, is_package, child.level, child.module)
                for alias in child.names:
                    sub = f"{base}.{alias.name}" if base else alias.name
                    yield Import(sub if sub in known else base, mod.rel, child.lineno, function)
            else:
                yield from visit(child, function, scope)

    seen: set[tuple[str, int, str | None]] = set()
    for imp in visit(mod.tree, None, ""):
        if (imp.module, imp.line, imp.function) not in seen:  # `from x import a, b` loads x once
            seen.add((imp.module, imp.line, imp.function))
            yield imp


def _from_base(name: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module of `from <level dots><module> import ...` written in module `name`."""
    if level == 0:
        return module or ""
    parts = name.split(".") if is_package else name.split(".")[:-1]
    if level - 1 > len(parts) - 1:
        raise ValueError(f"relative import beyond the top package in {name}")
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def module_level_graph(modules: dict[str, Module]) -> dict[str, dict[str, Import]]:
    """Internal module -> {imported internal module: the first statement importing it}, module level only."""
    graph: dict[str, dict[str, Import]] = {name: {} for name in modules}
    for name, mod in modules.items():
        for imp in mod.imports:
            if imp.function is None and imp.module in modules and imp.module != name:
                graph[name].setdefault(imp.module, imp)
    return graph


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# --- the rules, as functions returning their offenders ------------------------------------------------------


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """One shortest cycle (first module repeated at the end) per strongly connected group of modules."""
    graph = {n: sorted(edges) for n, edges in module_level_graph(modules).items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm (recursive: the graph is a few dozen modules)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for group in sorted(groups):
        members, start = set(group), group[0]
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:  # breadth-first back to `start`, inside the group
            v = queue.popleft()
            if start in graph[v]:
                path = [v]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                cycles.append([start, *reversed(path[:-1]), start] if v != start else [start, start])
                break
            for w in graph[v]:
                if w in members and w not in came_from and w != start:
                    came_from[w] = v
                    queue.append(w)
    return cycles


def describe_cycle(modules: dict[str, Module], cycle: list[str]) -> str:
    graph = module_level_graph(modules)
    steps = [f"{a} -> {b} ({graph[a][b].path}:{graph[a][b].line})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(cycle) + "\n    " + "\n    ".join(steps)


def function_local_imports(modules: dict[str, Module], package: str = "mlx_dpo") -> list[str]:
    offenders = []
    for mod in sorted(modules.values(), key=lambda m: m.rel):
        if not _within(mod.name, [package]):
            continue
        allowed = LAZY_IMPORTS_ALLOWED | LAZY_IMPORTS_ALLOWED_IN.get(mod.rel, frozenset())
        for imp in mod.imports:
            if imp.function is not None and not _within(imp.module, allowed):
                offenders.append(f"{imp.path}:{imp.line} in {imp.function}(): imports {imp.module}")
    return offenders


def _within(module: str, names: frozenset[str]) -> bool:
    """`module` is one of `names` or inside one of them (a package names its submodules too)."""
    parts = module.split(".")
    return any(".".join(parts[:i]) in names for i in range(1, len(parts) + 1))


def long_modules(modules: dict[str, Module], limit: int = MAX_MODULE_LINES) -> list[str]:
    return sorted(f"{m.rel}: {m.lines} lines" for m in modules.values() if m.lines > limit)


def statement_lines(function: ast.AST) -> int:
    """How many lines of a function start a statement: its length as a reader follows it, whatever the formatter
    does with one call's arguments (one per line or all on one)."""
    return len({node.lineno for node in ast.walk(function) if isinstance(node, ast.stmt)})


def long_functions(modules: dict[str, Module]) -> list[str]:
    offenders = []
    for mod in modules.values():
        for node in ast.walk(mod.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = statement_lines(node)
                if length > MAX_FUNCTION_LINES:
                    offenders.append(f"{mod.rel}:{node.lineno} {node.name}(): {length} statement lines")
    return sorted(offenders)


def _is_model(node: ast.expr) -> bool:
    """`model` or `<anything>.model`: how the code names a model module (a session's is `session.model`)."""
    return (isinstance(node, ast.Name) and node.id == "model") or (
        isinstance(node, ast.Attribute) and node.attr == "model"
    )


def model_state_writes(modules: dict[str, Module]) -> list[str]:
    """Calls of setattr/delattr anywhere, and attributes assigned on a model (`model.x = ...`, `s.model.x = ...`):
    a finding kept on an nn.Module instead of in the model session. A model's own layers are changed through
    mlx's API (`update_modules`, `load_weights`), never by assigning attributes here."""
    offenders = []
    for mod in sorted(modules.values(), key=lambda m: m.rel):
        for node in ast.walk(mod.tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("setattr", "delattr")
            ):
                offenders.append(f"{mod.rel}:{node.lineno}: {node.func.id}()")
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else ([node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            )
            for target in targets:
                if isinstance(target, ast.Attribute) and _is_model(target.value):
                    offenders.append(f"{mod.rel}:{node.lineno}: assigns {ast.unparse(target)}")
    return sorted(offenders, key=lambda o: (o.split(":")[0], int(o.split(":")[1])))


def library_ui_imports(modules: dict[str, Module]) -> list[str]:
    """Module-level imports of Textual or tui anywhere in mlx_dpo (the lazy one in cli/app.py is a
    function-local import, checked by the allowlist above)."""
    return sorted(
        f"{imp.path}:{imp.line}: imports {imp.module}"
        for mod in modules.values()
        if _within(mod.name, ["mlx_dpo"])
        for imp in mod.imports
        if imp.function is None and _within(imp.module, UI_PACKAGES)
    )


def is_tui_worker(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in TUI_WORKER_MODULES)


def tui_heavy_imports(modules: dict[str, Module]) -> list[tuple[str, ...]]:
    """For each light tui module that loads MLX, mlx-lm or a heavy library package through module-level
    imports, the shortest chain (the module first, the heavy one last). Importing a.b.c runs a/__init__ and
    a/b/__init__ first, so those count; the walk does not go through worker modules, which may be heavy."""
    graph = module_level_graph(modules)
    for name in modules:  # a module's package __init__ files run before it
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in modules:
                graph[name].setdefault(parent, Import(parent, modules[name].rel, 0, None))
    offenders = []
    for start in sorted(modules):
        if not _within(start, ["tui"]) or is_tui_worker(start) or start in TUI_ENTRY_SCRIPTS:
            continue
        came_from: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            heavy = [imp for imp in modules[v].imports if imp.function is None and _within(imp.module, HEAVY_FOR_TUI)]
            if heavy:
                chain = [v]
                while came_from[chain[-1]] is not None:
                    chain.append(came_from[chain[-1]])
                chain.reverse()
                offenders.append((*chain, heavy[0].module))
                break
            for w in sorted(graph[v]):
                if w not in came_from and not is_tui_worker(w):
                    came_from[w] = v
                    queue.append(w)
    return offenders


def tui_lazy_heavy_imports(modules: dict[str, Module]) -> list[str]:
    """Imports of MLX, mlx-lm or a heavy library package inside functions of light tui modules: the work
    they stand for belongs in a worker module, the one boundary between the app and the library."""
    return [
        f"{imp.path}:{imp.line} in {imp.function}(): imports {imp.module}"
        for mod in sorted(modules.values(), key=lambda m: m.rel)
        if _within(mod.name, ["tui"]) and not is_tui_worker(mod.name)
        for imp in mod.imports
        if imp.function is not None and _within(imp.module, HEAVY_FOR_TUI)
    ]


def api_lazy_names(modules: dict[str, Module]) -> dict[str, str]:
    """The API's heavy names and the modules defining them, read from its `LAZY = {...}` literal."""
    for node in modules[API_MODULE].tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "LAZY" for t in targets):
                return {ast.literal_eval(k): ast.literal_eval(v) for k, v in zip(node.value.keys, node.value.values)}
    raise AssertionError(f"{modules[API_MODULE].rel}: no `LAZY = {{...}}` table")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def api_lazy_names_undefined(modules: dict[str, Module]) -> list[str]:
    """Entries of the API's LAZY table whose module does not exist or does not define the name."""
    return [
        f"{modules[API_MODULE].rel}: LAZY[{name!r}] = {module!r}: "
        + ("no such module" if module not in modules else f"{modules[module].rel} defines no {name}")
        for name, module in sorted(api_lazy_names(modules).items())
        if module not in modules or name not in _top_level_names(modules[module].tree)
    ]


def tui_imports_past_the_api(modules: dict[str, Module]) -> list[str]:
    """Imports in tui (anywhere, lazily too) of a library module outside TUI_LIBRARY_SURFACE, or of mlx and
    mlx-lm themselves: the app reaches the library through its API."""
    return [
        f"{imp.path}:{imp.line}: imports {imp.module}"
        for mod in sorted(modules.values(), key=lambda m: m.rel)
        if _within(mod.name, ["tui"]) and mod.name not in TUI_ENTRY_SCRIPTS
        for imp in mod.imports
        if (_within(imp.module, ["mlx_dpo"]) and not _within(imp.module, TUI_LIBRARY_SURFACE))
        or _within(imp.module, ["mlx", "mlx_lm"])
    ]


def tui_heavy_api_uses(modules: dict[str, Module]) -> list[str]:
    """Uses of the API's heavy names (`from mlx_dpo.api import train`, `api.train`) in tui modules other than
    the workers: each would load mlx on the UI thread."""
    heavy = set(api_lazy_names(modules))
    offenders = []
    for mod in sorted(modules.values(), key=lambda m: m.rel):
        if not _within(mod.name, ["tui"]) or is_tui_worker(mod.name) or mod.name in TUI_ENTRY_SCRIPTS:
            continue
        bound: set[str] = set()  # the names mlx_dpo.api is known by in this module
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.ImportFrom) and node.module == API_MODULE:
                offenders += [
                    f"{mod.rel}:{node.lineno}: imports {a.name} from {API_MODULE}"
                    for a in node.names
                    if a.name in heavy
                ]
            elif isinstance(node, ast.ImportFrom) and node.module == "mlx_dpo" and node.level == 0:
                bound.update(a.asname or a.name for a in node.names if a.name == "api")
            elif isinstance(node, ast.Import):
                bound.update(a.asname for a in node.names if a.name == API_MODULE and a.asname)
        offenders += [
            f"{mod.rel}:{node.lineno}: uses {API_MODULE}.{node.attr}"
            for node in ast.walk(mod.tree)
            if isinstance(node, ast.Attribute)
            and node.attr in heavy
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
        ]
    return sorted(offenders)


def describe_heavy_chains(modules: dict[str, Module], chains: list[tuple[str, ...]]) -> list[str]:
    """One entry per import that makes tui heavy (usually a few cause all): where it is, one chain that
    reaches it, and every light tui module it weighs on."""
    by_cause: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    for chain in chains:
        by_cause.setdefault((chain[-2], chain[-1]), []).append(chain)
    lines = []
    for (importer, heavy), group in sorted(by_cause.items()):
        imp = next(i for i in modules[importer].imports if i.function is None and i.module == heavy)
        lines.append(
            f"{imp.path}:{imp.line} imports {heavy}, loaded by {len(group)} tui module(s), e.g.\n"
            f"      {' -> '.join(min(group, key=len))}\n"
            f"      from: {', '.join(modules[c[0]].rel for c in group)}"
        )
    return lines


# --- the real tree -----------------------------------------------------------------------------------------


def fail_if(header: str, offenders: list[str]) -> None:
    if offenders:  # the list alone, without a traceback through the walker
        pytest.fail("\n  ".join([header, *offenders]), pytrace=False)


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    found = read_modules(REPO)
    # The walk sees the tree and its imports (a wrong root or glob would otherwise pass every rule).
    assert {"mlx_dpo", "mlx_dpo.cli", "mlx_dpo.cli.app", "tui", "tui.app"} <= set(found)
    assert sum(map(len, module_level_graph(found).values())) > len(found)
    return found


def test_no_import_cycle_among_module_level_imports(modules):
    cycles = import_cycles(modules)
    fail_if("import cycles:", [describe_cycle(modules, c) for c in cycles])


def test_no_function_local_import_in_the_library_except_optional_heavy_dependencies(modules):
    fail_if(
        f"imports inside functions (allowed lazily: {sorted(LAZY_IMPORTS_ALLOWED)}, and "
        f"{ {k: sorted(v) for k, v in LAZY_IMPORTS_ALLOWED_IN.items()} }); move them to the module top:",
        function_local_imports(modules),
    )


def test_modules_past_the_line_guide_are_named_and_none_runs_away(modules):
    for line in long_modules(modules, MODULE_LINES_GUIDE):  # shown in pytest's warnings summary
        warnings.warn(f"past the {MODULE_LINES_GUIDE}-line guide: {line}", stacklevel=1)
    fail_if(f"modules over {MAX_MODULE_LINES} lines:", long_modules(modules))


def test_no_function_over_60_statement_lines(modules):
    fail_if(f"functions over {MAX_FUNCTION_LINES} statement lines:", long_functions(modules))


def test_nothing_keeps_state_on_a_model_module(modules):
    fail_if(
        "state kept on a model module (keep it in the model session, mlx_dpo/models/session.py):",
        model_state_writes(modules),
    )


def test_the_library_never_imports_textual_or_tui(modules):
    fail_if("the library imports the user interface:", library_ui_imports(modules))


def test_only_the_tui_workers_reach_mlx_or_the_heavy_library_packages(modules):
    fail_if(
        f"tui modules other than {TUI_WORKER_MODULES} that load {HEAVY_FOR_TUI} when imported:",
        describe_heavy_chains(modules, tui_heavy_imports(modules)),
    )


def test_only_the_tui_workers_call_into_mlx_or_the_heavy_library_packages_even_lazily(modules):
    fail_if(
        f"tui modules other than {TUI_WORKER_MODULES} that import {HEAVY_FOR_TUI} inside a function:",
        tui_lazy_heavy_imports(modules),
    )


def test_the_app_reaches_the_library_through_its_api_alone(modules):
    fail_if(
        f"tui imports past the library's surface ({', '.join(TUI_LIBRARY_SURFACE)}):", tui_imports_past_the_api(modules)
    )


def test_only_the_tui_workers_use_the_apis_heavy_names(modules):
    assert {"train", "run_round", "load_model"} <= set(api_lazy_names(modules))  # the table is read
    fail_if(
        f"tui modules other than {TUI_WORKER_MODULES} that use a heavy name of {API_MODULE} (its LAZY table):",
        tui_heavy_api_uses(modules),
    )


def test_every_heavy_name_of_the_api_is_defined_where_its_table_says(modules):
    fail_if("the API's LAZY table names:", api_lazy_names_undefined(modules))
    exported = next(
        ast.literal_eval(n.value)
        for n in modules[API_MODULE].tree.body
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
    )
    assert sorted(set(api_lazy_names(modules)) - set(exported)) == []  # `from mlx_dpo.api import *` has them too


# --- each rule fails where it should (a made-up tree) ----------------------------------------------------------


def make_tree(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return read_modules(root)


def test_a_cycle_through_relative_and_submodule_imports_is_found_and_named(tmp_path):
    modules = make_tree(
        tmp_path,
        {
            "mlx_dpo/__init__.py": "",
            "mlx_dpo/a/__init__.py": "",
            "mlx_dpo/a/one.py": "from . import two\n",  # `from package import submodule`, relative
            "mlx_dpo/a/two.py": "from ..b.three import f\n",
            "mlx_dpo/b/__init__.py": "",
            "mlx_dpo/b/three.py": "import mlx_dpo.a.one\n\ndef f():\n    from mlx_dpo.a import two\n",
            "tui/__init__.py": "",
            "tui/app.py": "from mlx_dpo.a import one\n",  # into the cycle, not part of it
        },
    )
    assert import_cycles(modules) == [["mlx_dpo.a.one", "mlx_dpo.a.two", "mlx_dpo.b.three", "mlx_dpo.a.one"]]
    assert "mlx_dpo/a/two.py:1" in describe_cycle(modules, import_cycles(modules)[0])


def test_a_function_local_import_is_named_with_file_and_line_unless_allowed(tmp_path):
    modules = make_tree(
        tmp_path,
        {
            "mlx_dpo/__init__.py": "",
            "mlx_dpo/x.py": (
                "import json\n\nclass C:\n    def m(self):\n        from . import y\n"
                "        import mlx_lm.utils\n        import yaml\n"
            ),
            "mlx_dpo/y.py": "def f():\n    g = lambda: __import__('os')\n    from tui.app import App\n",
            "mlx_dpo/cli/__init__.py": "",
            "mlx_dpo/cli/app.py": "def run():\n    from tui.app import App\n",
            "tui/__init__.py": "",
            "tui/app.py": "def f():\n    import mlx_dpo.x\n",  # tui is not checked
        },
    )
    assert function_local_imports(modules) == [
        "mlx_dpo/x.py:5 in C.m(): imports mlx_dpo.y",
        "mlx_dpo/y.py:3 in f(): imports tui.app",
    ]


def test_long_modules_and_functions_are_named(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    modules = make_tree(
        tmp_path,
        {
            "mlx_dpo/__init__.py": "",
            "mlx_dpo/ok.py": f"def fits():\n{body[: body.rindex(chr(10))]}\n",  # exactly MAX_FUNCTION_LINES
            "mlx_dpo/big.py": f"class K:\n    async def long(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n"
            + "\n" * MAX_MODULE_LINES,
            "tui/__init__.py": "",
        },
    )
    assert long_functions(modules) == [f"mlx_dpo/big.py:2 long(): {MAX_FUNCTION_LINES + 1} statement lines"]
    assert long_modules(modules) == [f"mlx_dpo/big.py: {MAX_MODULE_LINES + MAX_FUNCTION_LINES + 2} lines"]


def test_ui_imports_in_the_library_and_heavy_imports_in_light_tui_modules_are_named(tmp_path):
    modules = make_tree(
        tmp_path,
        {
            "mlx_dpo/__init__.py": "",
            "mlx_dpo/names.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import textual\n",
            "mlx_dpo/ui.py": "try:\n    from textual.app import App\nexcept ImportError:\n    App = None\n",
            "mlx_dpo/data/__init__.py": "",
            "mlx_dpo/data/store.py": "from mlx_dpo.training import tokens\n",
            "mlx_dpo/training/__init__.py": "",
            "mlx_dpo/training/tokens.py": "import mlx.core as mx\n",
            "tui/__init__.py": "",
            "tui/app.py": "from . import workers\nfrom mlx_dpo import names\n",  # workers may be heavy
            "tui/workers.py": "import mlx_lm\n",
            "tui/screens/__init__.py": "from tui.screens import label\n",
            "tui/screens/label.py": "from mlx_dpo.data.store import Store\n",
            "tui/screens/write.py": "def f():\n    import mlx\n",  # lazily: not at import time
        },
    )
    assert library_ui_imports(modules) == ["mlx_dpo/ui.py:2: imports textual.app"]
    assert tui_lazy_heavy_imports(modules) == ["tui/screens/write.py:2 in f(): imports mlx"]
    chains = tui_heavy_imports(modules)
    assert chains == [
        ("tui.screens", "tui.screens.label", "mlx_dpo.data.store", "mlx_dpo.training.tokens"),
        ("tui.screens.label", "mlx_dpo.data.store", "mlx_dpo.training.tokens"),
        ("tui.screens.write", "tui.screens", "tui.screens.label", "mlx_dpo.data.store", "mlx_dpo.training.tokens"),
    ]
    assert describe_heavy_chains(modules, chains) == [
        "mlx_dpo/data/store.py:1 imports mlx_dpo.training.tokens, loaded by 3 tui module(s), e.g.\n"
        "      tui.screens.label -> mlx_dpo.data.store -> mlx_dpo.training.tokens\n"
        "      from: tui/screens/__init__.py, tui/screens/label.py, tui/screens/write.py"
    ]


def test_state_on_a_model_module_is_named_with_file_and_line(tmp_path):
    modules = make_tree(
        tmp_path,
        {
            "mlx_dpo/__init__.py": "",
            "mlx_dpo/check.py": (
                "def probe(model, loaded, found):\n    setattr(model, '_found', found)\n"
                "    loaded.model._found = found\n    model.calls += 1\n    delattr(model, '_found')\n"
                "    loaded.checks = found\n    model = found\n"
            ),  # the session's own fields are fine
            "tui/__init__.py": "",
        },
    )
    assert model_state_writes(modules) == [
        "mlx_dpo/check.py:2: setattr()",
        "mlx_dpo/check.py:3: assigns loaded.model._found",
        "mlx_dpo/check.py:4: assigns model.calls",
        "mlx_dpo/check.py:5: delattr()",
    ]


def test_imports_past_the_api_and_heavy_api_names_in_light_tui_modules_are_named(tmp_path):
    modules = make_tree(
        tmp_path,
        {
            "mlx_dpo/__init__.py": "",
            "mlx_dpo/api.py": "LAZY = {'train': 'mlx_dpo.run', 'gone': 'mlx_dpo.run', 'lost': 'mlx_dpo.nowhere'}\n",
            "mlx_dpo/run.py": "def train():\n    pass\n",
            "mlx_dpo/errors.py": "",
            "mlx_dpo/data/__init__.py": "",
            "mlx_dpo/data/store.py": "",
            "tui/__init__.py": "",
            "tui/__main__.py": "from mlx_dpo.run import train\n",  # the launcher: not part of the app
            "tui/app.py": (
                "from mlx_dpo.api import PreferenceStore, train\nfrom mlx_dpo.errors import E\n"
                "from mlx_dpo.data.store import S\nfrom mlx_dpo import api as a\n\n"
                "def f():\n    import mlx_lm\n    return a.train, a.PreferenceStore\n"
            ),
            "tui/workers/__init__.py": "from mlx_dpo import api\n\ndef g():\n    return api.train\n",
        },
    )
    assert tui_imports_past_the_api(modules) == [
        "tui/app.py:3: imports mlx_dpo.data.store",
        "tui/app.py:7: imports mlx_lm",
    ]
    assert tui_heavy_api_uses(modules) == [
        "tui/app.py:1: imports train from mlx_dpo.api",
        "tui/app.py:8: uses mlx_dpo.api.train",
    ]
    assert api_lazy_names_undefined(modules) == [
        "mlx_dpo/api.py: LAZY['gone'] = 'mlx_dpo.run': mlx_dpo/run.py defines no gone",
        "mlx_dpo/api.py: LAZY['lost'] = 'mlx_dpo.nowhere': no such module",
    ]


def test_the_slow_tests_listed_in_conftest_exist():
    # A renamed test would silently move to `make test-fast`: every name the tier list gives must be a test.
    from conftest import SLOW_TESTS

    missing = []
    for file, names in SLOW_TESTS.items():
        path = REPO / "tests" / file
        if not path.is_file():
            missing.append(f"tests/{file}: no such file")
            continue
        defined = {
            n.name
            for n in ast.parse(path.read_text(encoding="utf-8")).body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test")
        }
        missing += [f"tests/{file}: no test {name}" for name in sorted(set(names) - defined) if names != "*"]
    fail_if("tests/conftest.py SLOW_TESTS names tests that do not exist:", missing)
