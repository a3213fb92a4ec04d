"""What the front doors (media streams over WebSocket, SIPREC) share above :mod:`recstream.aio`.

:mod:`.config` reads the common config sections (``[recordings]``, ``[keystore]``,
``[audit]``) and :mod:`.recorder` turns them into a running
:class:`~recstream.aio.RecordingHook` over the keystore.  Protocol code lives in
each front door's own package (:mod:`recstream.streams`).
"""
