# The audit trail: `make bench-audit` times `galaxy audit` on a generated 1,000,000-event log
# against jq (figures and ratio printed); `make test-audit` runs its tests alone.
.PHONY: bench-audit test-audit

bench-audit: deps
	$(PY) bench/bench_audit.py

test-audit: deps
	$(PY) -m pytest $(PYTEST_ARGS) tests/runtime/test_audit_trail.py
