"""Command-line tools that turn the send log into reports: selectors, X-filters, operators.

See docs/logtools.md for the administrator's guide and the pipe format between the tools.
"""
