"""Peak memory of one BS-RoFormer training step (forward, L1 loss, backward, Adam step) on CPU:
ours with activation checkpointing (`separator.checkpointing`), ours without, and lucidrains'
`bs-roformer` package (which has no checkpointing), at the paper's size by default (MUSDB
without extra data: dim 384, 6 blocks of a time and a band Transformer layer, 8 heads of 64,
stereo 44.1 kHz, 8 s segments, batch 1, n_fft 2048, hop 512, the 62 bands, 4 stems).

    python -m bench.memory                          # the paper's size; minutes per side
    python -m bench.memory --dim 64 --depth 1 --seconds 2   # a quick look
    python -m bench.memory --cap-gb 8 --sides ours-ckpt lucidrains

Each side runs alone in a fresh subprocess (`python -m bench.memory --side NAME`), one after
another, so that one side's allocations (or the allocator's cache) do not count for another.
The child builds its model (`bench.roformer`'s builders, the same config as `bench.roformer`:
no dropout, mask MLPs of 4 x dim, the peer's hyper-connections off) and its input, notes its
RSS, runs `--steps` training steps and reports its peak RSS (`getrusage`'s `ru_maxrss`), that
peak less the RSS after building (what training adds: activations, gradients, Adam state)
and the seconds of its last step. The parent reads the child's RSS (`VmRSS`) every 0.1 s and
kills it once it passes `--cap-gb`: that side "did not fit" (the machine is shared; a
side that would need more than the cap never gets it).

Both models attend with `F.scaled_dot_product_attention`: ours always; lucidrains' with its
default `flash_attn=True` (`bs_roformer.attend.Attend.flash_attn`, on CPU too, with all SDPA
backends allowed). The difference in memory is the checkpointing, not the attention kernel.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import typing as tp
import warnings

SIDES = ('ours-ckpt', 'ours-no-ckpt', 'lucidrains')
CHECKPOINTING = {'ours-ckpt': 'yes', 'ours-no-ckpt': 'no', 'lucidrains': 'no (none)'}
POLL_SECONDS = 0.1
GB = 1024 ** 3


def rss_bytes(pid: tp.Union[int, str] = 'self') -> tp.Optional[int]:
    """Resident set size of process `pid` (`VmRSS` of /proc/PID/status); None once it is gone."""
    try:
        with open(f'/proc/{pid}/status') as status:
            for line in status:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def build(side: str, args: argparse.Namespace) -> tp.Tuple[tp.Any, tp.Dict[str, tp.Any]]:
    """The model of `side` and facts about it (checkpointed layers, attention kernel)."""
    import torch
    from bench.roformer import ours, theirs
    from separator.checkpointing import enable_checkpointing
    torch.manual_seed(0)
    facts: tp.Dict[str, tp.Any] = {}
    if side == 'lucidrains':
        model = theirs(args)
        attends = [module for module in model.modules() if type(module).__name__ == 'Attend']
        facts['sdpa'] = bool(attends) and all(attend.flash for attend in attends)
    else:
        model = ours(args)
        facts['sdpa'] = True        # RotaryAttention calls F.scaled_dot_product_attention
        if side == 'ours-ckpt':
            names = enable_checkpointing(model)
            if not names:
                raise SystemExit("enable_checkpointing found no checkpoint unit in our "
                                 "BSRoFormer (TransformerLayer.checkpoint_unit is not set?)")
            facts['checkpointed'] = len(names)
    facts['params_m'] = sum(p.numel() for p in model.parameters()) / 1e6
    return model, facts


def run_side(side: str, args: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    """The child's work: build, train `args.steps` steps, measure."""
    import torch
    from bench.roformer import Timer
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')         # the peer's torch.backends.cuda.sdp_kernel
        model, facts = build(side, args)
        length = int(args.seconds * 44100) // 512 * 512     # the peer's iSTFT: whole hops
        generator = torch.Generator().manual_seed(0)
        mix = 0.1 * torch.randn(args.batch, 2, length, generator=generator)
        target = 0.5 * mix[:, None].expand(-1, args.stems, -1, -1).contiguous()
        timer = Timer(model, mix, target)
        baseline = rss_bytes()
        assert baseline is not None
        print(json.dumps(dict(facts, baseline=baseline)), flush=True)   # if killed later
        seconds = [timer.train() for _ in range(args.steps)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024    # KiB on Linux
    return dict(facts, side=side, peak=peak, baseline=baseline, delta=peak - baseline,
                seconds=seconds[-1])


def child_command(side: str, args: argparse.Namespace) -> tp.List[str]:
    return [sys.executable, '-m', 'bench.memory', '--side', side, '--dim', str(args.dim),
            '--depth', str(args.depth), '--heads', str(args.heads), '--dim-head',
            str(args.dim_head), '--stems', str(args.stems), '--seconds', str(args.seconds),
            '--batch', str(args.batch), '--threads', str(args.threads), '--steps',
            str(args.steps)]


def supervise(side: str, args: argparse.Namespace) -> tp.Dict[str, tp.Any]:
    """Runs `side` in a child process, killing it once its RSS passes the cap."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    cap = args.cap_gb * GB
    begin = time.monotonic()
    child = subprocess.Popen(child_command(side, args), stdout=subprocess.PIPE, env=env,
                             text=True)
    lines: tp.List[str] = []        # the child's reports, read as they come
    reader = threading.Thread(target=lambda: lines.extend(child.stdout or ()), daemon=True)
    reader.start()
    while child.poll() is None:
        rss = rss_bytes(child.pid)
        if rss is not None and rss > cap:
            child.kill()
            child.wait()
            reader.join()
            built = reports(lines)
            return dict(built[0] if built else {}, side=side, killed=True, rss=rss,
                        after=time.monotonic() - begin)
        time.sleep(POLL_SECONDS)
    reader.join()
    if child.returncode != 0:
        raise SystemExit(f"side {side}: the child failed (exit status {child.returncode}); "
                         f"its errors are above")
    return reports(lines)[-1]


def reports(lines: tp.List[str]) -> tp.List[tp.Dict[str, tp.Any]]:
    """The child's JSON reports among its output lines (after building; at the end)."""
    return [json.loads(line) for line in lines if line.startswith('{')]


def lower_bound(result: tp.Dict[str, tp.Any], key: str, cap: float) -> tp.Optional[float]:
    """What a killed side needed at least: RSS over the cap, so more than the cap less its
    RSS after building for the training's share; None when unknown (killed before that)."""
    if key == 'peak':
        return cap
    if key == 'delta' and 'baseline' in result:
        return cap - result['baseline']
    return None


def ratio(numerator: tp.Dict[str, tp.Any], denominator: tp.Dict[str, tp.Any], key: str,
          cap: float) -> str:
    """`numerator[key] / denominator[key]`; for a killed numerator, a lower bound."""
    if denominator.get('killed'):
        return 'n/a'
    if numerator.get('killed'):
        bound = lower_bound(numerator, key, cap)
        return 'n/a' if bound is None else f">{bound / denominator[key]:.2f}x"
    return f"{numerator[key] / denominator[key]:.2f}x"


def table(results: tp.List[tp.Dict[str, tp.Any]], args: argparse.Namespace) -> str:
    lines = [f"BS-RoFormer one training step (forward, L1, backward, Adam) on CPU: dim "
             f"{args.dim}, depth {args.depth}, {args.heads} heads of {args.dim_head}, "
             f"{args.stems} stems, batch {args.batch} x {args.seconds:g} s stereo 44.1 kHz, "
             f"n_fft 2048 hop 512, 62 bands, {args.threads} thread(s), cap {args.cap_gb:g} GB",
             f"{'side':14}{'checkpointing':>15}{'params (M)':>12}{'peak RSS GB':>13}"
             f"{'train +GB':>11}{'s/step':>9}{'SDPA':>6}"]
    for result in results:
        side = result['side']
        params = f"{result['params_m']:12.2f}" if 'params_m' in result else f"{'?':>12}"
        sdpa = {True: 'yes', False: 'no'}.get(result.get('sdpa'), '?')
        if result.get('killed'):
            lines.append(f"{side:14}{CHECKPOINTING[side]:>15}{params}  did not fit in "
                         f"{args.cap_gb:g} GB (killed at {result['rss'] / GB:.2f} GB after "
                         f"{result['after']:.0f} s; SDPA {sdpa})")
            continue
        lines.append(f"{side:14}{CHECKPOINTING[side]:>15}{params}"
                     f"{result['peak'] / GB:13.2f}{result['delta'] / GB:11.2f}"
                     f"{result['seconds']:9.2f}{sdpa:>6}")
    by_side = {result['side']: result for result in results}
    cap = args.cap_gb * GB
    for other in ('lucidrains', 'ours-no-ckpt'):
        if other in by_side and 'ours-ckpt' in by_side:
            a, b = by_side[other], by_side['ours-ckpt']
            lines.append(f"{other} / ours-ckpt: peak RSS {ratio(a, b, 'peak', cap)}, "
                         f"train +GB {ratio(a, b, 'delta', cap)}, s/step "
                         f"{ratio(a, b, 'seconds', cap)}")
    return '\n'.join(lines)


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog='python -m bench.memory',
                                    description=__doc__.split('\n\n')[0])
    parse.add_argument('--dim', type=int, default=384)
    parse.add_argument('--depth', type=int, default=6)
    parse.add_argument('--heads', type=int, default=8)
    parse.add_argument('--dim-head', type=int, default=64)
    parse.add_argument('--stems', type=int, default=4)
    parse.add_argument('--seconds', type=float, default=8.)
    parse.add_argument('--batch', type=int, default=1)
    parse.add_argument('--threads', type=int, default=1)
    parse.add_argument('--steps', type=int, default=1,
                       help="training steps per side (the first holds Adam's state's "
                            "allocation); s/step is the last one's")
    parse.add_argument('--cap-gb', type=float, default=12.,
                       help="kill a side whose RSS passes this many GB (GiB, as every GB "
                            "here): it did not fit")
    parse.add_argument('--sides', nargs='+', choices=SIDES, default=list(SIDES))
    parse.add_argument('--side', choices=SIDES, help=argparse.SUPPRESS)    # the child's
    return parse


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.side:
        print(json.dumps(run_side(args.side, args)), flush=True)
        return 0
    results = []
    for side in args.sides:             # one after another, never at once
        results.append(supervise(side, args))
    print(table(results, args))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
