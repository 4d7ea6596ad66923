"""The session's own states and the moves between them, as data (the way
h11's ``_state.py`` keeps them): the session (client/session.py) checks every
move against :data:`TRANSITIONS`.

::

    idle --hello--> joining --joined--> joined --bye--> closing --goodbye--> closed
      ^                |                  |
      +----refused-----+                  +--silence, not_joined, shutdown--> reconnecting
                                                                                |
                       joined <------------every room joined again--------------+

Any state but closed may also end at once in closed (refused when resuming,
the front-end giving up).
"""

from __future__ import annotations

from enum import Enum

from protocol import ErrorCode, ProtocolError

__all__ = ["TRANSITIONS", "State", "check_move"]


class State(Enum):
    """Where a session is in its life."""

    IDLE = "idle"
    JOINING = "joining"
    JOINED = "joined"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


#: state -> the states it may move to.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.JOINING, State.CLOSED}),
    State.JOINING: frozenset(
        {State.JOINED, State.IDLE, State.RECONNECTING, State.CLOSING, State.CLOSED}
    ),
    State.JOINED: frozenset({State.RECONNECTING, State.CLOSING, State.CLOSED}),
    State.RECONNECTING: frozenset({State.JOINED, State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


def check_move(old: State, new: State) -> State:
    """``new``, if a session in ``old`` may move there.

    Raises ProtocolError (``not_joined``) for a move the table does not allow:
    an operation the session cannot do in its state."""
    if new not in TRANSITIONS[old]:
        raise ProtocolError(ErrorCode.NOT_JOINED, f"cannot go from {old.value} to {new.value}")
    return new
