"""Conversation state: the call state machine and the tracker that drives it from frames."""

from voxpipe.conversation.state import CallState, can_move, move, state_of

__all__ = ["CallState", "can_move", "move", "state_of"]
