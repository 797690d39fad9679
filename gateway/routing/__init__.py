"""How a request finds its pod: one lifecycle for every call (lifecycle), the pick (policy), unary calls
(unary), streams (streams, stream_upstreams) and sequences (sequences)."""
