"""Tenants, users, keys, authentication (RBAC, limits, budgets and the ledger come later)."""
