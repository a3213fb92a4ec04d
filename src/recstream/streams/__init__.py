"""Front door: media streams over WebSocket (Twilio Media Streams and its envelope).

Modules, bottom up: :mod:`.protocol` (the message envelope, sans I/O),
:mod:`.timeline` (placing chunks by timestamp), :mod:`.session` (one stream's
state machine, producing the multi-track container of docs/TRACKS.md),
:mod:`.auth` (shared secrets and ``X-Twilio-Signature``), :mod:`.config`
(``streams.toml``), :mod:`.connection` (one WebSocket pumped into the
:class:`~recstream.aio.RecordingHook`) and :mod:`.server` (aiohttp, limits).
"""
