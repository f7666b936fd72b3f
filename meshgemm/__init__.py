"""meshgemm package."""
