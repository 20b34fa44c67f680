"""bench.train_speed end to end at a tiny size: both training loops run (ours and demucs'), each in
its own process, and the rates, their ratio and the learning curves are printed."""
import re

from bench import train_speed


def test_both_sides_train_and_the_ratio_is_printed(tmp_path, capsys):
    train_speed.main(['--steps', '1', '--repeats', '1', '--segment', '1', '--tracks', '4',
                '--seconds', '4', '--data', str(tmp_path / 'data'),
                '--overrides', 'hdemucs.channels=4'])
    out = capsys.readouterr().out
    sizes = re.search(r'\(([\d.]+) M parameters ours, ([\d.]+) M demucs\'\)', out)
    assert sizes and sizes[1] == sizes[2], out          # the same architecture on both sides
    rates = {}
    for name in ('separator', 'demucs 4.1.0'):
        row = re.search(rf'^{re.escape(name)}\s+([\d.]+)\s+([\d.]+)\s', out, re.M)
        assert row, f"no row for {name}:\n{out}"
        steps, segments = float(row[1]), float(row[2])
        assert segments > 0 and abs(segments - 4 * steps) < 0.01, row[0]   # batch 4
        rates[name] = segments
    ratio = re.search(r'ratio ours/theirs \(segments/s\): ([\d.]+)x of the medians', out)
    assert ratio, out
    assert abs(float(ratio[1]) - rates['separator'] / rates['demucs 4.1.0']) < 0.01
    # One learning-curve row: the warm-up and the timed step of each side, finite losses.
    curve = re.search(r'^\s+1-2\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)', out, re.M)
    assert curve, out
    assert all(0 < float(value) < 10 for value in curve.groups())
