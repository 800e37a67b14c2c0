"""Content filters: SpamAssassin (spamd) and ClamAV (clamd, freshclam), their configs and clients."""
