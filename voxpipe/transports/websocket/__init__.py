"""The call API: a gateway or a browser streams a call over a WebSocket on the bot's HTTP server."""
