"""`python -m tests.integration.ad.reader_process TOPOLOGY FOREST`: one forest's reader alone,
composed exactly as the worker composes it (:func:`idsync.runtime.run_reader`), so that a test can
kill -9 the reader without a metaverse processor and contact writer it does not examine."""

from __future__ import annotations

import asyncio
import logging
import sys

from idsync.runtime import run_reader
from streams.config.topology import load_topology


def main(topology_path: str, forest_name: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    topology = load_topology(topology_path)
    asyncio.run(run_reader(topology, topology.forest(forest_name)))


if __name__ == "__main__":
    main(*sys.argv[1:])
