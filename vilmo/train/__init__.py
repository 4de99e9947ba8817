"""Training pipelines (run by `vilmo train ...`)."""
