"""A real single-node Slurm cluster on localhost for the tests (see start.sh)."""
