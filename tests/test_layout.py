"""The structure: three layers whose imports point down only, and blocks that take their operations from a path.

    npw2v2.app   (model object, pipeline, decoding, writers, cli, distributed, explain, bench)
       |
    npw2v2.io    (weights, languages, audio)
       |
    npw2v2.core  (pure functions of arrays and a config: NumPy, and CuPy through backend)

convert/ sits beside the application layer: it may use the core and I/O, never the applications.
Every import statement counts, those inside functions included.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "npw2v2"
LAYERS = ["core", "io", "app"]  # bottom to top
# What each layer may import besides the standard library and the npw2v2 layers at or below it.
THIRD_PARTY = {
    "core": {"numpy"},
    "io": {"numpy", "scipy", "soundfile", "safetensors", "huggingface_hub", "kenlm"},  # the last two optional
    "app": {"numpy", "scipy", "soundfile", "safetensors", "ray", "torch", "transformers", "onnxruntime"},  # bench
}
BACKEND_ONLY = {"cupy", "cupyx", "scipy"}  # the core's door to other array libraries: backend.py alone
# The operations that differ between the reference and the fast path (npw2v2.core.ops.Ops).
PATH_OPERATIONS = {"conv1d", "layer_norm", "group_norm", "gelu", "activation", "attention", "feature_encoder"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, names imported from it) for every import statement in the file."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [alias.name for alias in node.names]
            if node.module is None:  # from . import a, b: each is a module
                found += [(f"{module}.{name}", []) for name in names]
            else:
                found.append((module, names))
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "npw2v2" and len(parts) > 1 and parts[1] in LAYERS else None


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


STDLIB = set(sys.stdlib_module_names) | {"__future__"}


@pytest.mark.parametrize("path", python_files(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    own = layer_of(module_name(path))
    if own is None:
        return  # npw2v2/__init__, __main__, _openblas: the package's door, checked below
    allowed_layers = LAYERS[:LAYERS.index(own) + 1]
    for module, _ in imports(path):
        top = module.split(".")[0]
        if top == "npw2v2":
            target = layer_of(module)
            door = target is None and module != "npw2v2._openblas"  # the package's own names: load loads app
            assert (target in allowed_layers) if target else (own == "app" or not door), \
                f"{module_name(path)} ({own}) imports {module}, a layer above it"
        elif top not in STDLIB:
            allowed = THIRD_PARTY[own] | (BACKEND_ONLY if module_name(path) == "npw2v2.core.backend" else set())
            assert top in allowed, f"{module_name(path)} ({own}) imports {module}"


@pytest.mark.parametrize("path", python_files(ROOT / "convert"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_converter_uses_the_core_and_io_only(path):
    for module, _ in imports(path):
        assert layer_of(module) != "app", f"convert/{path.name} imports {module}"


# Modules whose blocks take the path-specific operations from ``ops``, never straight from a path.
BLOCKS = ["transformer", "adapters", "heads", "wav2vec2", "params", "lengths"]


@pytest.mark.parametrize("block", BLOCKS)
def test_blocks_take_their_operations_from_the_path(block):
    for module, names in imports(PACKAGE / "core" / f"{block}.py"):
        assert module != "npw2v2.core.fast", f"core/{block}.py imports the fast path"
        if module == "npw2v2.core.layers":
            assert not PATH_OPERATIONS & set(names), f"core/{block}.py imports {PATH_OPERATIONS & set(names)} " \
                                                     "from layers: take them from ops"


def test_the_reference_never_uses_the_fast_path():
    for name in ("layers", "conv_encoder"):
        assert all(module != "npw2v2.core.fast" for module, _ in imports(PACKAGE / "core" / f"{name}.py"))


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``statement``."""
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(run.stdout.split())


ABOVE_THE_CORE = ("npw2v2.io", "npw2v2.app", "soundfile", "safetensors", "ray", "scipy.signal", "npw2v2_convert")


@pytest.mark.parametrize("module", sorted(p.stem for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__"))
def test_importing_a_core_module_loads_nothing_above_it(module):
    loaded = loaded_after(f"import npw2v2.core.{module}")
    above = sorted(m for m in loaded if m.startswith(ABOVE_THE_CORE))
    assert not above, f"import npw2v2.core.{module} loaded {above}"


def test_importing_the_package_loads_its_public_names_on_use():
    assert not any(m.startswith(("npw2v2.io", "npw2v2.app")) for m in loaded_after("import npw2v2"))
    loaded = loaded_after("import npw2v2; npw2v2.load")
    assert "npw2v2.app.model" in loaded and "npw2v2.app.cli" not in loaded


def test_public_names_resolve():
    import npw2v2

    for name in npw2v2.__all__:
        assert getattr(npw2v2, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        npw2v2.nothing  # noqa: B018


def test_installed_converter_takes_a_name_of_its_own(tmp_path):
    """Installed, the converter is npw2v2_convert; nothing named plain ``convert`` reaches site-packages."""
    code = ("import importlib.util as u; print(u.find_spec('npw2v2') is not None, "
            "u.find_spec('npw2v2_convert') is not None, u.find_spec('convert') is not None)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    installed, named, clashing = run.stdout.split()
    if installed == "False":
        pytest.skip("npw2v2 is not installed in this environment (pip install .)")
    assert (named, clashing) == ("True", "False")
