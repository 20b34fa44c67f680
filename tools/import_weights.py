"""Turn a published checkpoint into a separator release package.

    python -m tools.import_weights FILE [--config YAML] [--format FORMAT] -o release_models/NAME.th
    python -m tools.import_weights BAG.yaml -o release_models/NAME.yaml

FILE is read as data (`torch.load(weights_only=True)`; nothing it names is imported): a Demucs
release package, lucidrains' / Music-Source-Separation-Training's RoFormer state dict, a
Spleeter checkpoint... (`separator.importers`: one module per format; the format is found from
the content, or named with --format). The architecture's hyper-parameters come from the file
where it carries them (Demucs packages do), else from --config (MSST's `config_*.yaml`, read as
it is). The package written (atomically) is one `separator -n NAME --repo DIR`, bags and
`continue_from=FILE` use; its `imported` entry says where it came from.

A Demucs bag (`remote/*.yaml`: `models: [SIG, ...]`, optional `weights`, `segment`; the
packages `SIG.th` / `SIG-CHECKSUM.th` next to it) becomes our bag: `NAME.yaml` and one
package `SIG.th` per model in the folder of `-o` (NAME: the name `-o` gives, else the bag's;
`-o` may be that folder).
"""
import argparse
import sys
import typing as tp
from pathlib import Path

from separator.importers import FORMATS, import_checkpoint
from separator.states import atomic_save, load_model


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser('tools.import_weights', description=__doc__.split('\n')[0])
    parser.add_argument('file', type=Path, help="the published checkpoint (Spleeter, Open-Unmix: "
                        "the folder of its per-source .ckpt / .pth files; a Demucs bag: its "
                        ".yaml)")
    parser.add_argument('--sources', nargs='+', help="Spleeter, Open-Unmix: the sources of its "
                        "per-source files, in order (Spleeter's default: vocals accompaniment; "
                        "Open-Unmix: the targets to take, in this order)")
    parser.add_argument('-o', '--out', type=Path, required=True,
                        help="the package to write, e.g. release_models/NAME.th (a bag: "
                        "release_models/NAME.yaml)")
    parser.add_argument('--config', type=Path,
                        help="yaml with the hyper-parameters, for files that have none")
    parser.add_argument('--format', choices=FORMATS, help="the format, if not found from the "
                        "content")
    return parser


def is_bag(path: Path) -> bool:
    """A Demucs bag is a yaml file (checkpoints never are)."""
    return path.suffix in ('.yaml', '.yml')


def import_bag(args: argparse.Namespace) -> None:
    """Import the Demucs bag `args.file` (`separator.importers.demucs.import_bag`)."""
    from separator.importers.demucs import import_bag as import_demucs_bag
    from separator.pretrained import get_model
    if args.config or args.format or args.sources:
        raise ValueError("a Demucs bag has its hyper-parameters in its packages: it takes no "
                         "--config, --format or --sources.")
    if args.out.is_dir() or not args.out.suffix:
        folder, name = args.out, None
    else:
        folder, name = args.out.parent, args.out.stem
    target = import_demucs_bag(args.file, folder, name)
    bag = get_model(target.stem, folder)
    print(f"Imported the Demucs bag {args.file} as {target} ({len(bag.models)} models, their "
          f"packages next to it), sources {', '.join(bag.sources)} (`separator -n "
          f"{target.stem} --repo {folder}`)")


def import_package(args: argparse.Namespace) -> None:
    """Import the checkpoint (or folder of per-source files) `args.file` as one package."""
    out = args.out if args.out.suffix == '.th' else args.out.with_name(args.out.name + '.th')
    if args.file.is_dir():   # one file per source: Spleeter's *.ckpt, Open-Unmix's *.pth
        from separator.importers import read_config, spleeter, umx
        module = umx if args.format == 'umx' or any(args.file.glob('*.pth')) else spleeter
        package = module.convert_files(args.file, args.sources, read_config(args.config))
    else:
        package = import_checkpoint(args.file, args.config, args.format)
    model = load_model(package)
    atomic_save(package, out)
    size = sum(p.numel() for p in model.parameters())
    print(f"Imported {args.file} ({package['imported']['format']} format) as a "
          f"{package['model']} of {size / 1e6:.2f} M parameters, sources "
          f"{', '.join(model.sources)}: {out} (`separator -n {out.stem} --repo {out.parent}`)")


def error_line(error: Exception, args: argparse.Namespace) -> str:
    """The error on one line, naming the file(s) read unless it already does."""
    message = ' '.join(str(error).split())
    if str(args.file) in message:
        return message
    files = f"{args.file}" + (f" (config {args.config})" if args.config else '')
    return f"{files}: {message}"


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        if is_bag(args.file):
            import_bag(args)
        else:
            import_package(args)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"import_weights: error: {error_line(error, args)}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
