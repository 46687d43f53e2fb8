"""Acme's workflows, brought to relaycast with ``RELAYCAST_WORKFLOWS=acme.jobs``."""
