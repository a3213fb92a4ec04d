"""The SIPREC front door (RFC 7866/7865): a session recording server over ``aio/``.

Layers, bottom up (imports point down):

* pure, no I/O: :mod:`.sdp` (SDP subset), :mod:`.metadata` (multipart body,
  rs-metadata through defusedxml), :mod:`.sipwire` (framing and limits around
  sipmessage), :mod:`.rtp` (one stream: latching, reordering, loss, DTMF, into
  :mod:`recstream.tracks` records), :mod:`.srtp` (libsrtp), :mod:`.offer`
  (policy: is it a recording session, which tenant, which streams), :mod:`.uas`
  (the SIP user agent server: dialogs, transactions, timers as data);
* :mod:`.server`: the asyncio adapter (UDP+TCP SIP, RTP endpoints) mapping each
  call to one :class:`~recstream.aio.RecordingHook` recording;
* :mod:`.metrics` (Prometheus) and :mod:`.config` (``srs.toml``).
"""
