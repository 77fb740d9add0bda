"""Activation checkpointing (rematerialization): recompute a function's intermediates in backward instead of storing them."""
