"""data/ has no import circle (counting imports inside functions too), errors.py is a leaf, and
the frame-folder reader and the opener do not import each other both ways."""
import ast
from pathlib import Path

import videored.data

DATA = Path(videored.data.__file__).parent


def _data_imports(path: Path) -> set[str]:
    """Modules of videored.data that `path` imports anywhere (module level or in a function)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import x
                names = [node.module] if node.module else [a.name for a in node.names]
            elif node.module and node.module.startswith("videored.data"):
                rest = node.module[len("videored.data"):].lstrip(".")
                names = [rest] if rest else [a.name for a in node.names]
            else:
                continue
            out.update(n.split(".")[0] for n in names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[2] for a in node.names
                       if a.name.startswith("videored.data.") and a.name.count(".") >= 2)
    return out & {p.stem for p in DATA.glob("*.py")} - {"__init__"}


def test_no_import_circle_in_data():
    graph = {p.stem: _data_imports(p) for p in DATA.glob("*.py") if p.stem != "__init__"}
    assert graph["errors"] == set()  # the leaf every reader shares
    assert "decoding" not in graph["frame_folder"]
    assert "davis" in graph["masks"] and "video_dataset" not in graph["davis"]

    def cycle_from(node, path):
        for nxt in graph[node]:
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            found = cycle_from(nxt, path + [nxt])
            if found:
                return found
        return None

    for module in graph:
        cycle = cycle_from(module, [module])
        assert cycle is None, " -> ".join(cycle)
