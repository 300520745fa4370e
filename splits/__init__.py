"""The split registry (imported as ``fsarbench_splits``): per dataset and variant the source,
md5, expected counts and parser of the published few-shot split lists."""
