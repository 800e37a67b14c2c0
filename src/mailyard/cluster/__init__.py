"""A cluster of nodes on one PostgreSQL store: membership, cascaded changes, the node agent."""
