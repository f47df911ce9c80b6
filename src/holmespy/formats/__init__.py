"""Formats: the profile data model and what it is written as (pprof, collapsed, speedscope)."""
