"""Inboxes of SIP MESSAGEs (RFC 3428) kept for sleeping devices, pure.

One inbox per address-of-record: a tuple of stored messages, oldest first. Each message
names the devices that still have to receive it, so every device keeps its own inbox: a
message one device accepted is still delivered to the others that were asleep.

Rules (issue 13), applied by every store backend through these functions:

* **Order**: messages are kept in arrival order and handed to a device in that order.
* **Dedup**: a MESSAGE with the Call-ID and CSeq of one already stored (a sender retrying
  after a timeout, or the same request reaching two nodes) is not stored twice; the devices
  it was meant for join the stored copy.
* **Expiry**: a message lives until ``expires_at`` (``message.store_for`` after it was
  stored); an expired message is never handed out and is removed by the next change.
* **Quota**: at most ``max_per_user`` messages per AoR; storing one more drops the oldest.

Times are the caller's wall clock (messages outlive the process). No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sipwake.sip.message import Request


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str  # our id, in the push payload and the admin listing (a UUID)
    call_id: str  # of the sender's MESSAGE: with ``cseq``, the dedup key
    cseq: int
    sender: str  # the From URI
    content_type: str
    stored_at: float
    expires_at: float
    devices: tuple[str, ...]  # Binding.device_key of each device still to receive it
    data: bytes = field(default=b"", repr=False)  # the MESSAGE as received

    def live(self, now: float) -> bool:
        return self.expires_at > now


Inbox = tuple[StoredMessage, ...]


@dataclass(frozen=True, slots=True)
class Added:
    """What ``add`` did."""

    inbox: Inbox
    message: StoredMessage  # as stored now (for a duplicate: the earlier copy, merged)
    duplicate: bool
    new_devices: tuple[str, ...]  # devices that had not been given this message before
    dropped: Inbox = ()  # oldest messages removed to keep the quota
    expired: Inbox = ()  # expired messages removed on the way


@dataclass(frozen=True, slots=True)
class Settled:
    """What ``settle`` did."""

    inbox: Inbox
    settled: bool  # the device had this message pending, and no longer has
    expired: Inbox = ()


def expire(inbox: Inbox, now: float) -> tuple[Inbox, Inbox]:
    """(live messages, expired ones)."""
    live = tuple(m for m in inbox if m.live(now))
    if len(live) == len(inbox):
        return inbox, ()
    return live, tuple(m for m in inbox if not m.live(now))


def add(inbox: Inbox, message: StoredMessage, now: float, max_per_user: int) -> Added:
    """Store ``message`` at the end of ``inbox`` (deduplicated, expired ones removed,
    oldest dropped beyond ``max_per_user``)."""
    if max_per_user < 1:
        raise ValueError(f"max_per_user must be at least 1, got {max_per_user}")
    inbox, expired = expire(inbox, now)
    for i, old in enumerate(inbox):
        if old.call_id == message.call_id and old.cseq == message.cseq:
            new = tuple(d for d in message.devices if d not in old.devices)
            merged = replace(old, devices=old.devices + new) if new else old
            inbox = (*inbox[:i], merged, *inbox[i + 1 :])
            return Added(inbox, merged, True, new, (), expired)
    inbox = (*inbox, message)
    over = len(inbox) - max_per_user
    dropped: Inbox = ()
    if over > 0:
        dropped, inbox = inbox[:over], inbox[over:]
    return Added(inbox, message, False, message.devices, dropped, expired)


def pending(inbox: Inbox, device: str, now: float) -> list[StoredMessage]:
    """The live messages ``device`` has still to receive, oldest first."""
    return [m for m in inbox if device in m.devices and m.live(now)]


def settle(inbox: Inbox, message_id: str, device: str, now: float) -> Settled:
    """``device`` is done with ``message_id`` (it accepted it, or refused it for good):
    take the device off the message; a message no device waits for any more is removed."""
    inbox, expired = expire(inbox, now)
    out: list[StoredMessage] = []
    settled = False
    for m in inbox:
        if m.id == message_id and device in m.devices:
            settled = True
            rest = tuple(d for d in m.devices if d != device)
            if rest:
                out.append(replace(m, devices=rest))
            continue
        out.append(m)
    return Settled(tuple(out), settled, expired)


def next_expiry(inbox: Inbox) -> float | None:
    """The earliest ``expires_at`` in ``inbox`` (None if empty): when a purge is due."""
    return min((m.expires_at for m in inbox), default=None)


def last_expiry(inbox: Inbox) -> float | None:
    """The latest ``expires_at`` (None if empty): how long the inbox must be kept."""
    return max((m.expires_at for m in inbox), default=None)


# -- delivering a stored message -------------------------------------------------------------

DELIVERED, REFUSED, RETRY = "delivered", "refused", "retry"


def delivery_result(status: int) -> str:
    """What a device's final answer to a stored MESSAGE means for its inbox (issue 13):
    2xx: delivered, remove it; 408 (or no answer at all, passed as 408), 5xx: transient,
    keep it for the next registration; any other 3xx/4xx/6xx: the device refuses it for
    good (RFC 3428 §7 leaves retrying to the sender, and the sender got its 202 long ago),
    so drop it for that device."""
    if 200 <= status < 300:
        return DELIVERED
    if status == 408 or 500 <= status < 600 or status < 200:
        return RETRY
    return REFUSED


def delivery_copy(stored: Request, contact: str, via: str, path: tuple[str, ...]) -> Request:
    """The stored MESSAGE as sent to a device that registered again: a new request from
    us (the sender's transaction ended with our 202), so its Via chain and Route set are
    ours alone and Max-Forwards starts afresh; From, To, Call-ID, CSeq, the content and
    every other header pass through unchanged (RFC 3428 §7: a proxy does not alter the
    body), so the app can drop a duplicate by Call-ID + CSeq."""
    headers = stored.headers.copy()
    for name in ("Via", "Route", "Record-Route", "Max-Forwards"):
        headers.remove(name)
    headers.prepend("Via", via)
    headers.add("Max-Forwards", "70")
    for hop in path:  # RFC 3327 §5.3: the Path the device registered with
        headers.add("Route", hop)
    out = Request(stored.method, stored.uri, headers, stored.body, stored.version)
    out.set_uri(contact)
    return out
