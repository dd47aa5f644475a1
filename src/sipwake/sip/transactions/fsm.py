"""The four RFC 3261 §17 transaction state machines as data.

Each table maps ``(state, input) -> (new state, actions)`` and must give every pair of its
machine an outcome: ``IGNORE`` (stay, do nothing) is written out like any other, so reading
a table row by row answers "what happens if X arrives now" without reading code. The
driver in layer.py runs the actions in order; entering TERMINATED destroys the transaction
(§17.1.1.2: "MUST be destroyed the instant it enters the Terminated state").

RFC 6026 replaces the 2xx paths of both INVITE machines with an "Accepted" state: the
server transaction stays to absorb INVITE retransmissions and to pass a late ACK up
(§7.1, Timer L, §8.7); the client transaction stays to pass every 2xx (retransmissions and
other forks) up to the TU rather than letting them arrive as strays (§7.2, Timer M, §8.4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sipwake.sip.events import Dest
    from sipwake.sip.message import Request

# -- states -----------------------------------------------------------------------------
CALLING: Final = "calling"
TRYING: Final = "trying"
PROCEEDING: Final = "proceeding"
COMPLETED: Final = "completed"
CONFIRMED: Final = "confirmed"
ACCEPTED: Final = "accepted"
TERMINATED: Final = "terminated"

# -- inputs -----------------------------------------------------------------------------
START: Final = "start"  # the TU hands the request to a new client transaction
R1XX: Final = "recv_1xx"  # responses from the network (client side)
R2XX: Final = "recv_2xx"
R3_6: Final = "recv_3xx_6xx"
REQUEST: Final = "recv_request"  # a retransmission of the request (server side)
ACK: Final = "recv_ack"
SEND_1XX: Final = "send_1xx"  # responses from the TU (server side)
SEND_2XX: Final = "send_2xx"
SEND_3_6: Final = "send_3xx_6xx"
TIMER_A: Final = "timer_A"
TIMER_B: Final = "timer_B"
TIMER_D: Final = "timer_D"
TIMER_E: Final = "timer_E"
TIMER_F: Final = "timer_F"
TIMER_G: Final = "timer_G"
TIMER_H: Final = "timer_H"
TIMER_I: Final = "timer_I"
TIMER_J: Final = "timer_J"
TIMER_K: Final = "timer_K"
TIMER_L: Final = "timer_L"
TIMER_M: Final = "timer_M"

# -- actions ----------------------------------------------------------------------------
SEND_REQUEST: Final = "send_request"  # (re)transmit the request's bytes
SEND_ACK: Final = "send_ack"  # build the §17.1.1.3 ACK once, (re)transmit it
SEND_RESPONSE: Final = "send_response"  # transmit the TU's response, keep it for resending
FORWARD_RESPONSE: Final = "forward_response"  # transmit without keeping (late 2xx)
RESEND_RESPONSE: Final = "resend_response"  # retransmit the kept response, if any
PASS_UP: Final = "pass_up"  # give the message to the TU as an event
# Drop the request (and its bytes) once the client side has its final response: Completed
# only re-sends the ACK already built (§17.1.1.2), Accepted only passes 2xx up (RFC 6026
# §7.2), non-INVITE Completed only absorbs retransmissions (§17.1.2.2). Nothing of the
# parsed request then lives through Timers D/M/K (up to 64*T1): memory and, above all, the
# garbage collector's full passes stay small (a lingering parsed message is ~30 objects).
RELEASE: Final = "release"
TIMEOUT: Final = "timeout"  # TransactionTimeout event
STOP_TIMERS: Final = "stop_timers"  # cancel the retransmit and the lifetime timer
STOP_RETX: Final = "stop_retx"  # cancel the retransmit timer only
START_A: Final = "start_A"  # retransmit timers start at T1 (unreliable transports only)
START_E: Final = "start_E"
START_G: Final = "start_G"
BACKOFF: Final = "backoff"  # double the retransmit interval (E and G capped at T2), re-arm
RETX_T2: Final = "retx_T2"  # re-arm the retransmit timer at T2 (§17.1.2.2, Proceeding)
START_B: Final = "start_B"  # lifetime timers: one slot, starting one replaces the other
START_D: Final = "start_D"
START_F: Final = "start_F"
START_H: Final = "start_H"
START_I: Final = "start_I"
START_J: Final = "start_J"
START_K: Final = "start_K"
START_L: Final = "start_L"
START_M: Final = "start_M"

ACTIONS: Final = frozenset(
    {
        SEND_REQUEST,
        SEND_ACK,
        SEND_RESPONSE,
        FORWARD_RESPONSE,
        RESEND_RESPONSE,
        PASS_UP,
        RELEASE,
        TIMEOUT,
        STOP_TIMERS,
        STOP_RETX,
        START_A,
        START_E,
        START_G,
        BACKOFF,
        RETX_T2,
        START_B,
        START_D,
        START_F,
        START_H,
        START_I,
        START_J,
        START_K,
        START_L,
        START_M,
    }
)

Outcome = tuple[str, tuple[str, ...]]
Table = dict[tuple[str, str], Outcome]


class _Ignore:
    """Marker: stay in the current state, no action."""

    __slots__ = ()


IGNORE: Final = _Ignore()
Row = dict[str, "Outcome | _Ignore"]


def _table(rows: dict[str, Row]) -> Table:
    table: Table = {}
    for state, row in rows.items():
        for inp, outcome in row.items():
            table[state, inp] = (state, ()) if isinstance(outcome, _Ignore) else outcome
    return table


def _all_ignored(inputs: tuple[str, ...]) -> Row:
    return dict.fromkeys(inputs, IGNORE)


# -- INVITE client transaction (§17.1.1.2, Figure 5; RFC 6026 §8.4) ----------------------
CLIENT_INVITE_STATES: Final = (CALLING, PROCEEDING, COMPLETED, ACCEPTED, TERMINATED)
CLIENT_INVITE_INPUTS: Final = (START, R1XX, R2XX, R3_6, TIMER_A, TIMER_B, TIMER_D, TIMER_M)
CLIENT_INVITE: Final = _table(
    {
        CALLING: {
            START: (CALLING, (SEND_REQUEST, START_A, START_B)),
            # A provisional stops retransmissions; Timer B only counts in Calling, after that
            # the proxy's Timer C (§16.8) bounds the wait, so it is cancelled too.
            R1XX: (PROCEEDING, (STOP_TIMERS, PASS_UP)),
            R2XX: (ACCEPTED, (STOP_TIMERS, PASS_UP, RELEASE, START_M)),
            R3_6: (COMPLETED, (STOP_TIMERS, PASS_UP, SEND_ACK, RELEASE, START_D)),
            TIMER_A: (CALLING, (SEND_REQUEST, BACKOFF)),
            TIMER_B: (TERMINATED, (TIMEOUT,)),
            TIMER_D: IGNORE,
            TIMER_M: IGNORE,
        },
        PROCEEDING: {
            START: IGNORE,
            R1XX: (PROCEEDING, (PASS_UP,)),
            R2XX: (ACCEPTED, (PASS_UP, RELEASE, START_M)),
            R3_6: (COMPLETED, (PASS_UP, SEND_ACK, RELEASE, START_D)),
            TIMER_A: IGNORE,
            TIMER_B: IGNORE,
            TIMER_D: IGNORE,
            TIMER_M: IGNORE,
        },
        COMPLETED: {
            START: IGNORE,
            R1XX: IGNORE,
            # A 2xx after a non-2xx: a fork further down answered after its proxy sent the
            # non-2xx; every 2xx to INVITE goes up so the proxy can forward it (§16.7 step 5).
            R2XX: (COMPLETED, (PASS_UP,)),
            R3_6: (COMPLETED, (SEND_ACK,)),  # retransmitted final: re-send the same ACK
            TIMER_A: IGNORE,
            TIMER_B: IGNORE,
            TIMER_D: (TERMINATED, ()),
            TIMER_M: IGNORE,
        },
        ACCEPTED: {
            START: IGNORE,
            R1XX: IGNORE,
            R2XX: (ACCEPTED, (PASS_UP,)),  # RFC 6026 §7.2: every 2xx goes to the TU
            R3_6: IGNORE,
            TIMER_A: IGNORE,
            TIMER_B: IGNORE,
            TIMER_D: IGNORE,
            TIMER_M: (TERMINATED, ()),
        },
        TERMINATED: _all_ignored(CLIENT_INVITE_INPUTS),
    }
)

# -- non-INVITE client transaction (§17.1.2.2, Figure 6) ---------------------------------
CLIENT_NON_INVITE_STATES: Final = (TRYING, PROCEEDING, COMPLETED, TERMINATED)
CLIENT_NON_INVITE_INPUTS: Final = (START, R1XX, R2XX, R3_6, TIMER_E, TIMER_F, TIMER_K)
_CN_FINAL: Final = (COMPLETED, (STOP_TIMERS, PASS_UP, RELEASE, START_K))
CLIENT_NON_INVITE: Final = _table(
    {
        TRYING: {
            START: (TRYING, (SEND_REQUEST, START_E, START_F)),
            R1XX: (PROCEEDING, (PASS_UP,)),  # Timer E keeps running, re-armed at T2 next
            R2XX: _CN_FINAL,
            R3_6: _CN_FINAL,
            TIMER_E: (TRYING, (SEND_REQUEST, BACKOFF)),
            TIMER_F: (TERMINATED, (TIMEOUT,)),
            TIMER_K: IGNORE,
        },
        PROCEEDING: {
            START: IGNORE,
            R1XX: (PROCEEDING, (PASS_UP,)),
            R2XX: _CN_FINAL,
            R3_6: _CN_FINAL,
            TIMER_E: (PROCEEDING, (SEND_REQUEST, RETX_T2)),
            TIMER_F: (TERMINATED, (TIMEOUT,)),
            TIMER_K: IGNORE,
        },
        COMPLETED: {
            START: IGNORE,
            R1XX: IGNORE,  # Completed absorbs response retransmissions
            R2XX: IGNORE,
            R3_6: IGNORE,
            TIMER_E: IGNORE,
            TIMER_F: IGNORE,
            TIMER_K: (TERMINATED, ()),
        },
        TERMINATED: _all_ignored(CLIENT_NON_INVITE_INPUTS),
    }
)

# -- INVITE server transaction (§17.2.1, Figure 7; RFC 6026 §7.1, §8.7) -------------------
SERVER_INVITE_STATES: Final = (PROCEEDING, COMPLETED, CONFIRMED, ACCEPTED, TERMINATED)
SERVER_INVITE_INPUTS: Final = (
    REQUEST,
    ACK,
    SEND_1XX,
    SEND_2XX,
    SEND_3_6,
    TIMER_G,
    TIMER_H,
    TIMER_I,
    TIMER_L,
)
SERVER_INVITE: Final = _table(
    {
        PROCEEDING: {
            REQUEST: (PROCEEDING, (RESEND_RESPONSE,)),  # the last provisional, if any
            ACK: IGNORE,  # nothing to acknowledge yet
            SEND_1XX: (PROCEEDING, (SEND_RESPONSE,)),
            SEND_2XX: (ACCEPTED, (SEND_RESPONSE, START_L)),
            SEND_3_6: (COMPLETED, (SEND_RESPONSE, START_G, START_H)),
            TIMER_G: IGNORE,
            TIMER_H: IGNORE,
            TIMER_I: IGNORE,
            TIMER_L: IGNORE,
        },
        COMPLETED: {
            REQUEST: (COMPLETED, (RESEND_RESPONSE,)),
            ACK: (CONFIRMED, (STOP_RETX, START_I)),  # the ACK is absorbed, not passed up
            SEND_1XX: IGNORE,
            # A proxy MUST forward a 2xx even after a final went out (§16.7 step 5).
            SEND_2XX: (COMPLETED, (FORWARD_RESPONSE,)),
            SEND_3_6: IGNORE,  # only one final response per transaction
            TIMER_G: (COMPLETED, (RESEND_RESPONSE, BACKOFF)),
            TIMER_H: (TERMINATED, (TIMEOUT,)),
            TIMER_I: IGNORE,
            TIMER_L: IGNORE,
        },
        CONFIRMED: {
            REQUEST: IGNORE,  # absorbs stray retransmissions until Timer I
            ACK: IGNORE,
            SEND_1XX: IGNORE,
            SEND_2XX: (CONFIRMED, (FORWARD_RESPONSE,)),
            SEND_3_6: IGNORE,
            TIMER_G: IGNORE,
            TIMER_H: IGNORE,
            TIMER_I: (TERMINATED, ()),
            TIMER_L: IGNORE,
        },
        ACCEPTED: {
            REQUEST: IGNORE,  # RFC 6026 §7.1: INVITE retransmissions are absorbed
            ACK: (ACCEPTED, (PASS_UP,)),  # RFC 6026 §7.1: an ACK here goes to the TU
            SEND_1XX: IGNORE,
            SEND_2XX: (ACCEPTED, (FORWARD_RESPONSE,)),  # 2xx retransmissions, other forks
            SEND_3_6: IGNORE,
            TIMER_G: IGNORE,
            TIMER_H: IGNORE,
            TIMER_I: IGNORE,
            TIMER_L: (TERMINATED, ()),
        },
        TERMINATED: _all_ignored(SERVER_INVITE_INPUTS),
    }
)

# -- non-INVITE server transaction (§17.2.2, Figure 8) -----------------------------------
SERVER_NON_INVITE_STATES: Final = (TRYING, PROCEEDING, COMPLETED, TERMINATED)
SERVER_NON_INVITE_INPUTS: Final = (REQUEST, SEND_1XX, SEND_2XX, SEND_3_6, TIMER_J)
_SN_FINAL: Final = (COMPLETED, (SEND_RESPONSE, START_J))
SERVER_NON_INVITE: Final = _table(
    {
        TRYING: {
            REQUEST: IGNORE,  # §17.2.2: retransmissions in Trying are discarded
            SEND_1XX: (PROCEEDING, (SEND_RESPONSE,)),
            SEND_2XX: _SN_FINAL,
            SEND_3_6: _SN_FINAL,
            TIMER_J: IGNORE,
        },
        PROCEEDING: {
            REQUEST: (PROCEEDING, (RESEND_RESPONSE,)),
            SEND_1XX: (PROCEEDING, (SEND_RESPONSE,)),
            SEND_2XX: _SN_FINAL,
            SEND_3_6: _SN_FINAL,
            TIMER_J: IGNORE,
        },
        COMPLETED: {
            REQUEST: (COMPLETED, (RESEND_RESPONSE,)),
            SEND_1XX: IGNORE,  # later responses from the TU are discarded
            SEND_2XX: IGNORE,
            SEND_3_6: IGNORE,
            TIMER_J: (TERMINATED, ()),
        },
        TERMINATED: _all_ignored(SERVER_NON_INVITE_INPUTS),
    }
)

# name -> (table, states, inputs); the initial state is the first one listed.
MACHINES: Final[dict[str, tuple[Table, tuple[str, ...], tuple[str, ...]]]] = {
    "client_invite": (CLIENT_INVITE, CLIENT_INVITE_STATES, CLIENT_INVITE_INPUTS),
    "client_non_invite": (CLIENT_NON_INVITE, CLIENT_NON_INVITE_STATES, CLIENT_NON_INVITE_INPUTS),
    "server_invite": (SERVER_INVITE, SERVER_INVITE_STATES, SERVER_INVITE_INPUTS),
    "server_non_invite": (SERVER_NON_INVITE, SERVER_NON_INVITE_STATES, SERVER_NON_INVITE_INPUTS),
}


def response_input(status: int, *, sending: bool) -> str:
    """Classify a response status into a table input."""
    if status < 200:
        return SEND_1XX if sending else R1XX
    if status < 300:
        return SEND_2XX if sending else R2XX
    return SEND_3_6 if sending else R3_6


class Transaction:
    """What every transaction carries while its table drives it. ``dest`` is the next hop
    (client) or the flow the request came on (server); timers live in the layer's heap under
    ``retx_key`` (A/E/G) and ``life_key`` (B/D/F/H/I/J/K/L/M: one at a time)."""

    __slots__ = (
        "dest",
        "id",
        "life_input",
        "life_key",
        "reliable",
        "request",
        "retx_cap",
        "retx_input",
        "retx_interval",
        "retx_key",
        "state",
        "table",
    )

    def __init__(self, txn_id: str, table: Table, state: str, request: Request, dest: Dest) -> None:
        self.id = txn_id
        self.table = table
        self.state = state
        self.request = request
        self.dest = dest
        self.reliable = dest.reliable
        self.retx_key = (txn_id, 0)
        self.life_key = (txn_id, 1)
        self.retx_input = ""  # the TIMER_* input the retransmit timer feeds when it fires
        self.retx_interval = 0.0
        self.retx_cap = 0.0
        self.life_input = ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.request.method} {self.state}>"
