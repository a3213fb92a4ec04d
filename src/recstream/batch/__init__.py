"""Archive-scale batch jobs on Dask: decrypt for playback, re-wrap, and the orphan audit.

A Dask task is a chunk of up to 32 recordings, each processed and failing on
its own (one recording per task spent ~3 ms in Dask per file: 330 files/s;
chunked, 1,400-5,000/s on this 2-core machine).  Tasks carry paths, never secrets: each worker opens
the keys itself from the paths in a :class:`~recstream.batch.keys.KeySpec`
(a keystore and its password file, or key files), so nothing secret travels in
a task graph to a remote cluster.
"""
