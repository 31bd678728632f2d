"""Dashboard tests (a package, so that its local fleet stops when these tests end)."""
