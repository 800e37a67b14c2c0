"""mailyard: a mail node for hosting providers (MTA, queue, MDAs, filters, panel, log tools)."""

__version__ = "0.1.0"
