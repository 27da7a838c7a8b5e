"""Asterisk REST Interface: answer callers in a Stasis app, bridge them to the bot, transfer."""

from voxpipe.ari.client import AriClient, AriError
from voxpipe.ari.controller import AriCall, AriController

__all__ = ["AriCall", "AriClient", "AriController", "AriError"]
