"""Great Expectations suites as code: one module per validated asset, each with build_suite()."""
