"""Storage: where finished event bundles go (the local folder, S3-compatible stores)."""
