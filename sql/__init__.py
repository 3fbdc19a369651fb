"""Jinja-templated SELECT statements (package data only; Python owns DDL and rendering)."""
