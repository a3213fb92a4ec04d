"""The benchmark harness behind ``recstream bench``.

Throughput is what recstream is chosen for, and operators size media servers
and decryption services from these figures, so every run measures the limits
of the machine and the alternatives beside recstream, in the same run:

============  ===============================================================
``bulk``      a large file through the CLI and the library, vs ``cat`` and raw
              single-thread AES-GCM over the same bytes
``segments``  AES-GCM throughput against segment size, raw and Cobblestone
``live``      concurrent real-time G.711 calls through the recording hook
``small``     many short recordings: recordings/s and the RSA share
``peers``     openssl cms, age, the AWS Encryption SDK and Tink on the same file
============  ===============================================================

Every figure is the median of repeated runs with min and max
(:mod:`~recstream.bench.stats`); subjects are interleaved so noise hits them
alike; a spread over :data:`~recstream.bench.stats.NOISE_THRESHOLD` or a
loaded machine becomes a warning in the report.  Reports
(:mod:`~recstream.bench.report`) render as tables, JSON, and matplotlib plots
(:mod:`~recstream.bench.plot`), and state the machine
(:mod:`~recstream.bench.machine`).  :mod:`~recstream.bench.modes` is the
registry the CLI reads (and where ``rcs`` will plug in once the service
exists); each mode's module is imported only when it runs.

This package imports nothing on import, so that the ``recstream`` command's
start-up does not pay for it.  The hot-path micro-benchmarks (pytest-benchmark)
live in the repository's ``bench/`` directory; ``bench/RESULTS.md`` records the
latest figures.
"""
