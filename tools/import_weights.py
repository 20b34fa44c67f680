"""Turn a published checkpoint into a separator release package.

    python -m tools.import_weights FILE [--config YAML] [--format FORMAT] -o release_models/NAME.th

FILE is read as data (`torch.load(weights_only=True)`; nothing it names is imported): a Demucs
release package, lucidrains' / Music-Source-Separation-Training's RoFormer state dict, a
Spleeter checkpoint... (`separator.importers`: one module per format; the format is found from
the content, or named with --format). The architecture's hyper-parameters come from the file
where it carries them (Demucs packages do), else from --config (MSST's `config_*.yaml`, read as
it is). The package written (atomically) is one `separator -n NAME --repo DIR`, bags and
`continue_from=FILE` use; its `imported` entry says where it came from.
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
                        "the folder of its per-source .ckpt / .pth files)")
    parser.add_argument('--sources', nargs='+', help="Spleeter, Open-Unmix: the sources of its "
                        "per-source files, in order (Spleeter's default: vocals accompaniment; "
                        "Open-Unmix: the targets to take, in this order)")
    parser.add_argument('-o', '--out', type=Path, required=True,
                        help="the package to write, e.g. release_models/NAME.th")
    parser.add_argument('--config', type=Path,
                        help="yaml with the hyper-parameters, for files that have none")
    parser.add_argument('--format', choices=FORMATS, help="the format, if not found from the "
                        "content")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    out = args.out if args.out.suffix == '.th' else args.out.with_name(args.out.name + '.th')
    try:
        if args.file.is_dir():   # one file per source: Spleeter's *.ckpt, Open-Unmix's *.pth
            from separator.importers import read_config, spleeter, umx
            module = umx if args.format == 'umx' or any(args.file.glob('*.pth')) else spleeter
            package = module.convert_files(args.file, args.sources, read_config(args.config))
        else:
            package = import_checkpoint(args.file, args.config, args.format)
        model = load_model(package)
        atomic_save(package, out)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"import_weights: error: {error}", file=sys.stderr)
        return 1
    size = sum(p.numel() for p in model.parameters())
    print(f"Imported {args.file} ({package['imported']['format']} format) as a "
          f"{package['model']} of {size / 1e6:.2f} M parameters, sources "
          f"{', '.join(model.sources)}: {out} (`separator -n {out.stem} --repo {out.parent}`)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
