"""The Triton pods the gateway forwards to: the connections to them (upstreams)."""
