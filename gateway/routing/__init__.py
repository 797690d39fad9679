"""How a request finds its pod: one lifecycle for every call (lifecycle), unary calls (unary), streams
and sequences (streams, sequences)."""
