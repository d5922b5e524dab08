"""Accounts, passwords, browser sessions and roles."""
