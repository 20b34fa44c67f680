"""The ONNX export (`python -m tools.export SIG --onnx`) run by onnxruntime vs the PyTorch
model it comes from: seconds per chunk and max abs difference, side by side.

    python -m bench.onnx [--model htdemucs|hdemucs] [--batch 1] [--repeats 3] [--threads 2]

Both run the very same weights (our model class, random seeded weights, default size: the
full HTDemucs of `variant=sdx23`) on the same chunks of the model's segment length, on the
CPU with the same number of threads. The export itself (`tools.export.export_onnx`, which
also checks the graph) is timed apart.
"""
import argparse
import tempfile
import time
import typing as tp
from pathlib import Path

import torch

from separator.models import get_model_class
from separator.states import serialize_model
from tools.export import export_onnx

SOURCES = ['drums', 'bass', 'other', 'vocals']


def seconds_per_call(function: tp.Callable[[], tp.Any], repeats: int) -> float:
    """Mean wall time of `function` over `repeats` calls, after one warm-up call."""
    function()
    begin = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - begin) / repeats


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bench.onnx', description=__doc__.split(
        '\n\n')[0])
    parser.add_argument('--model', default='htdemucs', choices=['htdemucs', 'hdemucs'])
    parser.add_argument('--batch', type=int, default=1, help="chunks per call")
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    import onnxruntime

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = get_model_class(args.model)(SOURCES).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'model.onnx'
        begin = time.perf_counter()
        difference = export_onnx(serialize_model(model), path)
        export_seconds = time.perf_counter() - begin
        size = path.stat().st_size / 2 ** 20
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=['CPUExecutionProvider'])
        length = int(model.segment * model.samplerate)
        mix = 0.1 * torch.randn(args.batch, model.audio_channels, length,
                                generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            eager = seconds_per_call(lambda: model(mix), args.repeats)
            ours = model(mix)
        runtime = seconds_per_call(lambda: session.run(None, {'mix': mix.numpy()}),
                                   args.repeats)
        out = torch.from_numpy(session.run(None, {'mix': mix.numpy()})[0])
    print(f"{args.model} {params:.1f} M parameters, chunks of {model.segment:g} s, batch "
          f"{args.batch}, {args.threads} threads; ONNX file {size:.1f} MiB, export and check "
          f"{export_seconds:.1f} s (check difference {difference:.2e})")
    print(f"{'':<24}{'s/call':>8}{'speed-up':>10}{'max |diff|':>12}")
    print(f"{'PyTorch (eager)':<24}{eager:>8.2f}{1:>9.2f}x{0:>12.2e}")
    print(f"{'onnxruntime':<24}{runtime:>8.2f}{eager / runtime:>9.2f}x"
          f"{(out - ours).abs().max().item():>12.2e}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
