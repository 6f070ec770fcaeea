"""Access control: API keys scoped by role and region, checked on every request."""
