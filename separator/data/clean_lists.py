"""The clean lists of the SDX23 recipe: which training stems a filter judged clean.

The one owner of their format, read by training (`dset.clean_lists`) and written by the
filter (`tools.filter`, or a filter XP): a folder holding, per source,

    clean_<source>.txt      one track folder name per line: the stems judged clean
    silent_<source>.txt     the stems too quiet to judge (never clean)

`dset.clean_lists` names such a folder, or the signature of a filter XP, whose lists are in
its own folder's `filter/`.
"""
import typing as tp
from pathlib import Path

from ..atomic import write_text
from ..paths import absolute_path

XP_SUBFOLDER = 'filter'    # where a filter XP writes its lists, in its own folder


def list_path(folder: Path, kind: str, source: str) -> Path:
    """`folder/<kind>_<source>.txt`, kind `clean` or `silent`."""
    return Path(folder) / f'{kind}_{source}.txt'


def write_lists(folder: Path, kind: str, tracks: tp.Mapping[str, tp.Iterable[str]]) -> None:
    """Write one `<kind>_<source>.txt` per source (atomically), its tracks sorted."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for source, names in tracks.items():
        write_text(list_path(folder, kind, source), ''.join(f'{t}\n' for t in sorted(names)))


def filter_output(xp_folder: Path) -> Path:
    """Where a filter XP writes its clean lists."""
    return Path(xp_folder) / XP_SUBFOLDER


def clean_lists_folder(value: str, xps: tp.Optional[Path]) -> Path:
    """`dset.clean_lists`: a folder of clean lists, or the signature of a filter XP in `xps`."""
    folder = absolute_path(value)
    if folder.is_dir():
        return folder
    if xps is not None and (Path(xps) / str(value)).is_dir():
        folder = filter_output(Path(xps) / str(value))
        if not folder.is_dir():
            raise FileNotFoundError(
                f"dset.clean_lists={value}: XP {value} has no clean lists ({folder}); it is "
                f"not a filter XP (filter.model=SIG), or it has not run: `dora run -f {value}`.")
        return folder
    raise FileNotFoundError(f"dset.clean_lists={value}: neither a folder nor the signature of "
                            f"an XP in {xps}. Give the output folder of `python -m tools.filter` "
                            f"or the signature of a filter XP.")


def read_clean_lists(folder: Path, sources: tp.Sequence[str]) -> tp.Dict[str, tp.Set[str]]:
    """The track names whose stem is clean, per source."""
    lists = {}
    for source in sources:
        path = list_path(folder, 'clean', source)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: dset.clean_lists must be the output "
                                    f"folder of `python -m tools.filter` or a filter XP.")
        lists[source] = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    return lists
