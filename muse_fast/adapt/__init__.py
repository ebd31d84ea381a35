"""Adapt the network to a user's tissue and class set from QuPath annotations (``muse-fast adapt``)."""
