"""Asterisk's WebSocket channel driver (chan_websocket): ``transport: {asterisk_websocket: {}}``."""
