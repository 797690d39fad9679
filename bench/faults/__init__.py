"""Fault runs (issue 18): real Triton servers and the gateway under open-loop load while one fault is
injected at a fixed point; `python -m bench.faults.run` runs them and prints the table."""

import os

# A fault run starts servers (fork, then exec) while its own load has gRPC calls in flight on other
# threads; grpcio's fork handlers then skip and the forked child can crash in grpc's event engine
# before it reaches exec (seen: a restarted Triton server exiting with -11). The children here only
# exec, so they need no fork support. Read when grpc is first imported, hence here.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
