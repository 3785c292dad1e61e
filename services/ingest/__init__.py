"""ingest: datasets from uploads and store prefixes, checked, profiled, versioned as Parquet."""
