"""HTTP/2 for the gateway: the sans-IO protocol core (`h2`) and its asyncio adapter (`connection`)."""
