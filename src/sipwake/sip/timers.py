"""Transaction timer values (RFC 3261 §17 and Table 4; RFC 6026 §8.4 and
§8.7 add Timers M and L).

Pure values: the transaction layer asks for a duration and schedules it in its own deadline
heap. Durations that depend on the transport take ``reliable``; on a reliable transport
there are no retransmissions, so the "absorb retransmissions" waits (D, I, J, K) are zero.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1/T2/T4 and the timers derived from them, in seconds."""

    t1: float = 0.5  # RTT estimate (§17.1.1.1)
    t2: float = 4.0  # cap on non-INVITE request and INVITE response retransmit intervals
    t4: float = 5.0  # maximum time a message stays in the network
    timer_c: float = 180.0  # proxy INVITE timer, > 3 min (§16.6 step 11); used by the proxy
    d_unreliable: float = 32.0  # Timer D: "at least 32 seconds" for unreliable (§17.1.1.2)

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError("timers need 0 < T1 <= T2")
        if self.t4 <= 0 or self.timer_c <= 0 or self.d_unreliable < 0:
            raise ValueError("T4 and Timer C must be positive, Timer D not negative")

    # -- transaction timeouts: the same on every transport (§17.1.1.2, §17.1.2.2, §17.2.1)
    @property
    def b(self) -> float:
        """INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def f(self) -> float:
        """Non-INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def h(self) -> float:
        """Wait for ACK after a non-2xx final response."""
        return 64 * self.t1

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name for it
        """RFC 6026 §8.7: how long the INVITE server transaction stays Accepted after a 2xx."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """RFC 6026 §8.4: how long the INVITE client transaction stays Accepted after a 2xx."""
        return 64 * self.t1

    # -- waits that only absorb retransmissions: zero on reliable transports --------------
    def d(self, reliable: bool) -> float:
        """Wait for response retransmissions after ACKing a non-2xx (§17.1.1.2)."""
        return 0.0 if reliable else self.d_unreliable

    def i(self, reliable: bool) -> float:
        """Wait for ACK retransmissions in Confirmed (§17.2.1)."""
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool) -> float:
        """Wait for non-INVITE request retransmissions in Completed (§17.2.2)."""
        return 0.0 if reliable else 64 * self.t1

    def k(self, reliable: bool) -> float:
        """Wait for response retransmissions in non-INVITE Completed (§17.1.2.2)."""
        return 0.0 if reliable else self.t4


DEFAULT_TIMERS = TimerConfig()
