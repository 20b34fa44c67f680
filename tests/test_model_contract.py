"""The model contract (separator/models/base.py) holds for every registered model: a
SeparationModel subclass whose __init__ records its arguments (capture_init), with the
contract's attributes and one spelling of the FFT size; and the package has no import cycle
at module level (the layout that lets a newcomer add a model in one room)."""
import ast
import inspect
from pathlib import Path

import pytest

from separator.models import MODELS
from separator.models.base import SeparationModel

PACKAGE = Path(__file__).resolve().parent.parent / 'separator'


@pytest.mark.parametrize('name', sorted(MODELS))
def test_every_model_follows_the_contract(name):
    klass = MODELS[name]
    assert issubclass(klass, SeparationModel), name
    # capture_init wraps __init__ (functools.wraps keeps the signature reachable).
    assert hasattr(klass.__init__, '__wrapped__'), f"{name}: __init__ lacks @capture_init"
    parameters = inspect.signature(klass.__init__).parameters
    for argument in ('sources', 'audio_channels', 'samplerate', 'segment'):
        assert argument in parameters, (name, argument)
    source = inspect.getsource(inspect.getmodule(klass))
    assert 'self.nfft =' not in source, f"{name}: the FFT size is spelled n_fft"


def module_imports(path: Path) -> set:
    """The separator modules that `path` imports at module level (not inside functions)."""
    name = '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    package = package.removesuffix('.__init__')
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit('.', node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ''
            targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t.startswith('separator')}
    return found


def find_cycle(graph: dict) -> list:
    """A cycle of `graph` (name -> names it imports) as a list of names, or []."""
    state: dict = {}

    def visit(node, trail):
        state[node] = 'open'
        for target in sorted(graph[node]):
            if state.get(target) == 'open':
                return trail + [target]
            if target not in state:
                found = visit(target, trail + [target])
                if found:
                    return found
        state[node] = 'done'
        return []

    for name in sorted(graph):
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return []


def test_no_import_cycle_at_module_level():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) == []
    modules = {'.'.join(p.relative_to(PACKAGE.parent).with_suffix('').parts).removesuffix(
        '.__init__'): p for p in PACKAGE.rglob('*.py')}
    graph = {name: {t for t in module_imports(path) if t in modules and t != name}
             for name, path in modules.items()}
    assert sum(map(len, graph.values())) > 50      # the imports were found
    assert find_cycle(graph) == []
