"""The gRPC layer: a thin shell that converts protobuf to plain types and calls the core."""
