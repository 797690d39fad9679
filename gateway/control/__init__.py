"""What is not on the data path, served by grpcio on a loopback port the front door relays to: the
fleet answering as one server (statistics summed, one repository index, consistent metadata), model
load and unload rolled out pod by pod, readiness and the gRPC health service."""
