"""Database layer: engines, table definitions and the dialect-specific claim statements."""
