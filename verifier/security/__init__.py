"""Who may do what, and the proof of what was done: certificates, roles, the audit chain."""
