"""Generated protobuf and gRPC modules of the echogate.v1 API (built from proto/, git-ignored)."""
