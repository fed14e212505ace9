"""Generated gRPC/protobuf code for the verifier.v1 API; regenerate with `make proto`."""
