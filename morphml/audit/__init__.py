"""Audits: does a run directory still reproduce from its database, config and software?"""

from morphml.audit._audit import AuditResult, Check, audit_run

__all__ = ["AuditResult", "Check", "audit_run"]
