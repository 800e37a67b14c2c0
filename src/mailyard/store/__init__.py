"""The store: one database for domains, mailboxes, aliases, settings and admins."""
