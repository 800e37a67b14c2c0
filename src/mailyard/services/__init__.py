"""Supervision of a node's services: catalog, supervisord configuration, control, TLS, privileges."""
