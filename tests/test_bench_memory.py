"""`bench.memory`: each side trains in its own child process, and a child that passes the
memory cap is killed and reported as not fitting."""
import re

from bench import memory

TINY = ['--dim', '16', '--depth', '1', '--heads', '2', '--dim-head', '8', '--stems', '1',
        '--seconds', '0.5']


def test_table_has_the_three_sides(capsys):
    assert memory.main(TINY) == 0
    out = capsys.readouterr().out
    for side in memory.SIDES:
        row = re.search(rf'^{side} .*$', out, re.MULTILINE)
        assert row is not None, out
        numbers = [float(n) for n in re.findall(r'\d+\.\d+', row.group(0))]
        params, peak, delta, seconds = numbers
        assert 0 < delta < peak < 12 and seconds > 0, row.group(0)
    assert re.search(r'^lucidrains / ours-ckpt: peak RSS \d+\.\d\dx', out, re.MULTILINE), out
    assert re.search(r'^ours-no-ckpt / ours-ckpt: peak RSS \d+\.\d\dx', out, re.MULTILINE), out


def test_cap_kills_a_child(capsys):
    assert memory.main(TINY + ['--cap-gb', '0.05', '--sides', 'lucidrains']) == 0
    out = capsys.readouterr().out
    assert re.search(r'^lucidrains .*did not fit in 0\.05 GB \(killed at', out,
                     re.MULTILINE), out
    assert 'peak RSS' in out and 'ours-ckpt' not in out.split('\n', 2)[2]
