"""The HTTP server's edge: request-head bounds, timeouts, connection caps and the drain."""
