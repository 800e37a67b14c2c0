"""Content filters: SpamAssassin (spamd) and ClamAV (clamd, freshclam): configs and clients."""
