"""Our BS-RoFormer (`separator.models.roformer`) vs lucidrains' `bs-roformer` package (the
reference implementation most recipes train), side by side in one run: parameters, seconds
per training step (forward + backward + Adam) and per inference call, and their ratios.

    pip install bs-roformer==1.2.4      # the peer (make bench installs it)
    python -m bench.roformer [--dim 128] [--depth 2] [--seconds 3] [--batch 2] [--threads 2]

Both are set up alike: stereo, one stem, `dim` features, `depth` blocks of one time and one
band Transformer layer, 8 heads of 64, the paper's 62 bands at n_fft 2048, hop 512, no
dropout; the peer's hyper-connections are off (`num_residual_streams=1`: the paper has none).
Each step trains on the L1 of the waveforms only (the peer's own multi-resolution STFT loss
is not computed: `separator` computes that in the solver), so the figures are the models'.
"""
import argparse
import time
import typing as tp

import torch

from separator.models.roformer import BSRoFormer


def ours(dim: int, depth: int) -> torch.nn.Module:
    return BSRoFormer(['vocals'], audio_channels=2, dim=dim, depth=depth, heads=8, dim_head=64,
                      dropout=0., n_fft=2048, hop_length=512)


def theirs(dim: int, depth: int) -> torch.nn.Module:
    from bs_roformer import BSRoformer
    return BSRoformer(dim=dim, depth=depth, stereo=True, num_stems=1, time_transformer_depth=1,
                      freq_transformer_depth=1, dim_head=64, heads=8, stft_hop_length=512,
                      num_residual_streams=1)


def step_seconds(model: torch.nn.Module, mix: torch.Tensor, target: torch.Tensor,
                 steps: int) -> float:
    """Mean seconds of a training step (L1 of the waveforms), after one warm-up step."""
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        estimate = model(mix).reshape(target.shape)
        loss = (estimate - target).abs().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()

    step()
    begin = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - begin) / steps


def call_seconds(model: torch.nn.Module, mix: torch.Tensor, calls: int) -> float:
    model.eval()
    with torch.inference_mode():
        model(mix)
        begin = time.perf_counter()
        for _ in range(calls):
            model(mix)
    return (time.perf_counter() - begin) / calls


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bench.roformer',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--dim', type=int, default=128)
    parser.add_argument('--depth', type=int, default=2)
    parser.add_argument('--seconds', type=float, default=3.)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    length = int(args.seconds * 44100) // 512 * 512  # the peer's iSTFT returns whole hops
    generator = torch.Generator().manual_seed(0)
    mix = 0.1 * torch.randn(args.batch, 2, length, generator=generator)
    target = 0.5 * mix[:, None]
    rows = []
    for name, make in [('bs-roformer 1.2.4 (lucidrains)', theirs), ('separator', ours)]:
        torch.manual_seed(0)
        model = make(args.dim, args.depth)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        train = step_seconds(model, mix, target, args.steps)
        infer = call_seconds(model, mix, args.steps)
        rows.append((name, params, train, infer))
    print(f"BS-RoFormer dim {args.dim}, depth {args.depth}, batch {args.batch} x "
          f"{args.seconds:g} s stereo, {args.threads} threads")
    print(f"{'':32}{'params (M)':>11}{'train s/step':>14}{'speed-up':>10}"
          f"{'infer s/call':>14}{'speed-up':>10}")
    _, _, peer_train, peer_infer = rows[0]
    for name, params, train, infer in rows:
        print(f"{name:32}{params:11.2f}{train:14.3f}{peer_train / train:9.2f}x"
              f"{infer:14.3f}{peer_infer / infer:9.2f}x")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
