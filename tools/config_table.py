"""The README's table of config keys, made from `conf/config.yaml` and its comments.

    python -m tools.config_table            # print the table (Markdown)
    python -m tools.config_table --write    # replace it in README.md, between its markers

A key's description is its comment in conf/config.yaml (with the comment lines below it
that continue it), so the table cannot drift from the config: `tests/test_config_table.py`
fails when README.md's table is not the one this makes.
"""
import argparse
import re
import sys
import typing as tp
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / 'conf' / 'config.yaml'
README = ROOT / 'README.md'
BEGIN = '<!-- config-table: made by `python -m tools.config_table --write` -->'
END = '<!-- end of config-table -->'
SKIPPED = ('defaults', 'hydra')          # Hydra's own sections
LINE = re.compile(r'^(?P<indent> *)(?P<key>[A-Za-z_][\w]*):(?P<value>[^#]*?)\s*(#\s?(?P<note>.*))?$')
CONTINUED = re.compile(r'^\s+#\s?(?P<note>.*)$')


def config_keys(text: str) -> tp.List[tp.Tuple[str, str, str]]:
    """(dotted key, default, description) of every leaf key of a config file."""
    rows: tp.List[tp.List[str]] = []
    path: tp.List[tp.Tuple[int, str]] = []   # (indent, key) of the enclosing sections
    last: tp.Optional[tp.List[str]] = None
    for line in text.splitlines():
        continued = CONTINUED.match(line)
        if continued and last is not None:
            last[2] = f"{last[2]} {continued.group('note').strip()}".strip()
            continue
        match = LINE.match(line)
        if not match:
            last = None
            continue
        indent = len(match.group('indent'))
        path = [(i, k) for i, k in path if i < indent]
        key, value = match.group('key'), match.group('value').strip()
        note = (match.group('note') or '').strip()
        dotted = '.'.join([k for _, k in path] + [key])
        path.append((indent, key))
        if dotted.split('.')[0] in SKIPPED:
            last = None
            continue
        if value:
            last = [dotted, value, note]
            rows.append(last)
        else:                                  # a section: its comment goes on its first row
            last = [dotted, '', note] if note else None
            if note:
                rows.append(last)
    return [(key, value, note) for key, value, note in rows]


def table(text: str) -> str:
    lines = ['| key | default | what it is |', '|---|---|---|']
    for key, value, note in config_keys(text):
        cell = f'`{value}`' if value else '(section)'
        lines.append(f"| `{key}` | {cell} | {note.replace('|', '/')} |")
    return '\n'.join(lines)


def with_table(readme: str, made: str) -> str:
    """`readme` with the text between the markers replaced by `made`."""
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"README.md has no config table markers ({BEGIN} ... {END}).")
    head, rest = readme.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{made}\n{END}{tail}"


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--write', action='store_true', help="replace the table in README.md")
    args = parser.parse_args(argv)
    made = table(CONFIG.read_text())
    if not args.write:
        print(made)
        return 0
    README.write_text(with_table(README.read_text(), made))
    print(f"Wrote the table of {made.count(chr(10)) - 1} keys into {README}", file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
