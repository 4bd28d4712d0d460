"""The layers of DESIGN section 1 hold: no module imports a module of a higher layer."""
from __future__ import annotations

import ast
import pathlib

import otp

OTP_DIR = pathlib.Path(otp.__file__).parent
LAYERS = {
    "errors": 0, "terms": 0,
    "codec": 1,
    "protocol": 2, "deaths": 2, "transport": 2, "security": 2, "funcref": 2, "cookie": 2,
    "mailbox": 3, "links": 3, "signals": 3, "forkserver": 3, "agent": 3, "boot": 3, "runtime": 3, "process": 3,
    "registry": 3, "local_node": 3, "reports": 3, "broker_link": 3,
    "broker": 3.5,
    "gen_server": 4, "child_spec": 4, "supervisor": 4, "cluster": 4, "tcp": 4,
    "jobs": 5, "introspect": 3.5, "observer": 5, "chaos": 5, "pytest_plugin": 5, "demo": 5,
    "__main__": 6, "__init__": 6,
}


def imported_otp_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "otp":
            names.update(f"otp.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n.split(".")[1] if n.count(".") else "__init__" for n in names if n == "otp" or n.startswith("otp.")}


def test_every_module_has_a_layer():
    assert {p.stem for p in OTP_DIR.glob("*.py")} <= set(LAYERS)


def test_no_module_imports_upward():
    upward = []
    for path in OTP_DIR.glob("*.py"):
        layer = LAYERS[path.stem]
        for dep in imported_otp_modules(path) - {path.stem}:
            if dep == "__init__" and layer >= 5:
                continue  # tools are written against the public API, like user code
            if dep in LAYERS and LAYERS[dep] > layer:
                upward.append(f"{path.stem} (layer {layer}) imports {dep} (layer {LAYERS[dep]})")
    assert upward == []


def test_the_broker_never_imports_the_runtime():
    broker = OTP_DIR / "broker.py"
    if broker.exists():
        assert not imported_otp_modules(broker) & {"process", "agent", "node", "forkserver"}


def test_workers_use_only_the_public_api():
    workers_dir = OTP_DIR.parent / "workers"
    for path in workers_dir.rglob("*.py"):
        assert imported_otp_modules(path) <= {"__init__"}, path
