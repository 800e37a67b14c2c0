"""The web panel of a node: the guide's Mail Server pages and the JSON API under /api/v1."""
