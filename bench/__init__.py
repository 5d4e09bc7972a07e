"""kstreamlet benchmarks against hand-written confluent-kafka loops, on a real broker.

Run ``python -m bench --help``. Each scenario is a module of this package exposing
``NAME``, ``add_arguments(parser)``, ``run(args) -> int`` and ``worker(argv) -> int``
(the code a measured subprocess runs); :data:`bench.__main__.SCENARIOS` lists them.
"""
