"""Checks of the package's shape by reading its source (AST): one home for each decision."""

import ast
from pathlib import Path

import pytest

from bioreps.studies import kinds

PKG = Path(__file__).resolve().parent.parent / "bioreps"
# the modules that orchestrate: they read a model's class, never its kind name or its attributes by probing
READERS = sorted(PKG.glob("studies/*.py")) + [PKG / "cli.py", PKG / "torch_views.py"]
MODEL_NAMES = {"model", "layer", "loaded", "m"}
# strings that equal a kind but mean something else: (file, value)
NOT_KINDS = {("bioreps/layers/spiking.py", "pixels")}   # SpikingWTA(encoding="pixels")


def _tree(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _rel(path):
    return path.relative_to(PKG.parent).as_posix()


def _kind_literals(tree):
    """(line, value) of string constants equal to a registered kind, except ``kind = "..."`` in a class body."""
    allowed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                        and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == "kind"
                        and isinstance(stmt.value, ast.Constant)):
                    allowed.add(id(stmt.value))
    names = set(kinds.names())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in names
            and id(n) not in allowed and id(n) not in docstrings]


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=_rel)
def test_no_kind_literal_outside_its_class(path):
    """A model kind is declared once, on its class; nothing else spells it."""
    assert [(line, v) for line, v in _kind_literals(_tree(path)) if (_rel(path), v) not in NOT_KINDS] == []


@pytest.mark.parametrize("path", READERS, ids=_rel)
def test_readers_do_not_probe_models(path):
    """Runners, reports, the CLI and the torch views read declared capabilities, not hasattr/getattr."""
    bad = [(n.lineno, n.func.id, n.args[0].id) for n in ast.walk(_tree(path))
           if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("hasattr", "getattr")
           and n.args and isinstance(n.args[0], ast.Name) and n.args[0].id in MODEL_NAMES]
    assert bad == []


def _imports(path, package):
    """Modules of ``package`` that ``path`` imports (module level and inside functions)."""
    mod_parts = path.relative_to(PKG.parent).with_suffix("").parts
    out = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(mod_parts[:len(mod_parts) - node.level])
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            names = [target + [a.name] for a in node.names] + [target]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        else:
            continue
        for parts in names:
            dotted = ".".join(parts)
            if dotted.startswith(package + ".") and (PKG.parent / Path(*parts)).with_suffix(".py").exists():
                out.add(dotted)
    return out


def test_baselines_import_graph_is_acyclic():
    graph = {}
    for path in sorted(PKG.glob("baselines/*.py")):
        name = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
        graph[name] = {m for m in _imports(path, "bioreps.baselines") if m != name}
    state = {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"import cycle: {' -> '.join(trail + [node])}"
        state[node] = "open"
        for nxt in graph.get(node, ()):
            visit(nxt, trail + [node])
        state[node] = "done"

    for node in graph:
        visit(node, [])


# ------------------------------------------------------------------ one helper for each chore
ALL = sorted(PKG.rglob("*.py"))
# (file, function) allowed to rename files into place or save figures: the one home of each chore
WRITERS = {("bioreps/_files.py", "commit"), ("bioreps/_files.py", "check_writable"),
           ("bioreps/plots.py", "save_figure"), ("bioreps/plots.py", "figure_data_uri")}


def _calls(tree):
    """(enclosing function name, call text) of every call of os.replace/os.rename/
    tempfile.mkstemp/<x>.savefig in ``tree``."""
    found = []

    def walk(node, func):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                f = child.func
                owner = f.value.id if isinstance(f.value, ast.Name) else None
                if (owner, f.attr) in (("os", "replace"), ("os", "rename"), ("tempfile", "mkstemp")) \
                        or f.attr == "savefig":
                    found.append((func, f"{owner or '<expr>'}.{f.attr}"))
            walk(child, name)

    walk(tree, None)
    return found


def test_files_and_figures_are_written_through_one_helper():
    """Atomic replacement lives in bioreps._files (commit) and figure saving in
    bioreps.plots.save_figure; nothing else renames files into place or calls savefig."""
    offenders = [f"{_rel(p)}:{func}: {call}" for p in ALL for func, call in _calls(_tree(p))
                 if (_rel(p), func) not in WRITERS]
    assert offenders == []


def test_no_private_copies_of_the_argument_checks():
    """check_int/check_float/check_random_state live in bioreps._validation only, imported
    under their own names."""
    offenders = []
    for p in ALL:
        for node in ast.walk(_tree(p)):
            if isinstance(node, ast.FunctionDef) and node.name in ("_check_int", "_check_float", "_check_eps",
                                                                    "_numpy_rng"):
                offenders.append(f"{_rel(p)}: def {node.name}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("_validation"):
                offenders += [f"{_rel(p)}: {a.name} as {a.asname}" for a in node.names if a.asname]
    assert offenders == []


def test_analysis_imports_no_private_names():
    """bioreps.analysis modules import only public names from each other (and nothing from the
    layers, baselines or studies, whose orchestration sits above them)."""
    offenders = []
    for p in sorted((PKG / "analysis").glob("*.py")):
        for node in ast.walk(_tree(p)):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                mod = node.module or ""
                if node.level == 2 and mod.split(".")[0] in ("layers", "baselines", "studies", "experiments"):
                    if p.name != "report.py":  # the deprecated alias of bioreps.studies.report
                        offenders.append(f"{_rel(p)}: from {'.' * node.level}{mod}")
                offenders += [f"{_rel(p)}: {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert offenders == []
