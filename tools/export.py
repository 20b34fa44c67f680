"""Export trained XPs as self-contained model packages.

    python -m tools.export SIG [SIG ...] [-o release_models] [--half | --quantize diffq]
        [--format demucs]
        [--torchscript] [--onnx] [--xps outputs/xps]

Writes `OUT/SIG.th` for each XP: the model's registry name, its constructor arguments, the weights of
the best state (the last weights if there is none), the XP signature and its final test
metrics. `separator.states.load_model(path)` rebuilds the model without any Hydra config;
`separator.pretrained.get_model(SIG, OUT)` and the `separator` command use these packages.
With `--half` the weights are stored as float16 (half the size); they are loaded back as
float32. With `--quantize diffq` (XPs trained with `quant.diffq` only) they are DiffQ's
bit-packed quantized weights, the ones the XP's validation and test ran with, as in Demucs'
release models; they too are loaded back as float32. Without it, an XP trained with DiffQ
is exported with its float weights. With `--torchscript`, also `OUT/SIG.ts`: the model traced
for inputs of its segment length (`torch.jit.load`); with `--onnx`, also `OUT/SIG.onnx`
(`export_onnx`); each is checked against PyTorch (the max abs difference is printed).
"""
import argparse
import contextlib
import importlib.util
import io
import logging
import sys
import typing as tp
from pathlib import Path

import torch

from separator.pretrained import DEFAULT_XPS
from separator.states import (PackageError, atomic_save, load_model, read_xp_checkpoint,
                              release_package)


class ExportError(ValueError):
    """An XP cannot be exported; the message names the fix."""


def make_package(checkpoint: dict, half: bool = False,
                 quantize: tp.Optional[str] = None) -> dict:
    """`states.release_package`, its errors as ExportError."""
    try:
        return release_package(checkpoint, half, quantize)
    except PackageError as error:
        raise ExportError(str(error)) from None


def serialized_size(obj: tp.Any) -> int:
    """Bytes that `torch.save(obj)` writes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def read_checkpoint(sig: str, xps: Path) -> dict:
    """The checkpoint of XP `sig` in the XP folder `xps`; ExportError naming the fix."""
    try:
        checkpoint = read_xp_checkpoint(sig, xps, f"XP {sig}")
    except ValueError as error:
        raise ExportError(f"{error} (--xps is the folder holding the XPs.)") from error
    if checkpoint.get('sig') is None:
        checkpoint['sig'] = sig
    return checkpoint


def write_package(checkpoint: dict, out: Path, half: bool = False,
                  quantize: tp.Optional[str] = None) -> tp.Tuple[Path, dict]:
    """Write the package of `checkpoint` (`read_checkpoint`) to `out/SIG.th` atomically;
    return that path and the package."""
    package = make_package(checkpoint, half, quantize)
    target = Path(out) / f"{checkpoint['sig']}.th"
    atomic_save(package, target)
    return target, package


def export_xp(sig: str, xps: Path, out: Path, half: bool = False,
              quantize: tp.Optional[str] = None) -> Path:
    """Export XP `sig` from the XP folder `xps` to `out/SIG.th`; return that path."""
    return write_package(read_checkpoint(sig, xps), out, half, quantize)[0]


def write_demucs_release(package: dict, out: Path, sig: str, half: bool = False) -> Path:
    """Our package as Demucs's `OUT/SIG-CHECKSUM.th`; ExportError when the model does not
    compute what Demucs's own class would (`separator.importers.demucs.check_exportable`)."""
    from separator.importers.demucs import to_demucs_package, write_demucs_package
    try:
        return write_demucs_package(to_demucs_package(package, half=half), out, sig)
    except PackageError as error:
        raise ExportError(str(error)) from None


def model_and_inputs(package: dict, example_batch: int, check_batch: int
                     ) -> tp.Tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The float32 model of `package` in eval mode, and two seeded random inputs of its
    segment length: the example an exporter sees, and another batch to check its output."""
    model = load_model(package).float().eval()
    length = int(model.segment * model.samplerate)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(example_batch, model.audio_channels, length, generator=generator)
    check = torch.randn(check_batch, model.audio_channels, length, generator=generator)
    return model, example, check


def export_torchscript(package: dict, target: Path) -> float:
    """Trace the model of `package` at its segment length into `target` (TorchScript); return
    the max abs difference with PyTorch on another input (batch of 2) of that length.

    Tracing, not scripting: the STFT and U-Net code is plain Python. A traced model takes
    inputs of exactly `segment` seconds, the chunks of chunked inference (`apply_model`
    cuts a song into such chunks; pad a shorter song).
    """
    model, example, check = model_and_inputs(package, example_batch=1, check_batch=2)
    with torch.no_grad():
        try:
            traced = torch.jit.trace(model, example, check_trace=False)
        except Exception as error:       # tracing can fail in many ways: name the model
            raise ExportError(f"cannot trace {type(model).__name__} for TorchScript: "
                              f"{error}") from error
        difference = (traced(check) - model(check)).abs().max().item()
    atomic_save(traced, target, save=torch.jit.save)
    return difference


ONNX_PACKAGES = ('onnx', 'onnxscript', 'onnxruntime')


def export_onnx(package: dict, target: Path) -> float:
    """Export the model of `package` to ONNX in `target`; return the max abs difference
    between onnxruntime and PyTorch on a batch of 3 inputs.

    `torch.onnx.export` (the torch.export-based exporter, opset 18): the input is `mix`
    [batch, channels, segment * samplerate], any batch, the segment fixed as for TorchScript;
    the output `sources` [batch, sources, channels, time]. The STFT becomes ONNX's STFT op
    and the inverse STFT an inverse DFT and an overlap-add (`separator.spec`), so the whole
    hybrid model is in the graph. The graph's metadata gives what a runtime needs to cut
    songs into chunks: sources, samplerate, segment, audio_channels, and the XP signature.
    """
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"--onnx needs the packages {', '.join(ONNX_PACKAGES)} ("
                          f"{', '.join(missing)} missing): pip install -e '.[onnx]'.")
    import onnx
    import onnxruntime

    # a batch of 2 in the example: torch.export would specialise a dimension of size 1
    model, example, check = model_and_inputs(package, example_batch=2, check_batch=3)
    batch = torch.export.Dim('batch', min=1, max=1024)
    quiet = logging.getLogger('torch.onnx')
    level = quiet.level
    quiet.setLevel(logging.ERROR)             # "torchvision is not installed" and such
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(model, (example,), input_names=['mix'],
                                        output_names=['sources'], opset_version=18,
                                        dynamic_shapes=({0: batch},), dynamo=True)
    except Exception as error:      # the exporter fails in many ways: name the model
        raise ExportError(f"cannot export {type(model).__name__} to ONNX: "
                          f"{str(error).splitlines()[0]}") from error
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    metadata = {'sources': ','.join(model.sources), 'samplerate': model.samplerate,
                'segment': model.segment, 'audio_channels': model.audio_channels,
                'sig': package.get('sig') or ''}
    onnx.helper.set_model_props(proto, {key: str(value) for key, value in metadata.items()})
    atomic_save(proto, target, save=lambda proto, fout: fout.write(proto.SerializeToString()))
    session = onnxruntime.InferenceSession(str(target), providers=['CPUExecutionProvider'])
    output, = session.run(None, {'mix': check.numpy()})
    with torch.no_grad():
        return (torch.from_numpy(output) - model(check)).abs().max().item()


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m tools.export',
        description="Export trained XPs as self-contained model packages OUT/SIG.th.")
    parser.add_argument('sigs', nargs='+', metavar='SIG', help="signatures of the XPs")
    parser.add_argument('-o', '--out', type=Path, default=Path('release_models'),
                        help="output folder (default: %(default)s)")
    parser.add_argument('--half', action='store_true',
                        help="store the weights as float16 (loaded back as float32)")
    parser.add_argument('--quantize', choices=['diffq'],
                        help="store DiffQ's bit-packed quantized weights (XPs trained with "
                             "quant.diffq; loaded back as float32)")
    parser.add_argument('--torchscript', action='store_true',
                        help="also write OUT/SIG.ts, the model traced with TorchScript for "
                             "inputs of its segment length, checked against PyTorch")
    parser.add_argument('--onnx', action='store_true',
                        help="also write OUT/SIG.onnx for inputs of its segment length (any "
                             "batch), checked against PyTorch with onnxruntime")
    parser.add_argument('--format', choices=['separator', 'demucs'], default='separator',
                        help="demucs: OUT/SIG-CHECKSUM.th, a Demucs release package that "
                             "`demucs --repo OUT -n SIG` separates with (htdemucs/hdemucs "
                             "trained with compat=demucs, or imported from Demucs; model=demucs)")
    parser.add_argument('--xps', type=Path, default=DEFAULT_XPS,
                        help="folder of the XPs (default: %(default)s)")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.half and args.quantize:
        parser.error("--half and --quantize diffq exclude each other.")
    if args.format == 'demucs' and (args.quantize or args.torchscript or args.onnx):
        parser.error("--format demucs writes float weights (--half: float16) only.")
    failed = []
    for sig in args.sigs:
        try:
            checkpoint = read_checkpoint(sig, args.xps)
            if args.format == 'demucs':
                target = write_demucs_release(make_package(checkpoint), args.out, sig, args.half)
                print(f"Exported XP {sig} as a Demucs package: {target} (`demucs --repo "
                      f"{args.out} -n {sig}`)")
                continue
            target, package = write_package(checkpoint, args.out, args.half, args.quantize)
            if args.torchscript:
                script = target.with_suffix('.ts')
                difference = export_torchscript(package, script)
                print(f"TorchScript of XP {sig} in {script}: max abs difference with PyTorch "
                      f"{difference:.2e}")
            if args.onnx:
                graph = target.with_suffix('.onnx')
                difference = export_onnx(package, graph)
                print(f"ONNX of XP {sig} in {graph}: max abs difference with PyTorch "
                      f"{difference:.2e}")
        except (ExportError, OSError) as error:
            print(f"export: error: {error}", file=sys.stderr)
            failed.append(sig)
            continue
        size = target.stat().st_size
        line = f"Exported XP {sig} to {target} ({size / 2 ** 20:.3f} MiB"
        if args.quantize:
            full = serialized_size(make_package(checkpoint))
            line += f", {size / full:.3f} x the float32 export of {full / 2 ** 20:.3f} MiB"
        print(line + ")")
    if failed:
        print(f"export: {len(failed)} of {len(args.sigs)} XPs not exported: "
              f"{' '.join(failed)}", file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
