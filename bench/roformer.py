"""Our BS-RoFormer (`separator.models.roformer`) vs lucidrains' `bs-roformer` package (the
reference implementation most recipes train), side by side in one run: parameters, seconds
per training step (forward + backward + Adam) and per inference call, and their ratios.

    pip install bs-roformer==1.2.4      # the peer (make bench installs it)
    python -m bench.roformer [--dim 128] [--depth 2] [--seconds 3] [--batch 2] [--threads 2]
    python -m bench.roformer --same-weights       # ours computes exactly what theirs does
    python -m bench.roformer --dim 48 --heads 4 --dim-head 16 --stems 4 --batch 8 --seconds 1
                                        # about grids/architectures' size (their mask MLPs
                                        # are 4 x dim wide, not 2 x)

Both are set up alike: `dim` features, `depth` blocks of one time and one band Transformer
layer, `heads` heads of `dim_head`, the paper's 62 bands at n_fft 2048, hop 512, no dropout,
mask MLPs of one hidden layer of 4 x dim; the peer's hyper-connections are off
(`num_residual_streams=1`: the paper has none). By default ours is our own architecture
(the same parameter count; it has norms in the mask MLPs, the peer has attention gates and
value residuals instead); with `--same-weights` it is ours with lucidrains' options, holding
the peer's weights through `separator.importers.roformer`, and the bench first checks that
both compute the same. Each step trains on the L1 of the waveforms only (the peer's own
multi-resolution STFT loss is not computed: `separator` computes that in the solver), with
`torch.optim.Adam` (the solver's optimizer) for both.

The CPU of a shared machine is noisy: the models alternate, a training step and an
inference call each per round (the order alternates too), and the figures are the medians
over `--rounds` rounds, after a warm-up round. `--baseline DIR` also times the `separator`
package of another source tree, the same model with the same weights, in the same rounds: a
before / after ratio that the machine's load does not skew. Before a change, for instance:

    mkdir /tmp/before && git archive HEAD separator | tar -x -C /tmp/before
    python -m bench.roformer --baseline /tmp/before
"""
import argparse
import importlib
import importlib.util
import statistics
import sys
import time
import typing as tp
import warnings
from pathlib import Path

import torch

from separator.models.roformer import BSRoFormer

PEER = 'bs-roformer 1.2.4 (lucidrains)'


def theirs(args: argparse.Namespace) -> torch.nn.Module:
    from bs_roformer import BSRoformer
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')     # torch.stft's warnings at init
        return BSRoformer(dim=args.dim, depth=args.depth, stereo=True, num_stems=args.stems,
                          time_transformer_depth=1, freq_transformer_depth=1,
                          dim_head=args.dim_head, heads=args.heads, stft_hop_length=512,
                          num_residual_streams=1, mask_estimator_depth=2)


def ours(args: argparse.Namespace) -> torch.nn.Module:
    sources = [f'stem{index}' for index in range(args.stems)]
    return BSRoFormer(sources, audio_channels=2, dim=args.dim, depth=args.depth,
                      heads=args.heads, dim_head=args.dim_head, dropout=0., mask_mult=4,
                      n_fft=2048, hop_length=512)


def ours_with_their_weights(peer: torch.nn.Module, args: argparse.Namespace
                            ) -> torch.nn.Module:
    """Ours with lucidrains' options and the peer's weights (`importers.roformer`)."""
    from separator.importers.roformer import convert
    from separator.states import load_model
    config = {'audio': {'chunk_size': 131584, 'sample_rate': 44100},
              'model': dict(dim=args.dim, depth=args.depth, stereo=True, num_stems=args.stems,
                            time_transformer_depth=1, freq_transformer_depth=1,
                            dim_head=args.dim_head, heads=args.heads, stft_n_fft=2048,
                            stft_hop_length=512, stft_win_length=2048, mask_estimator_depth=2,
                            zero_dc=False, attn_dropout=0., ff_dropout=0.),
              'training': {'instruments': [f'stem{index}' for index in range(args.stems)]}}
    return load_model(convert(peer.state_dict(), config))


def baseline_roformer(root: str) -> tp.Any:
    """`separator.models.roformer` of the source tree `root`, imported as the package
    `separator_baseline` (its modules import each other relatively)."""
    init = Path(root) / 'separator' / '__init__.py'
    if not init.exists():
        raise SystemExit(f"--baseline {root}: no separator/__init__.py there (give the root "
                         f"of a source tree, e.g. `git archive HEAD separator | tar -x -C "
                         f"{root}`).")
    spec = importlib.util.spec_from_file_location('separator_baseline', init,
                                                  submodule_search_locations=[str(init.parent)])
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules['separator_baseline'] = package
    spec.loader.exec_module(package)
    return importlib.import_module('separator_baseline.models.roformer')


def baseline_copy(model: torch.nn.Module, root: str) -> torch.nn.Module:
    """`model` rebuilt by the `separator` of `root`, with the same weights."""
    klass = getattr(baseline_roformer(root), type(model).__name__)
    copy = klass(*model._init_args_kwargs[0], **model._init_args_kwargs[1])
    copy.load_state_dict(model.state_dict())
    return copy


def same_output(peer: torch.nn.Module, model: torch.nn.Module, mix: torch.Tensor) -> float:
    """Max abs difference of the two models' outputs on `mix` (eval mode)."""
    with torch.no_grad():
        expected = peer.eval()(mix).reshape(mix.shape[0], -1, *mix.shape[1:])
        output = model.eval()(mix)
    return (output - expected).abs().max().item()


class Timer:
    """One model's training step and inference call, timed one at a time."""
    def __init__(self, model: torch.nn.Module, mix: torch.Tensor, target: torch.Tensor):
        self.model = model
        self.mix = mix
        self.target = target
        self.optim = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.times: tp.Dict[str, tp.List[float]] = {'train': [], 'infer': []}

    def train(self) -> float:
        self.model.train()
        begin = time.perf_counter()
        estimate = self.model(self.mix).reshape(self.target.shape)
        loss = (estimate - self.target).abs().mean()
        self.optim.zero_grad()
        loss.backward()
        self.optim.step()
        return time.perf_counter() - begin

    def infer(self) -> float:
        self.model.eval()
        with torch.inference_mode():
            begin = time.perf_counter()
            self.model(self.mix)
            return time.perf_counter() - begin

    def round(self, record: bool = True) -> None:
        train, infer = self.train(), self.infer()
        if record:
            self.times['train'].append(train)
            self.times['infer'].append(infer)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bench.roformer',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--dim', type=int, default=128)
    parser.add_argument('--depth', type=int, default=2)
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--dim-head', type=int, default=64)
    parser.add_argument('--stems', type=int, default=1)
    parser.add_argument('--seconds', type=float, default=3.)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=5,
                        help="timed rounds (a training step and an inference call of each "
                             "model); the figures are their medians")
    parser.add_argument('--steps', type=int, dest='rounds', help=argparse.SUPPRESS)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--same-weights', action='store_true',
                        help="ours with lucidrains' options and the peer's weights (checked "
                             "to compute the same) instead of our own architecture")
    parser.add_argument('--baseline', metavar='DIR',
                        help="also time the separator package of this source tree (e.g. "
                             "`git archive HEAD separator | tar -x -C DIR`), same model and "
                             "weights")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    length = int(args.seconds * 44100) // 512 * 512  # the peer's iSTFT returns whole hops
    generator = torch.Generator().manual_seed(0)
    mix = 0.1 * torch.randn(args.batch, 2, length, generator=generator)
    target = 0.5 * mix[:, None].expand(-1, args.stems, -1, -1)   # [B, stems, 2, length]
    torch.manual_seed(0)
    peer = theirs(args)
    torch.manual_seed(0)
    model = ours_with_their_weights(peer, args) if args.same_weights else ours(args)
    if args.same_weights:
        print(f"same weights: max abs difference of the outputs "
              f"{same_output(peer, model, mix[:1, :, :44032]):.1e}")
    names = [PEER, 'separator']
    timers = [Timer(peer, mix, target), Timer(model, mix, target)]
    if args.baseline:
        baseline = baseline_copy(model, args.baseline)
        with torch.no_grad():
            difference = (baseline.eval()(mix[:1]) - model.eval()(mix[:1])).abs().max()
        print(f"baseline {args.baseline}: max abs difference of the outputs {difference:.1e}")
        names.append('separator (baseline)')
        timers.append(Timer(baseline, mix, target))
    for timer in timers:
        timer.round(record=False)                       # warm-up
    for index in range(args.rounds):
        for timer in (timers if index % 2 == 0 else timers[::-1]):
            timer.round()
    architecture = "lucidrains' (same weights)" if args.same_weights else 'ours'
    print(f"BS-RoFormer dim {args.dim}, depth {args.depth}, {args.heads} heads of "
          f"{args.dim_head}, {args.stems} stem(s), batch {args.batch} x {args.seconds:g} s "
          f"stereo, {args.threads} threads; our model: {architecture}; median of "
          f"{args.rounds} alternating rounds")
    print(f"{'':32}{'params (M)':>11}{'train s/step':>14}{'speed-up':>10}"
          f"{'infer s/call':>14}{'speed-up':>10}")
    medians = [{kind: statistics.median(times) for kind, times in timer.times.items()}
               for timer in timers]
    for name, timer, median in zip(names, timers, medians):
        params = sum(p.numel() for p in timer.model.parameters()) / 1e6
        print(f"{name:32}{params:11.2f}{median['train']:14.3f}"
              f"{medians[0]['train'] / median['train']:9.2f}x{median['infer']:14.3f}"
              f"{medians[0]['infer'] / median['infer']:9.2f}x")
    if args.baseline:
        print(f"separator vs its baseline: {medians[2]['train'] / medians[1]['train']:.2f}x "
              f"per training step, {medians[2]['infer'] / medians[1]['infer']:.2f}x per "
              f"inference call")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
