"""The answers taskstatsd queues for a client, shaped as the kernel shapes them.

:class:`Replies` appends a datagram to a peer's answer queue (tracking the most
bytes any client had queued, ``peak``) and builds the netlink answers whose form
depends on the client's options: the ACK of a message that asked for one, and
NLMSG_ERROR echoing the request whole or, with cap_ack (or over the request
limit), only its header; extended-ACK text, offset and policy only with ext_ack,
the text bounded to MAX_EXT_MESSAGE bytes of valid UTF-8.
"""

from __future__ import annotations

from .. import netlink as nl
from .peers import Limits, Peer

MAX_EXT_MESSAGE = 1024  # bytes of an extended-ACK message


class Replies:
    """Queues answers on peers under ``limits``; ``peak``: the most reply bytes any
    client had queued."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.peak = 0

    def reply(self, peer: Peer, data: bytes) -> None:
        """Queue ``data`` (one datagram) for ``peer``."""
        peer.replies.append(data)
        peer.reply_bytes += len(data)
        self.peak = max(self.peak, peer.reply_bytes)

    def ack(self, peer: Peer, msg: nl.Message, warning: str) -> None:
        """The ACK of ``msg`` if it asked for one (NLM_F_ACK), with the parse
        ``warning`` when the client opted in to extended ACKs."""
        if msg.flags & nl.NLM_F_ACK:
            header = bytes(msg.data[msg.start - nl.HEADER.size: msg.start])
            self.reply(peer, nl.encode_error(0, header, seq=msg.seq, pid=peer.id,
                                             ext_message=ext(peer, warning)))

    def error(self, peer: Peer, err: int, request: bytes, text: str, seq: int = 0, *,
              offset: int | None = None, policy: bytes = b"") -> None:
        """NLMSG_ERROR ``err`` for the message at the start of ``request``: echoing it
        whole, or only its header when the client set cap_ack (or it is over the
        request limit); ``text``, ``offset`` and ``policy`` only when it set ext_ack."""
        capped = peer.cap_ack or len(request) > self.limits.max_request
        on = peer.ext_ack
        self.reply(peer, nl.encode_error(
            err, request, seq=seq, pid=peer.id, capped=capped,
            ext_message=ext(peer, text), ext_offset=offset if on else None,
            ext_policy=policy if on else b""))


def ext(peer: Peer, text: str) -> str:
    """``text`` for an extended ACK, bounded and valid UTF-8; "" without ext_ack."""
    if not peer.ext_ack:
        return ""
    return text.encode("utf-8", "replace")[:MAX_EXT_MESSAGE].decode("utf-8", "ignore")
