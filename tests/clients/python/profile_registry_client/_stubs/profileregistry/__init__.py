"""Stubs of the proto package profileregistry."""
