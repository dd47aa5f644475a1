"""The decline link of a call push (policy/decline.py makes and checks its token): an app
that shows the incoming call declines it without registering, by POSTing the link
(api/routes.py). Here the token is checked, a replay refused, and the decline applied to
the call held here or passed on to the node that holds it."""

from __future__ import annotations

from collections.abc import Callable

from sipwake.app.calls import Calls
from sipwake.policy import decline as tokens

# Tokens already used, remembered until they expire (at most this many).
USED_TOKENS = 100_000


class Declines:
    def __init__(self, calls: Calls, secret: bytes, wall: Callable[[], float]) -> None:
        self.calls = calls
        self.secret = secret
        self.wall = wall
        self.used = tokens.UsedTokens(USED_TOKENS)

    def decline(
        self, call_id: str, token: str, reason: str, *, forwarded: bool = False
    ) -> tokens.DeclineResult:
        """``reason`` "busy" answers the caller 486, anything else 603. ``forwarded``:
        another node received the link and passed it on over the cluster bus."""
        wall = self.wall()
        try:
            claim = tokens.check_token(self.secret, token, call_id, wall)
        except tokens.DeclineError as exc:
            return tokens.DeclineResult(exc.status, exc.reason)
        if not self.used.use(claim, wall):
            return tokens.DeclineResult(403, tokens.REPLAYED)
        calls = self.calls
        if not calls.holds(call_id) and not forwarded and calls.bus.shared:
            # Held on another node (or worker): the token is good, pass it on; that node
            # checks it again and applies it once.
            calls.bus.forward_decline(call_id, token, reason)
            return tokens.DeclineResult(202, "forwarded to the node holding the call")
        if not calls.declined(call_id, claim.device, 486 if reason == "busy" else 603):
            return tokens.DeclineResult(404, "no such call waiting for this device")
        return tokens.DeclineResult(200, "declined")
