"""Where clients connect: the listener and drain (frontdoor), one client connection and its limits
(client, limits)."""
