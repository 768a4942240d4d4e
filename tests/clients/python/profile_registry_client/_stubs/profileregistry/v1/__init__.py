"""Stubs of the proto package profileregistry.v1."""
