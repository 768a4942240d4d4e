"""gRPC stubs generated from proto/ (see generate_stubs.py); not a public API."""
