"""Declarative rules applied to entity data: masking policies per role."""
