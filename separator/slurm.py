"""`dora grid` without a Slurm cluster to talk to: one line that says so and what to do.

Dora submits a grid's XPs through submitit's `sbatch`; on a machine without a running Slurm
(or without its commands) submitit fails with a traceback about DNS SRV records or a missing
`srun`. `explain_missing_slurm` checks, just before the first submission, that the cluster
answers (`sinfo`), and otherwise prints what to do and exits with status 2. `--dry_run`
submits nothing and is not affected.
"""
import shutil
import subprocess
import sys
import typing as tp

from dora import shep as dora_shep

HOW = ("start a cluster, or the single-node one of the tests: `eval \"$(tests/slurm/start.sh "
       "/tmp/slurm)\"`; without Slurm, run a lineage's stages here with `python -m "
       "tools.lineage NAME`, or one XP with `dora run`.")


def slurm_problem(timeout: float = 20) -> tp.Optional[str]:
    """Why no Slurm cluster answers here, or None when one does."""
    if shutil.which('sbatch') is None or shutil.which('sinfo') is None:
        return "Slurm's commands (sbatch, sinfo) are not installed"
    try:
        result = subprocess.run(['sinfo', '-h', '-o', '%P'], capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"the Slurm controller did not answer `sinfo` within {timeout:.0f} s"
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return f"no Slurm controller answers ({lines[-1] if lines else 'sinfo failed'})"
    return None


def explain_missing_slurm() -> None:
    """Make `dora grid` say in one line that Slurm is missing, before it submits. Idempotent."""
    commit = dora_shep.Shepherd.commit
    if getattr(commit, 'checks_slurm', False):
        return

    def commit_checked(self: tp.Any) -> None:
        if self._to_submit:
            problem = slurm_problem()
            if problem is not None:
                print(f"dora grid: error: {problem}: {HOW}", file=sys.stderr, flush=True)
                sys.exit(2)
        commit(self)

    commit_checked.checks_slurm = True  # type: ignore[attr-defined]
    dora_shep.Shepherd.commit = commit_checked
