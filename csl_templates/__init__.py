"""csl_templates package."""
