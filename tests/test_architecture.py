"""The package's layering (docs/architecture.md), enforced on the source: every import of an e4e module in
src/e4e (top-level or inside a function: a lazy import is still a dependency) may point only to the same
layer or a lower one, and no modules import each other in a cycle.

LAYERS is the table: (layer, module prefixes), lowest first; the longest matching prefix places a module.
A new module under a listed package (e.g. e4e.data.avatars) is placed by its package; a new top-level
module or package must be added to the table, or the test names it.
"""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = [
    ("foundation", ["e4e.errors", "e4e.imageio", "e4e.latents", "e4e.assets", "e4e.plot", "e4e.outputs", "e4e.devices",
                    "e4e.interchange", "e4e.resultcache",
                    # native: a safetensors + JSON container; strict: state dict vs module. No model knowledge
                    "e4e.checkpoints.native", "e4e.checkpoints.strict"]),
    ("ops", ["e4e.ops"]),
    ("nets", ["e4e.nets"]),
    ("models", ["e4e.inverter", "e4e.fast", "e4e.aot", "e4e.pipeline", "e4e.sampling", "e4e.metrics", "e4e.align",
                "e4e.pasteback", "e4e.video", "e4e.data", "e4e.refine"]),
    ("checkpoints", ["e4e.checkpoints"]),
    ("tasks", ["e4e.losses", "e4e.editing", "e4e.evaluate", "e4e.benchmark", "e4e.train"]),
    ("api", ["e4e.api", "e4e"]),  # `e4e` itself: the package's lazy facade over e4e.api
    ("apps", ["e4e.cli", "e4e.web", "e4e.serve"]),
]
PACKAGE_ONLY = {"e4e"}  # matches the package itself, not every module below it (those need their own row)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "e4e").rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """e4e modules that `name` imports; `from pkg import sub` counts as importing pkg.sub when sub is one."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "e4e"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "e4e":
                continue
            subs = {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known}
            out |= subs if len(subs) == len(node.names) else subs | {mod}
    out.discard(name)
    return out


def layer_of(name: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            below = name.startswith(p + ".") and p not in PACKAGE_ONLY
            if (name == p or below) and (best is None or len(p) > len(best[1])):
                best = (i, p)
    assert best is not None, f"{name} is in no layer: add it to LAYERS in tests/test_architecture.py"
    return best[0]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_point_down_the_layers():
    bad = []
    for name, deps in graph().items():
        for dep in deps:
            if layer_of(dep) > layer_of(name):
                bad.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    assert not bad, "imports against the layering (docs/architecture.md):\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    """Between modules, ignoring a package's own __init__ (which re-exports its submodules)."""
    g = graph()
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in g.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d in edges and d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_rule_sees_imports(tmp_path):
    """The parser finds absolute, relative, lazy and `from e4e import sub` imports (the test can fail)."""
    pkg = tmp_path / "e4e" / "nets"
    pkg.mkdir(parents=True)
    f = pkg / "x.py"
    f.write_text("from e4e import cli\nfrom .stylegan2 import G\n\ndef f():\n    import e4e.train.e4e\n")
    known = {"e4e.cli", "e4e.nets.stylegan2", "e4e.train.e4e"}
    global SRC
    saved, SRC = SRC, tmp_path
    try:
        found = imports(module_name(f), f, known)
    finally:
        SRC = saved
    assert found == known
    assert layer_of("e4e.cli") > layer_of("e4e.nets.x")
