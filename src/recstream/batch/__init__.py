"""Archive-scale batch jobs on Dask: decrypt for playback, re-wrap, and the orphan audit.

One task is one recording.  Tasks carry paths, never secrets: each worker opens
the keys itself from the paths in a :class:`~recstream.batch.keys.KeySpec`
(a keystore and its password file, or key files), so nothing secret travels in
a task graph to a remote cluster.
"""
