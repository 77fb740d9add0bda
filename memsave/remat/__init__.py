"""Activation checkpointing (rematerialization): recompute intermediates in backward
instead of storing them."""
