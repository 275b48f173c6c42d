"""The exercises' checks, by topic (`helpers.check` gathers them)."""
