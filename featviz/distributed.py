"""Several processes (one per host, say) rendering one job: each renders its share of the
channels into a shared folder, and process 0 writes the summary and the atlas.

Launch one process per host, e.g. under SLURM
``srun --ntasks-per-node=1 featviz atlas --layer all --distributed auto --out atlas.png``,
or by hand with ``--distributed HOST:PORT --num-processes N --process-id I``.

Example (a single process is a valid run):
    >>> share([0, 1, 2, 3, 4], index=1, count=2)
    [1, 3]
"""
from __future__ import annotations

import jax


def initialize(coordinator: str, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the run through ``jax.distributed`` (``coordinator="auto"``: read the cluster's
    environment, e.g. SLURM). CPU processes talk over gloo."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator == "auto":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)


def share(items: list, index: int | None = None, count: int | None = None) -> list:
    """This process's share of ``items`` (every count-th, from its index)."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    return items[index::count]


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier of this name (no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
